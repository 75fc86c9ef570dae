"""Pooling layers: central differences, PyTorch reference, ties, errors, config."""

import json

import numpy as np
import pytest

from normlab._validation import InvalidParameterError, _as_constraint
from normlab.kernels import pooling as K
from normlab.layers import (
    AveragePooling1D,
    AveragePooling2D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    MaxPooling1D,
    MaxPooling2D,
    deserialize,
    serialize,
)
from normlab.testing import check_layer_gradients

TOL = 1e-6

# every test runs on the fused numba kernels and on the NumPy kernels
pytestmark = pytest.mark.usefixtures("kernel_path")
POOL_CLASSES = (MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D)
GLOBAL_CLASSES = (GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D)


def distinct(rng, shape):
    """Distinct values spaced 0.1 apart (far more than the 1e-6 step): no max ties."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) / 10.0


# ------------------------------------------------------------------ central differences
POOL_GRID_2D = [
    ((2, 2), None, "valid"),
    ((2, 2), None, "same"),
    ((3, 3), (2, 2), "same"),  # overlapping windows
    ((3, 2), (1, 2), "valid"),
    ((2, 3), 1, "same"),  # even window, stride 1: asymmetric padding
    ((3, 3), (3, 2), "valid"),
]


@pytest.mark.parametrize("cls", [MaxPooling2D, AveragePooling2D])
@pytest.mark.parametrize("pool_size,strides,padding", POOL_GRID_2D)
@pytest.mark.parametrize("hw", [(7, 8), (6, 6)])
def test_pool2d_gradients_float64(cls, pool_size, strides, padding, hw, rng):
    x = distinct(rng, (2,) + hw + (3,))
    errs = check_layer_gradients(cls(pool_size, strides, padding), x)
    assert errs["x"] < TOL, errs


@pytest.mark.parametrize("cls", [MaxPooling1D, AveragePooling1D])
@pytest.mark.parametrize("pool_size,strides,padding", [(2, None, "valid"), (3, 2, "same"), (2, 1, "same"), (3, 3, "valid")])
@pytest.mark.parametrize("length", [7, 8])
def test_pool1d_gradients_float64(cls, pool_size, strides, padding, length, rng):
    x = distinct(rng, (2, length, 3))
    errs = check_layer_gradients(cls(pool_size, strides, padding), x)
    assert errs["x"] < TOL, errs


@pytest.mark.parametrize("cls", GLOBAL_CLASSES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pool_gradients_float64(cls, keepdims, rng):
    shape = (3, 5, 4) if cls.rank == 1 else (3, 4, 5, 2)
    layer = cls(keepdims=keepdims)
    x = distinct(rng, shape)
    y = layer(x)
    expected = (shape[0],) + ((1,) * cls.rank if keepdims else ()) + (shape[-1],)
    assert y.shape == expected == layer.compute_output_shape(shape)
    assert check_layer_gradients(layer, x)["x"] < TOL


# ------------------------------------------------------------------ reference values
def test_average_same_padding_does_not_count_the_padding():
    x = np.arange(1.0, 6.0).reshape(1, 5, 1)  # 1 2 3 4 5
    # pool 2, stride 2, "same": out = 3 windows, pad total 1 at the end: [1 2] [3 4] [5 pad]
    y = AveragePooling1D(2, padding="same")(x)
    np.testing.assert_allclose(y[0, :, 0], [1.5, 3.5, 5.0])
    y = MaxPooling1D(2, padding="same")(-x)
    np.testing.assert_allclose(y[0, :, 0], [-1.0, -3.0, -5.0])


def test_max_pool_ties_send_the_gradient_to_the_first_maximum():
    x = np.zeros((1, 4, 4, 1))
    layer = MaxPooling2D()
    layer(x, training=True)
    dx = layer.backward(np.ones((1, 2, 2, 1)))
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)
    # overlapping windows: each window's first maximal tap, summed
    layer = MaxPooling1D(3, strides=1)
    layer(np.array([[[1.0], [2.0], [2.0], [0.0]]]), training=True)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 2, 1)))[0, :, 0], [0, 2, 0, 0])


# ------------------------------------------------------------------ PyTorch reference
def _torch_pool2d(torch, kind, x, pool_size, strides, pads, dy):
    """torch on NCHW with explicit (possibly asymmetric) padding via F.pad.

    max: pad with -inf; average: sum over the zero-padded input divided by the
    number of real elements (the pooled ones-mask), which is TF's rule.
    """
    F = torch.nn.functional
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)  # NHWC -> NCHW
    (pt, pb), (pl, pr) = pads
    if kind == "max":
        y = F.max_pool2d(F.pad(xt, (pl, pr, pt, pb), value=float("-inf")), pool_size, strides)
    else:
        ones = torch.ones((1, 1) + tuple(xt.shape[2:]), dtype=xt.dtype)
        y = F.avg_pool2d(F.pad(xt, (pl, pr, pt, pb)), pool_size, strides) / F.avg_pool2d(
            F.pad(ones, (pl, pr, pt, pb)), pool_size, strides
        )
    y.backward(torch.tensor(dy.transpose(0, 3, 1, 2).copy()))
    return y.detach().numpy().transpose(0, 2, 3, 1), xt.grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("hw,pool_size,strides,padding", [
    ((8, 8), (2, 2), None, "valid"),
    ((9, 7), (2, 2), None, "same"),
    ((9, 10), (3, 3), (2, 2), "same"),
    ((9, 10), (3, 2), (1, 2), "valid"),
    ((8, 9), (2, 3), (1, 1), "same"),
])
def test_pool2d_matches_torch_float32(kind, hw, pool_size, strides, padding, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2,) + hw + (3,)).astype(np.float32)
    layer = (MaxPooling2D if kind == "max" else AveragePooling2D)(pool_size, strides, padding)
    y = layer(x, training=True)
    assert y.dtype == np.float32
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    pads = layer._cache.pool.geom.pads
    ry, rdx = _torch_pool2d(torch, kind, x, layer.pool_size, layer.strides, pads, dy)
    np.testing.assert_allclose(y, ry, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, rdx, rtol=1e-6, atol=1e-6)


def test_symmetric_same_average_matches_torch_count_include_pad_false(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 7, 7, 3)).astype(np.float32)
    y = AveragePooling2D(3, strides=1, padding="same")(x)
    ref = torch.nn.functional.avg_pool2d(torch.tensor(x.transpose(0, 3, 1, 2).copy()), 3, 1, padding=1,
                                         count_include_pad=False)
    np.testing.assert_allclose(y, ref.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def test_max_pool_ties_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.integers(0, 2, size=(2, 6, 6, 2)).astype(np.float32)  # many ties
    layer = MaxPooling2D(3, strides=1)
    y = layer(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    _, rdx = _torch_pool2d(torch, "max", x, (3, 3), (1, 1), ((0, 0), (0, 0)), dy)
    np.testing.assert_allclose(layer.backward(dy), rdx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("pool_size,strides", [(2, None), (3, 2)])
def test_pool1d_matches_torch_float32(kind, pool_size, strides, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 11, 3)).astype(np.float32)
    layer = (MaxPooling1D if kind == "max" else AveragePooling1D)(pool_size, strides)
    y = layer(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    xt = torch.tensor(x.transpose(0, 2, 1).copy(), requires_grad=True)  # NLC -> NCL
    pool = F.max_pool1d if kind == "max" else F.avg_pool1d
    ry = pool(xt, pool_size, strides or pool_size)
    ry.backward(torch.tensor(dy.transpose(0, 2, 1).copy()))
    np.testing.assert_allclose(y, ry.detach().numpy().transpose(0, 2, 1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy().transpose(0, 2, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", GLOBAL_CLASSES)
def test_global_pool_matches_torch_float32(cls, rng):
    torch = pytest.importorskip("torch")
    shape = (3, 7, 4) if cls.rank == 1 else (3, 5, 6, 4)
    x = rng.standard_normal(shape).astype(np.float32)
    layer = cls()
    y = layer(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    dims = tuple(range(1, 1 + cls.rank))
    ry = xt.amax(dim=dims) if "Max" in cls.__name__ else xt.mean(dim=dims)
    ry.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ry.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ shapes and errors
@pytest.mark.parametrize("layer,shape", [
    (MaxPooling2D((3, 2), (2, 1), "same"), (2, 9, 8, 3)),
    (AveragePooling2D(2), (2, 9, 8, 3)),
    (MaxPooling1D(3, padding="same"), (2, 10, 3)),
])
def test_compute_output_shape(layer, shape, rng):
    y = layer(rng.standard_normal(shape))
    assert layer.compute_output_shape(shape) == y.shape
    assert layer.compute_output_shape((None,) + shape[1:]) == (None,) + y.shape[1:]
    assert layer.compute_output_shape((None,) * (len(shape) - 1) + (3,)) == (None,) * (len(shape) - 1) + (3,)


def test_wrong_rank_is_rejected_with_the_layer_name():
    with pytest.raises(ValueError, match=r"'mp' \(MaxPooling2D\) expects inputs of rank 4 \(batch, height, width, channels\)"):
        MaxPooling2D(name="mp")(np.ones((2, 4, 4, 1, 1)))
    with pytest.raises(ValueError, match=r"rank >= 3"):
        AveragePooling1D()(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"GlobalMaxPooling1D\) expects inputs of rank 3"):
        GlobalMaxPooling1D()(np.ones((2, 4, 4, 1)))
    layer = GlobalAveragePooling2D(name="g")
    layer(np.ones((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="'g'.*rank 4"):
        layer(np.ones((2, 4, 4, 1, 1)))


def test_pool_window_larger_than_a_valid_input():
    with pytest.raises(ValueError, match=r"'p' \(MaxPooling2D\).*width axis has size 2 .* pool window spans 3"):
        MaxPooling2D(3, name="p")(np.ones((1, 5, 2, 1)))
    with pytest.raises(ValueError, match=r"steps axis has size 1"):
        AveragePooling1D(2)(np.ones((1, 1, 3)))
    assert MaxPooling1D(4, padding="same")(np.ones((1, 2, 3))).shape == (1, 1, 3)


def test_backward_needs_a_training_forward():
    layer = MaxPooling2D()
    layer(np.ones((1, 4, 4, 1)))
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((1, 2, 2, 1)))


def _invalid_cases():
    for cls in POOL_CLASSES + GLOBAL_CLASSES:
        for pname, allowed in cls._param_constraints.items():
            cs = [_as_constraint(c) for c in allowed]
            for bad in [v for c in cs for v in c.invalid_examples()]:
                if not any(c.is_satisfied_by(bad) for c in cs):
                    yield pytest.param(cls, pname, bad, id=f"{cls.__name__}-{pname}-{bad!r}")


@pytest.mark.parametrize("cls,pname,bad", list(_invalid_cases()))
def test_invalid_hyperparameters_rejected_at_construction(cls, pname, bad):
    with pytest.raises(InvalidParameterError) as e:
        cls(**{pname: bad})
    msg = str(e.value)
    assert msg.startswith(f"The {pname!r} parameter of {cls.__name__} must be ") and msg.endswith(f"Got {bad!r} instead.")


@pytest.mark.parametrize("layer", [
    MaxPooling2D((3, 2), strides=1, padding="same", name="mp"),
    AveragePooling1D(4, strides=2, data_format="channels_last"),
    MaxPooling1D(),
    AveragePooling2D(dtype="float64"),
    GlobalMaxPooling2D(keepdims=True),
    GlobalAveragePooling1D(name="gap"),
])
def test_config_round_trip_through_json(layer):
    clone = deserialize(json.loads(json.dumps(serialize(layer))))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


def test_keras_defaults():
    layer = MaxPooling2D()
    assert layer.pool_size == (2, 2) and layer.strides == (2, 2) and layer.padding == "valid"
    assert layer.name.startswith("max_pooling2d")
    assert AveragePooling1D(3).strides == (3,) and GlobalAveragePooling2D().keepdims is False
    assert GlobalMaxPooling1D().name.startswith("global_max_pooling1d")


def test_kernels_are_pure(rng):
    x = distinct(rng, (2, 6, 6, 2))
    before = x.copy()
    y, cache = K.max_pool2d_forward(x, pool_size=(3, 3), strides=(2, 2), padding="same")
    K.max_pool2d_backward(np.ones_like(y), cache)
    y, cache = K.avg_pool2d_forward(x, pool_size=(2, 2), padding="valid")
    K.avg_pool2d_backward(np.ones_like(y), cache)
    np.testing.assert_array_equal(x, before)
