"""Common test: every declared constraint rejects values generated from its declaration."""

import numpy as np
import pytest

import normlab
from normlab import initializers, layers, losses, regularizers
from normlab._validation import InvalidParameterError, Interval, Options, _as_constraint

# minimal valid constructor arguments for classes with required ones
REQUIRED = {
    "Dense": {"units": 2},
    "Activation": {"activation": "relu"},
    "WeightNormalization": {"layer": layers.Dense(2)},
    "Dropout": {"rate": 0.5},
    "SpatialDropout2D": {"rate": 0.5},
    "SpatialDropout1D": {"rate": 0.5},
    "SpatialDropout3D": {"rate": 0.5},
    "AlphaDropout": {"rate": 0.5},
    "GaussianNoise": {"stddev": 0.1},
    "GaussianDropout": {"rate": 0.5},
    "NoisyDense": {"units": 2},
    "Rescaling": {"scale": 1.0},
    "RandomRotation": {"factor": 0.1},
    "RandomTranslation": {"height_factor": 0.1, "width_factor": 0.1},
    "RandomZoom": {"height_factor": 0.1},
    "Conv1D": {"filters": 2, "kernel_size": 3},
    "Conv2D": {"filters": 2, "kernel_size": 3},
    "Reshape": {"target_shape": (4,)},
    "NormPropDense": {"units": 2},
    "Dot": {"axes": -1},
    "Permute": {"dims": (2, 1)},
    "RepeatVector": {"n": 2},
}


def _classes():
    out = []
    for reg in (layers.registry, initializers.registry, regularizers.registry):
        for name in sorted(set(reg._classes)):
            cls = reg._classes[name]
            if getattr(cls, "_param_constraints", None):
                out.append(cls)
    return out


def _cases():
    for cls in _classes():
        for pname, allowed in cls._param_constraints.items():
            cs = [_as_constraint(c) for c in allowed]
            for bad in [v for c in cs for v in c.invalid_examples()]:
                if not any(c.is_satisfied_by(bad) for c in cs):
                    yield pytest.param(cls, pname, bad, id=f"{cls.__name__}-{pname}-{bad!r}")


@pytest.mark.parametrize("cls,pname,bad", list(_cases()))
def test_declared_constraints_reject_invalid_values(cls, pname, bad):
    kwargs = dict(REQUIRED.get(cls.__name__, {}))
    kwargs[pname] = bad
    with pytest.raises(InvalidParameterError) as e:
        cls(**kwargs)
    msg = str(e.value)
    assert msg.startswith(f"The {pname!r} parameter of {cls.__name__} must be ")
    assert msg.endswith(f"Got {bad!r} instead.")


def test_message_template():
    with pytest.raises(InvalidParameterError) as e:
        normlab.layers.BatchNormalization(momentum=1.5)
    assert str(e.value) == (
        "The 'momentum' parameter of BatchNormalization must be a float in the range [0, 1]. Got 1.5 instead."
    )
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)


def test_interval_semantics():
    c = Interval(float, 0, 1, closed="left")
    assert c.is_satisfied_by(0) and c.is_satisfied_by(0.5) and not c.is_satisfied_by(1.0)
    assert not c.is_satisfied_by(True) and not c.is_satisfied_by(np.nan)
    assert Options(("a", "b")).is_satisfied_by("a") and not Options(("a",)).is_satisfied_by(["a"])


def test_loss_constraints():
    with pytest.raises(InvalidParameterError, match="'from_logits'"):
        losses.BinaryCrossentropy(from_logits="yes")
