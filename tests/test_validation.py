"""Common test: every declared constraint rejects values generated from its declaration."""

import numpy as np
import pytest

import normlab
from normlab import initializers, layers, losses, regularizers
from normlab._validation import InvalidParameterError, Interval, Options, _as_constraint, _keras_sentence

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
    keras = _keras_sentence(cls, pname, bad)  # Keras's own wording, second, where it has one
    assert msg.endswith(f"Got {bad!r} instead." + ("" if keras is None else f" {keras}"))


def test_message_template():
    with pytest.raises(InvalidParameterError) as e:
        normlab.layers.BatchNormalization(momentum=1.5)
    assert str(e.value) == (
        "The 'momentum' parameter of BatchNormalization must be a float in the range [0, 1]. Got 1.5 instead."
    )
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)


def test_keras_sentence_follows_the_template():
    from normlab import metrics, optimizers
    with pytest.raises(InvalidParameterError) as e:
        optimizers.SGD(momentum=2.0)
    assert str(e.value) == ("The 'momentum' parameter of SGD must be a float in the range [0, 1]. Got 2.0 instead. "
                            "`momentum` must be a float between [0, 1].")
    with pytest.raises(ValueError, match=r"FalsePositives must be .* Got \[-1, 0.5, 2\] instead\. "
                                         r"Threshold values must be in \[0, 1\]\. Received: \[-1, 2\]$"):
        metrics.FalsePositives(thresholds=[-1, 0.5, 2])
    # where Keras would not complain (it accepts 0 accumulation steps), normlab's sentence stands alone
    with pytest.raises(InvalidParameterError) as e:
        optimizers.SGD(gradient_accumulation_steps=0)
    assert str(e.value).endswith("Got 0 instead.")
    # a value Keras's own check cannot compare: no Keras sentence, and no error from the hook itself
    with pytest.raises(InvalidParameterError) as e:
        optimizers.Lion(beta_1="high")
    assert str(e.value).endswith("Got 'high' instead.")


def test_keras_messages_name_declared_parameters():
    from normlab import losses, metrics
    from normlab.optim.base import registry as optimizers
    for reg in (layers.registry, initializers.registry, regularizers.registry, losses.registry, metrics.registry,
                optimizers):
        for cls in set(reg._classes.values()):
            # a subclass (GlorotUniform of VarianceScaling) may inherit sentences for arguments it does not take
            declared = set().union(*(getattr(c, "_param_constraints", {}) for c in cls.__mro__))
            extra = set(getattr(cls, "_keras_messages", {})) - declared
            assert not extra, f"{cls.__name__}: Keras sentences for undeclared parameters {sorted(extra)}"


def test_interval_semantics():
    c = Interval(float, 0, 1, closed="left")
    assert c.is_satisfied_by(0) and c.is_satisfied_by(0.5) and not c.is_satisfied_by(1.0)
    assert not c.is_satisfied_by(True) and not c.is_satisfied_by(np.nan)
    assert Options(("a", "b")).is_satisfied_by("a") and not Options(("a",)).is_satisfied_by(["a"])


def test_loss_constraints():
    with pytest.raises(InvalidParameterError, match="'from_logits'"):
        losses.BinaryCrossentropy(from_logits="yes")
