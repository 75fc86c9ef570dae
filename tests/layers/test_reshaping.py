"""Flatten and Reshape: values, gradients, shapes, errors, config."""

import json

import numpy as np
import pytest

from normlab._validation import InvalidParameterError, _as_constraint
from normlab.layers import Flatten, Reshape, deserialize, serialize
from normlab.testing import check_layer_gradients


def test_flatten_is_the_channels_last_c_order(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = Flatten()
    y = layer(x, training=True)
    assert y.shape == (2, 60)
    np.testing.assert_array_equal(y[1], x[1].ravel())
    # Keras channels-last order: the channel index runs fastest
    assert y[0, 1] == x[0, 0, 0, 1] and y[0, 5] == x[0, 0, 1, 0]
    np.testing.assert_array_equal(layer.backward(y), x)
    assert check_layer_gradients(Flatten(), x)["x"] < 1e-6


def test_flatten_matches_torch_after_layout_conversion(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    nchw = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    # torch flattens NCHW; converting back to NHWC first gives Keras' order
    ref = torch.flatten(nchw.permute(0, 2, 3, 1), 1).numpy()
    np.testing.assert_array_equal(Flatten()(x), ref)


def test_flatten_of_a_batch_of_scalars():
    assert Flatten()(np.arange(3.0)).shape == (3, 1)
    assert Flatten().compute_output_shape((None, 4, None)) == (None, None)


@pytest.mark.parametrize("target,expected", [((6, 2), (6, 2)), ((-1, 3), (4, 3)), ((2, -1, 3), (2, 2, 3)), ([12], (12,))])
def test_reshape(target, expected, rng):
    x = rng.standard_normal((2, 3, 4))
    layer = Reshape(target)
    y = layer(x, training=True)
    assert y.shape == (2,) + expected == layer.compute_output_shape((2, 3, 4))
    np.testing.assert_array_equal(y.reshape(x.shape), x)
    assert layer.compute_output_shape((None, 3, 4)) == (None,) + expected
    assert check_layer_gradients(Reshape(target), x)["x"] < 1e-6


def test_reshape_open_symbolic_sizes():
    assert Reshape((-1, 2)).compute_output_shape((None, None, 4)) == (None, None, 2)


def test_reshape_incompatible_sizes_are_named(rng):
    with pytest.raises(ValueError, match=r"'rs' \(Reshape\) cannot reshape an input of shape \(2, 3, 4\) \(12 values per sample\) to target_shape \(5, -1\)"):
        Reshape((5, -1), name="rs")(rng.standard_normal((2, 3, 4)))
    layer = Reshape((3, 4))
    layer(rng.standard_normal((2, 12)))
    with pytest.raises(ValueError, match="13 values per sample"):
        layer(rng.standard_normal((2, 13)))


def test_backward_needs_a_training_forward():
    layer = Flatten()
    layer(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((2, 3)))


def _invalid_cases():
    for cls, required in ((Reshape, {"target_shape": (2, 3)}), (Flatten, {})):
        for pname, allowed in cls._param_constraints.items():
            cs = [_as_constraint(c) for c in allowed]
            for bad in [v for c in cs for v in c.invalid_examples()]:
                if not any(c.is_satisfied_by(bad) for c in cs):
                    yield pytest.param(cls, required, pname, bad, id=f"{cls.__name__}-{pname}-{bad!r}")


@pytest.mark.parametrize("cls,required,pname,bad", list(_invalid_cases()))
def test_invalid_hyperparameters_rejected_at_construction(cls, required, pname, bad):
    with pytest.raises(InvalidParameterError) as e:
        cls(**dict(required, **{pname: bad}))
    msg = str(e.value)
    assert msg.startswith(f"The {pname!r} parameter of {cls.__name__} must be ") and msg.endswith(f"Got {bad!r} instead.")


@pytest.mark.parametrize("layer", [Flatten(name="f"), Reshape((-1, 4), dtype="float64"), Flatten(data_format="channels_last")])
def test_config_round_trip_through_json(layer):
    clone = deserialize(json.loads(json.dumps(serialize(layer))))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
