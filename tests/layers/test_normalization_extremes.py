"""Property tests (issue 21): finite extreme input gives finite, correct results in every normalization layer.

Inputs are ``offset + scale * z`` per feature, offsets up to 1e30, scales
from 1e-30 to 1e30, some features constant, float32 and float64, on the
numba and the NumPy kernels. Forward and backward are compared with a
long-double reference computed from the same (rounded) input. The tolerance
is a few hundred units in the last place of the input's dtype, times
``1 + |mean| / std``: the error that rounding the mean itself to the dtype
may cause (the kernels do better for float32, whose statistics are kept in
float64). Batch norm in float32 may meet a variance a float32 moving
variance cannot hold: it must then raise a ValueError saying "overflow",
with the moving statistics unchanged. A constant feature (row, group) gives
exactly ``beta``.
"""

import numpy as np
import pytest

from normlab.errors import NonFiniteError
from normlab.layers import (
    BatchNormalization,
    GroupNormalization,
    InstanceNormalization,
    LayerNormalization,
    RMSNormalization,
)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

LD = np.longdouble


@pytest.fixture(params=["numba", "numpy", "numpy-large"])
def path(request, monkeypatch):
    """The kernels: numba, NumPy, and NumPy's float32 code for large inputs (taken here for small ones too)."""
    from normlab.kernels import _backend
    from normlab.kernels import batchnorm as KB

    if request.param == "numba" and not _backend.NUMBA_AVAILABLE:
        pytest.skip("numba is not installed")
    if request.param == "numpy-large":
        monkeypatch.setattr(KB, "_SMALL", 0)
    previous = _backend.use_numba(request.param == "numba")
    yield request.param
    _backend.use_numba(previous)
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def extreme_input(draw, shape, constant_axis):
    """``(x, dy, gamma, beta, const)``: float64 arrays of ``shape`` and a mask of the constant slices."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    sign = draw(st.sampled_from([-1.0, 0.0, 1.0]))
    offset_exp = draw(st.integers(-30, 30))
    scale_exp = draw(st.integers(-30, 30))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    n_const = shape[constant_axis]
    const = np.array(draw(st.lists(st.booleans(), min_size=n_const, max_size=n_const)))
    u = rng.uniform(0.5, 2.0, shape[-1])
    x = sign * 10.0**offset_exp * u + 10.0**scale_exp * rng.standard_normal(shape)
    x = x.astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, shape[-1]).astype(dtype)
    beta = rng.uniform(-1.0, 1.0, shape[-1]).astype(dtype)
    return x, dy, gamma, beta, const


def reference(x, dy, gamma, beta, axes, eps, centered=True, paxes=None):
    """``(y, dx, dgamma, dbeta, mean, var, inv_std)`` in long double, statistics over ``axes``.

    The parameters broadcast along ``paxes`` (default: all but the last axis).
    """
    x, dy, g, b = (a.astype(LD) for a in (x, dy, gamma, beta))
    m = np.prod([x.shape[a] for a in axes])
    mean = x.mean(axis=axes, keepdims=True) if centered else np.zeros_like(x[..., :1])
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(var + LD(eps))
    xhat = (x - mean) * inv
    y = xhat * g + b
    dxhat = dy * g
    s1 = dxhat.sum(axis=axes, keepdims=True) if centered else 0
    s2 = (dxhat * xhat).sum(axis=axes, keepdims=True)
    dx = inv / m * (m * dxhat - s1 - xhat * s2)
    paxes = tuple(range(x.ndim - 1)) if paxes is None else paxes
    return y, dx, (dy * xhat).sum(axis=paxes), dy.sum(axis=paxes), mean, var, inv


def less(err, bound, what):
    err, bound = np.broadcast_arrays(np.asarray(err, dtype=LD), np.asarray(bound, dtype=LD))
    bad = ~(err < bound)
    assert not bad.any(), f"{what}: error {err[bad].max():.3g} over the bound {bound[bad].min():.3g}"


def check(layer, x, dy, gamma, beta, ref, m):
    """Forward and backward of ``layer`` (training mode) against ``ref``."""
    y_ref, dx_ref, dg_ref, db_ref, mean, var, inv = ref
    eps = np.finfo(x.dtype).eps
    # what rounding the mean to x's dtype may cost, in units of the standard deviation
    cond = 1 + np.abs(mean) * inv
    tol = 256 * eps * cond
    y = layer(x, training=True)
    assert y.dtype == x.dtype and np.isfinite(y).all()
    less(np.abs(y - y_ref), tol * (1 + np.abs(gamma) + np.abs(beta)), "y")
    layer.grads["gamma"][...] = 0
    if "beta" in layer.grads:
        layer.grads["beta"][...] = 0
    dx = layer.backward(dy)
    assert np.isfinite(dx).all() and np.isfinite(layer.grads["gamma"]).all()
    # dx is inv * gamma * (terms of the size of m |dy|)
    scale = inv * np.abs(gamma) * np.abs(dy).max() * m
    less(np.abs(dx - dx_ref), tol * scale + np.finfo(x.dtype).tiny, "dx")
    reduce = tuple(range(x.ndim - 1))
    less(np.abs(layer.grads["gamma"] - dg_ref),
         (tol * np.abs(dy) * m).max(axis=reduce) + 64 * eps * np.abs(dg_ref), "dgamma")
    if "beta" in layer.grads:
        np.testing.assert_allclose(layer.grads["beta"], db_ref.astype(float), rtol=64 * eps, atol=64 * eps * m)


def set_params(layer, gamma, beta):
    layer.params["gamma"][...] = gamma.reshape(layer.params["gamma"].shape)
    if "beta" in layer.params:
        layer.params["beta"][...] = beta.reshape(layer.params["beta"].shape)


@SETTINGS
@given(data=extreme_input((12, 5), constant_axis=1))
def test_batch_normalization(path, data):
    x, dy, gamma, beta, const = data
    x[:, const] = x[0, const]
    layer = BatchNormalization(momentum=0.0, dtype=x.dtype.name)
    layer.build_from_shape(x.shape)
    set_params(layer, gamma, beta)
    ref = reference(x, dy, gamma, beta, (0,), layer.epsilon)
    var = ref[5]
    if x.dtype == np.float32 and (var > np.finfo(np.float32).max).any():
        before = {k: v.copy() for k, v in layer.buffers.items()}
        with pytest.raises(ValueError, match="overflow"):
            layer(x, training=True)
        assert all(np.array_equal(before[k], layer.buffers[k]) for k in before)
        return
    check(layer, x, dy, gamma, beta, ref, x.shape[0])
    # (a float32 buffer holds a variance below 1.2e-38 to its subnormal spacing only)
    np.testing.assert_allclose(layer.buffers["moving_variance"], var.reshape(-1).astype(float), rtol=1e-5,
                               atol=float(np.finfo(x.dtype).smallest_subnormal))
    y = layer(x, training=True)
    assert (y[:, const] == beta[const]).all()
    # inference with the batch's statistics (momentum 0): a constant feature still gives beta exactly
    yi = layer(x, training=False)
    assert np.isfinite(yi).all() and (yi[:, const] == beta[const]).all()


@SETTINGS
@given(data=extreme_input((6, 8), constant_axis=0))
def test_layer_normalization(path, data):
    x, dy, gamma, beta, const = data
    x[const] = x[const, :1]
    layer = LayerNormalization(dtype=x.dtype.name)
    layer.build_from_shape(x.shape)
    set_params(layer, gamma, beta)
    check(layer, x, dy, gamma, beta, reference(x, dy, gamma, beta, (1,), layer.epsilon), x.shape[1])
    y = layer(x, training=True)
    assert (y[const] == beta).all()


@SETTINGS
@given(data=extreme_input((6, 8), constant_axis=0))
def test_rms_normalization(path, data):
    x, dy, gamma, beta, _ = data
    layer = RMSNormalization(dtype=x.dtype.name)
    layer.build_from_shape(x.shape)
    set_params(layer, gamma, beta)
    ref = reference(x, dy, gamma, np.zeros_like(beta), (1,), layer.epsilon, centered=False)
    check(layer, x, dy, gamma, np.zeros_like(beta), ref, x.shape[1])


@SETTINGS
@given(data=extreme_input((3, 4, 6), constant_axis=0), groups=st.sampled_from([1, 3, 6]))
def test_group_and_instance_normalization(path, data, groups):
    x, dy, gamma, beta, const = data  # const: the samples whose first group is constant
    k = 6 // groups
    x[const, :, :k] = x[const, :1, :1]
    layer = InstanceNormalization() if groups == 6 else GroupNormalization(groups=groups)
    layer = type(layer).from_config({**layer.get_config(), "dtype": x.dtype.name})
    layer.build_from_shape(x.shape)
    set_params(layer, gamma, beta)
    xg = x.reshape(3, 4, groups, k)
    ref = reference(xg, dy.reshape(xg.shape), gamma.reshape(groups, k), beta.reshape(groups, k), (1, 3),
                    layer.epsilon, paxes=(0, 1))
    y_ref, dx_ref, dg_ref, db_ref, mean, var, inv = ref
    per_channel = lambda a: np.repeat(a.reshape(3, 1, groups), k, axis=2)  # noqa: E731
    ref = (y_ref.reshape(x.shape), dx_ref.reshape(x.shape), dg_ref.reshape(-1), db_ref.reshape(-1),
           per_channel(mean), var, per_channel(inv))
    check(layer, x, dy, gamma, beta, ref, 4 * k)
    y = layer(x, training=True)
    assert (y[const, :, :k] == beta[:k]).all()


# ------------------------------------------------ beyond the property test's range
BN_PATHS = {
    "rows": lambda: BatchNormalization(),
    "numpy_axis": lambda: BatchNormalization(axis=1),
    "ghost": lambda: BatchNormalization(virtual_batch_size=4),
    "renorm": lambda: BatchNormalization(renorm=True),
}


@pytest.mark.parametrize("path", sorted(BN_PATHS))
def test_batch_norm_overflow_is_an_error_that_changes_nothing(path, kernel_path, rng):
    """A float32 batch variance beyond 3.4e38 says "overflow" (not "NaN or inf") and leaves every buffer as it was."""
    layer = BN_PATHS[path]()
    x = (1e30 * rng.standard_normal((8, 3, 2))).astype(np.float32)
    layer(x[:2], training=False)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    with pytest.raises(ValueError, match="overflow") as e:
        layer(x, training=True)
    assert "NaN" not in str(e.value) and layer.name in str(e.value)
    assert isinstance(e.value, NonFiniteError)  # a model's step applies its optimizer's on_nonfinite policy
    assert all(np.array_equal(before[k], layer.buffers[k]) for k in before)
    # inference needs no variance of the batch: finite, and equal to float64's
    y = layer(x, training=False)
    assert np.isfinite(y).all()
    with pytest.raises(ValueError, match="NaN or inf"):
        x[0, 0, 0] = np.inf
        layer(x, training=True)


def test_fused_batch_norm_activation_overflow_and_constant_feature(kernel_path, rng):
    """The compiled model's fused batch norm + relu: the same error, and a constant feature gives relu(beta)."""
    import normlab
    from normlab import optimizers
    from normlab.layers import Activation, Dense

    model = normlab.Sequential([Dense(4, use_bias=False), BatchNormalization(beta_initializer="ones"),
                                Activation("relu"), Dense(2, activation="softmax")])
    model.build((None, 4), seed=0)
    model.layers[0].params["kernel"][...] = np.eye(4)
    model.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    x = (1e30 * rng.standard_normal((8, 4))).astype(np.float32)
    labels = np.zeros(8, int)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="overflow"):
        model.train_on_batch(x, labels)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    x = (1e6 * (1 + rng.standard_normal((8, 4)))).astype(np.float32)
    x[:, 1] = -1e6
    model.train_on_batch(x, labels)
    if kernel_path == "numba":  # the row kernels ran (fused with the relu, in a compiled model)
        from normlab.kernels.batchnorm_rows import RowsTrainCache

        assert type(model.layers[1]._cache) is RowsTrainCache
    z, a = model.layers[2]._cache  # what the fused pass (or the two layers' own) left
    assert (z[:, 1] == 1.0).all() and (a[:, 1] == 1.0).all()
    assert np.isfinite(z).all() and np.abs(z).max() < 10


@pytest.mark.parametrize("cls", [LayerNormalization, RMSNormalization, GroupNormalization])
def test_float32_near_its_largest_value(cls, kernel_path):
    """Values up to 3e38 of either sign: finite output, equal to the long-double one to float32 rounding."""
    kw = {"groups": 2} if cls is GroupNormalization else {}
    x = np.array([[3e38, -3e38, 1e38, 0.0], [2e38, 2.5e38, 3e38, 2.9e38]], np.float32)
    layer = cls(**kw)
    y = layer(x, training=True)
    assert np.isfinite(y).all()
    if cls is GroupNormalization:
        xr = x.astype(LD).reshape(2, 2, 2)
        mean = xr.mean(axis=2, keepdims=True)
        ref = ((xr - mean) / np.sqrt(np.square(xr - mean).mean(axis=2, keepdims=True) + LD(1e-3))).reshape(2, 4)
    else:
        xr = x.astype(LD)
        mean = xr.mean(axis=1, keepdims=True) if cls is LayerNormalization else 0
        ref = (xr - mean) / np.sqrt(np.square(xr - mean).mean(axis=1, keepdims=True) + LD(layer.epsilon))
    np.testing.assert_allclose(y, ref.astype(float), rtol=1e-5, atol=1e-5)
    dx = layer.backward(np.ones_like(x))
    assert np.isfinite(dx).all()


@pytest.mark.parametrize("cls", [LayerNormalization, BatchNormalization])
def test_float64_beyond_the_square_root_of_its_range(cls, kernel_path, rng):
    """Deviations of 1e200 overflow float64 squares: layer norm scales them (finite, correct output);
    batch norm's variance of 1e400 cannot be stored, which is an overflow error."""
    x = 1e200 * rng.standard_normal((6, 5))
    layer = cls(dtype="float64")
    if cls is BatchNormalization:
        with pytest.raises(ValueError, match="overflow"):
            layer(x, training=True)
        x = 1e150 * rng.standard_normal((6, 5))  # squares overflow, the variance (1e300) does not
        y = layer(x, training=True)
        np.testing.assert_allclose(layer.buffers["moving_variance"], 0.99 + 0.01 * x.var(axis=0), rtol=1e-12)
        np.testing.assert_allclose(y, (x - x.mean(0)) / x.std(0), rtol=1e-10, atol=1e-12)
        return
    y = layer(x, training=True)
    ref = (x / 1e200 - (x / 1e200).mean(1, keepdims=True)) / (x / 1e200).std(1, keepdims=True)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    assert np.isfinite(layer.backward(rng.standard_normal(x.shape))).all()
