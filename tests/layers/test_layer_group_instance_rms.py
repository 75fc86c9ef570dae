"""Layer, group, instance and RMS normalization: what must hold (issue 5)."""

import json

import numpy as np
import pytest

from normlab import InvalidParameterError, initializers
from normlab.kernels import layernorm as K
from normlab.layers import (
    GroupNormalization,
    InstanceNormalization,
    LayerNormalization,
    RMSNormalization,
    deserialize,
    serialize,
)
from normlab.testing import check_layer_gradients, numerical_gradient, rel_error

CLASSES = [LayerNormalization, GroupNormalization, InstanceNormalization, RMSNormalization]

# every test runs on the numba kernels (layer and RMS norm over trailing axes) and on NumPy
pytestmark = pytest.mark.usefixtures("kernel_path")


def affine_kw(cls, seed=1, **kw):
    """Well-scaled random gamma/beta so that every gradient is O(1)."""
    kw.setdefault("gamma_initializer", initializers.RandomUniform(0.5, 1.5, seed=seed))
    if cls is not RMSNormalization:
        kw.setdefault("beta_initializer", initializers.RandomUniform(-0.5, 0.5, seed=seed + 1))
    return kw


def make(cls, **kw):
    return cls(**affine_kw(cls, **kw))


def expected_keys(center, scale):
    return {"x"} | ({"gamma"} if scale else set()) | ({"beta"} if center else set())


AFFINE = [(True, True), (False, True), (True, False), (False, False)]


# ------------------------------------------------------------- naive references
def ln_ref(x, gamma, beta, axes, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gn_ref(x, gamma, beta, groups, eps):
    """Channels-last, by a loop over samples and groups."""
    y = np.empty_like(x)
    c = x.shape[-1]
    k = c // groups
    for n in range(x.shape[0]):
        for g in range(groups):
            blk = x[n, ..., g * k : (g + 1) * k]
            y[n, ..., g * k : (g + 1) * k] = (blk - blk.mean()) / np.sqrt(blk.var() + eps)
    return y * gamma + beta


def rms_ref(x, gamma, axes, eps):
    return x / np.sqrt((x**2).mean(axis=axes, keepdims=True) + eps) * gamma


# ------------------------------------------------------------ gradient checks
LN_CASES = [
    ((6, 5), -1),
    ((4, 3, 5), -1),
    ((4, 3, 5), 1),
    ((4, 3, 5), [1, 2]),
    ((2, 3, 4, 5), -1),
    ((2, 3, 4, 5), [1, 3]),
    ((2, 3, 4, 5), [-3, -2, -1]),
]


@pytest.mark.parametrize("shape,axis", LN_CASES)
@pytest.mark.parametrize("center,scale", AFFINE)
def test_layer_norm_gradients_float64(shape, axis, center, scale, rng):
    x = rng.standard_normal(shape) * 2.0 + 1.0
    errs = check_layer_gradients(make(LayerNormalization, axis=axis, center=center, scale=scale), x)
    assert set(errs) == expected_keys(center, scale)
    assert max(errs.values()) < 1e-6, errs


GN_CASES = [
    ((5, 6), -1, 2),
    ((5, 6), -1, 1),
    ((3, 4, 6), -1, 3),
    ((2, 3, 4, 6), -1, 2),
    ((2, 6, 3, 4), 1, 3),  # channels-first through axis=1
    ((2, 3, 4, 6), -1, -1),  # one group per channel
]


@pytest.mark.parametrize("shape,axis,groups", GN_CASES)
@pytest.mark.parametrize("center,scale", AFFINE)
def test_group_norm_gradients_float64(shape, axis, groups, center, scale, rng):
    x = rng.standard_normal(shape) * 2.0 - 1.0
    layer = make(GroupNormalization, groups=groups, axis=axis, center=center, scale=scale)
    errs = check_layer_gradients(layer, x)
    assert set(errs) == expected_keys(center, scale)
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize("shape,axis", [((4, 5, 3), -1), ((2, 3, 4, 5), -1), ((2, 4, 3, 3), 1)])
@pytest.mark.parametrize("center,scale", AFFINE)
def test_instance_norm_gradients_float64(shape, axis, center, scale, rng):
    x = rng.standard_normal(shape) * 2.0 + 0.5
    layer = make(InstanceNormalization, axis=axis, center=center, scale=scale)
    errs = check_layer_gradients(layer, x)
    assert set(errs) == expected_keys(center, scale)
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize(
    "shape,axis", [((6, 5), -1), ((4, 3, 5), 1), ((4, 3, 5), [1, 2]), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), [1, 2, 3])]
)
def test_rms_norm_gradients_float64(shape, axis, rng):
    x = rng.standard_normal(shape) * 2.0 + 0.5
    errs = check_layer_gradients(make(RMSNormalization, axis=axis), x)
    assert set(errs) == {"x", "gamma"}
    assert max(errs.values()) < 1e-6, errs


def test_gradients_elementwise_relative_error_too(rng):
    """The same checks with the elementwise relative error (every entry, not just the large ones)."""
    for layer, x in [
        (make(LayerNormalization, axis=[1, 2]), rng.standard_normal((3, 4, 5))),
        (make(GroupNormalization, groups=2), rng.standard_normal((3, 4, 4))),
        (make(RMSNormalization), rng.standard_normal((3, 4, 5))),
    ]:
        dy = rng.standard_normal(x.shape)
        layer(x, training=True)
        dx = layer.backward(dy)
        num = numerical_gradient(lambda: float(np.sum(layer(x, training=True) * dy)), x)
        assert rel_error(dx, num) < 1e-6
        for k, p in layer.params.items():
            num = numerical_gradient(lambda: float(np.sum(layer(x, training=True) * dy)), p)
            assert rel_error(layer.grads[k], num) < 1e-6, k


# ------------------------------------------------------ textbook formulas (float64)
@pytest.mark.parametrize("shape,axis", LN_CASES)
def test_layer_norm_matches_textbook_formula(shape, axis, rng):
    x = rng.standard_normal(shape) * 3 + 2
    layer = make(LayerNormalization, axis=axis, epsilon=1e-3)
    y = layer(x)
    axes = layer._checked_axes
    bshape = tuple(shape[a] if a in axes else 1 for a in range(len(shape)))
    g, b = layer.params["gamma"].reshape(bshape), layer.params["beta"].reshape(bshape)
    assert layer.params["gamma"].shape == tuple(shape[a] for a in axes)
    np.testing.assert_allclose(y, ln_ref(x, g, b, axes, 1e-3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,groups", [((5, 6), 3), ((3, 4, 6), 2), ((2, 3, 4, 8), 4), ((2, 3, 4, 8), 1), ((2, 3, 4, 8), 8)])
def test_group_norm_matches_loop_over_groups(shape, groups, rng):
    x = rng.standard_normal(shape) * 3 - 2
    layer = make(GroupNormalization, groups=groups)
    y = layer(x)
    ref = gn_ref(x, layer.params["gamma"], layer.params["beta"], groups, 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_group_norm_special_cases_are_layer_and_instance_norm(rng):
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1
    gn1 = GroupNormalization(groups=1)
    ln = LayerNormalization(axis=[1, 2, 3])
    np.testing.assert_allclose(gn1(x), ln(x), rtol=1e-12, atol=1e-12)
    gnc = make(GroupNormalization, groups=6)
    inn = make(InstanceNormalization)
    np.testing.assert_allclose(gnc(x), inn(x), rtol=1e-12, atol=1e-12)
    y = inn(x)
    # each sample and channel is normalized over its spatial positions
    mean = ((y - inn.params["beta"]) / inn.params["gamma"]).mean(axis=(1, 2))
    np.testing.assert_allclose(mean, 0.0, atol=1e-12)


@pytest.mark.parametrize("shape,axis", [((6, 5), -1), ((4, 3, 5), [1, 2]), ((2, 3, 4, 5), -1)])
def test_rms_norm_matches_textbook_formula(shape, axis, rng):
    x = rng.standard_normal(shape) * 3 + 2
    layer = make(RMSNormalization, axis=axis)
    y = layer(x)
    axes = layer._checked_axes
    bshape = tuple(shape[a] if a in axes else 1 for a in range(len(shape)))
    ref = rms_ref(x, layer.params["gamma"].reshape(bshape), axes, 1e-6)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_instance_norm_of_2d_input_is_beta():
    """(N, C) input: one value per statistic, xhat = 0 and y = beta (Keras semantics)."""
    layer = make(InstanceNormalization)
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(layer(x), np.broadcast_to(layer.params["beta"], (3, 4)), atol=1e-12)


# ------------------------------------------------------------- PyTorch reference
def _torch_grads(torch, fn, x, dy, *params):
    tx = torch.tensor(x, requires_grad=True)
    tp = [None if p is None else torch.tensor(p, requires_grad=True) for p in params]
    ty = fn(tx, *tp)
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), tx.grad.numpy(), [None if p is None else p.grad.numpy() for p in tp]


def assert_close32(actual, desired):
    """float32 comparison: rtol 1e-5, and atol 1e-6 of the array's scale for entries near zero.

    Both libraries land within ~2e-7 of the array's scale of the float64 result.
    """
    assert actual.dtype == np.float32
    scale = float(np.max(np.abs(desired)))
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6 * scale)


def _run32(layer, x, dy):
    y = layer(x, training=True)
    dx = layer.backward(dy)
    return y, dx


@pytest.mark.parametrize("shape,axis,nshape", [((16, 12), -1, (12,)), ((8, 5, 6), [1, 2], (5, 6)), ((4, 3, 4, 8), [1, 2, 3], (3, 4, 8))])
def test_torch_layer_norm_float32(shape, axis, nshape, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = make(LayerNormalization, axis=axis, epsilon=1e-3)
    y, dx = _run32(layer, x, dy)
    g, b = layer.params["gamma"], layer.params["beta"]
    ty, tdx, (tg, tb) = _torch_grads(
        torch, lambda t, w, c: torch.nn.functional.layer_norm(t, nshape, w, c, eps=1e-3), x, dy, g, b
    )
    assert_close32(y, ty)
    assert_close32(dx, tdx)
    assert_close32(layer.grads["gamma"], tg)
    assert_close32(layer.grads["beta"], tb)


def test_torch_layer_norm_on_a_middle_axis_float32(rng):
    """axis=1 of (N, C, L): torch normalizes trailing axes only, so move C last."""
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((8, 6, 5)) - 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = make(LayerNormalization, axis=1)
    y, dx = _run32(layer, x, dy)
    fn = lambda t, w, c: torch.nn.functional.layer_norm(t.transpose(1, 2), (6,), w, c, eps=1e-3).transpose(1, 2)  # noqa: E731
    ty, tdx, (tg, tb) = _torch_grads(torch, fn, x, dy, layer.params["gamma"], layer.params["beta"])
    assert_close32(y, ty)
    assert_close32(dx, tdx)
    assert_close32(layer.grads["gamma"], tg)
    assert_close32(layer.grads["beta"], tb)


@pytest.mark.parametrize("shape,groups", [((8, 12), 4), ((4, 7, 12), 3), ((4, 5, 6, 8), 4), ((4, 5, 6, 8), 1)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_torch_group_norm_float32_channels_last(shape, groups, center, scale, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = make(GroupNormalization, groups=groups, epsilon=1e-3, center=center, scale=scale)
    y, dx = _run32(layer, x, dy)
    nd = len(shape)
    to_cf = (0, nd - 1) + tuple(range(1, nd - 1))  # channels-last -> channels-first
    back = tuple(np.argsort(to_cf))

    def fn(t, w, c):
        return torch.nn.functional.group_norm(t.permute(*to_cf), groups, w, c, eps=1e-3).permute(*back)

    ty, tdx, (tg, tb) = _torch_grads(torch, fn, x, dy, layer.params.get("gamma"), layer.params.get("beta"))
    assert_close32(y, ty)
    assert_close32(dx, tdx)
    if scale:
        assert_close32(layer.grads["gamma"], tg)
    if center:
        assert_close32(layer.grads["beta"], tb)


def test_torch_group_norm_channels_first_axis_1_float32(rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((4, 8, 5, 6)) + 1).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = make(GroupNormalization, groups=2, axis=1)
    y, dx = _run32(layer, x, dy)
    fn = lambda t, w, c: torch.nn.functional.group_norm(t, 2, w, c, eps=1e-3)  # noqa: E731
    ty, tdx, (tg, tb) = _torch_grads(torch, fn, x, dy, layer.params["gamma"], layer.params["beta"])
    assert_close32(y, ty)
    assert_close32(dx, tdx)
    assert_close32(layer.grads["gamma"], tg)
    assert_close32(layer.grads["beta"], tb)


@pytest.mark.parametrize("shape", [(4, 9, 6), (4, 5, 6, 8)])
def test_torch_instance_norm_float32_channels_last(shape, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(shape) * 2 - 0.5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = make(InstanceNormalization, epsilon=1e-3)
    y, dx = _run32(layer, x, dy)
    nd = len(shape)
    to_cf = (0, nd - 1) + tuple(range(1, nd - 1))
    back = tuple(np.argsort(to_cf))

    def fn(t, w, c):
        return torch.nn.functional.instance_norm(
            t.permute(*to_cf), weight=w, bias=c, use_input_stats=True, eps=1e-3
        ).permute(*back)

    ty, tdx, (tg, tb) = _torch_grads(torch, fn, x, dy, layer.params["gamma"], layer.params["beta"])
    assert_close32(y, ty)
    assert_close32(dx, tdx)
    assert_close32(layer.grads["gamma"], tg)
    assert_close32(layer.grads["beta"], tb)


@pytest.mark.parametrize("shape,axis,nshape", [((16, 12), -1, (12,)), ((8, 5, 6), [1, 2], (5, 6)), ((4, 3, 4, 8), -1, (8,))])
def test_torch_rms_norm_float32(shape, axis, nshape, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = make(RMSNormalization, axis=axis)
    y, dx = _run32(layer, x, dy)
    # torch's default eps is the dtype's machine epsilon: pass ours
    fn = lambda t, w: torch.nn.functional.rms_norm(t, nshape, w, eps=1e-6)  # noqa: E731
    ty, tdx, (tg,) = _torch_grads(torch, fn, x, dy, layer.params["gamma"])
    assert_close32(y, ty)
    assert_close32(dx, tdx)
    assert_close32(layer.grads["gamma"], tg)


# ----------------------------------------------------------- float32 behaviour
@pytest.mark.parametrize(
    "cls,kw,shape",
    [
        (LayerNormalization, {}, (16, 64)),
        (GroupNormalization, {"groups": 4}, (8, 5, 16)),
        (InstanceNormalization, {}, (8, 9, 16)),
        (RMSNormalization, {}, (16, 64)),
    ],
)
def test_float32_layer_matches_float64_layer(cls, kw, shape, rng):
    x64 = rng.standard_normal(shape) * 3 + 2
    dy64 = rng.standard_normal(shape)
    l32, l64 = make(cls, dtype="float32", **kw), make(cls, dtype="float64", **kw)
    y32, y64 = l32(x64.astype(np.float32), training=True), l64(x64, training=True)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-6 * np.abs(y64).max())
    dx32, dx64 = l32.backward(dy64.astype(np.float32)), l64.backward(dy64)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, dx64, rtol=1e-5, atol=1e-6 * np.abs(dx64).max())
    for k in l64.grads:
        assert l32.grads[k].dtype == np.float32
        np.testing.assert_allclose(l32.grads[k], l64.grads[k], rtol=1e-5, atol=1e-6 * np.abs(l64.grads[k]).max())


@pytest.mark.parametrize("cls,kw", [(LayerNormalization, {}), (GroupNormalization, {"groups": 8})])
def test_large_offset_float32_normalizes_to_unit_variance(cls, kw, rng):
    x = (1e4 + rng.standard_normal((64, 512))).astype(np.float32)
    y = cls(epsilon=1e-6, **kw)(x, training=True).astype(np.float64)
    if cls is GroupNormalization:
        y = y.reshape(64, 8, 64)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-3)
    np.testing.assert_allclose(y.var(-1), 1.0, atol=1e-3)


def test_kernel_directional_derivative_on_a_larger_shape(rng):
    """Two evaluations along a random direction, for the pure kernels directly."""
    x = rng.standard_normal((6, 7, 8, 12)) + 1
    gamma = rng.uniform(0.5, 1.5, 12)
    beta = rng.uniform(-0.5, 0.5, 12)
    dy = rng.standard_normal(x.shape)
    d = rng.standard_normal(x.shape)
    h = 1e-6

    def f(xx):
        return float(np.sum(K.group_norm_forward(xx, gamma, beta, groups=3, axis=3, epsilon=1e-3)[0] * dy))

    _, cache = K.group_norm_forward(x, gamma, beta, groups=3, axis=3, epsilon=1e-3)
    dx, dgamma, dbeta = K.group_norm_backward(dy, cache)
    num = (f(x + h * d) - f(x - h * d)) / (2 * h)
    assert abs(np.sum(dx * d) - num) < 1e-6 * abs(num) + 1e-8
    assert dgamma.shape == dbeta.shape == (12,)

    gamma2 = rng.uniform(0.5, 1.5, (1, 1, 8, 12))  # broadcast shape of the normalized axes

    def r(xx):
        return float(np.sum(K.rms_norm_forward(xx, gamma2, axes=(2, 3), epsilon=1e-6)[0] * dy))

    _, cache = K.rms_norm_forward(x, gamma2, axes=(2, 3), epsilon=1e-6)
    dx, dgamma2 = K.rms_norm_backward(dy, cache)
    assert dgamma2.shape == gamma2.shape
    num = (r(x + h * d) - r(x - h * d)) / (2 * h)
    assert abs(np.sum(dx * d) - num) < 1e-6 * abs(num) + 1e-8


# --------------------------------------------------------------- layer state
def test_params_keys_and_shapes(rng):
    x = rng.standard_normal((2, 3, 4, 6))
    ln = LayerNormalization(axis=[1, 3])
    ln(x)
    assert set(ln.params) == {"gamma", "beta"} == set(ln.grads)
    assert ln.params["gamma"].shape == (3, 6) and ln.buffers == {}
    gn = GroupNormalization(groups=3)
    gn(x)
    assert gn.params["gamma"].shape == gn.params["beta"].shape == (6,)
    rms = RMSNormalization()
    rms(x)
    assert set(rms.params) == {"gamma"}  # Keras's "scale", under the house key
    np.testing.assert_array_equal(rms.params["gamma"], np.ones(6))
    assert set(LayerNormalization(center=False, scale=False).get_config()) >= {"center", "scale"}
    assert GroupNormalization().groups == 32 and GroupNormalization().epsilon == 1e-3
    assert InstanceNormalization().epsilon == 1e-3 and RMSNormalization().epsilon == 1e-6


@pytest.mark.parametrize("cls", CLASSES)
def test_training_and_inference_compute_the_same(cls, rng):
    x = rng.standard_normal((4, 5, 6))
    kw = {"groups": 3} if cls is GroupNormalization else {}
    layer = make(cls, **kw)
    np.testing.assert_array_equal(layer(x, training=True), layer(x, training=False))


def test_non_normalized_axes_may_change_size(rng):
    ln = LayerNormalization()
    ln(rng.standard_normal((4, 3, 5)))
    assert ln(rng.standard_normal((2, 7, 5))).shape == (2, 7, 5)
    gn = GroupNormalization(groups=2)
    gn(rng.standard_normal((4, 3, 3, 4)))
    assert gn(rng.standard_normal((1, 5, 2, 4)), training=True).shape == (1, 5, 2, 4)


@pytest.mark.parametrize("cls", CLASSES)
def test_backward_without_training_forward_raises(cls, rng):
    layer = cls(groups=2) if cls is GroupNormalization else cls()
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((2, 4)))
    layer(rng.standard_normal((3, 4)), training=False)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((3, 4)))


@pytest.mark.parametrize("cls", CLASSES)
def test_backward_accumulates_and_frozen_layer_gets_no_grads(cls, rng):
    kw = {"groups": 2} if cls is GroupNormalization else {}
    x, dy = rng.standard_normal((5, 3, 4)), rng.standard_normal((5, 3, 4))
    layer = make(cls, **kw)
    layer(x, training=True)
    dx = layer.backward(dy)
    g1 = {k: v.copy() for k, v in layer.grads.items()}
    assert all(np.abs(v).sum() > 0 for v in g1.values())
    layer.backward(dy)
    for k in g1:
        np.testing.assert_allclose(layer.grads[k], 2 * g1[k])
    layer.zero_grads()
    layer.trainable = False
    assert layer.trainable_params == {}
    layer(x, training=True)
    np.testing.assert_allclose(layer.backward(dy), dx)
    assert all((v == 0).all() for v in layer.grads.values())


@pytest.mark.parametrize(
    "cls,kw,built,bad,fragments",
    [
        (LayerNormalization, {"axis": -1}, (4, 3, 8), (4, 3, 6), ["axis 2", "8", "6"]),
        (LayerNormalization, {"axis": [1, 2]}, (4, 3, 8), (4, 5, 8), ["axis 1", "3", "5"]),
        (GroupNormalization, {"groups": 4}, (4, 3, 8), (4, 3, 12), ["axis 2", "8", "12"]),
        (InstanceNormalization, {"axis": 1}, (4, 3, 8), (4, 5, 8), ["axis 1", "3", "5"]),
        (RMSNormalization, {}, (4, 8), (4, 6), ["axis 1", "8", "6"]),
    ],
)
def test_other_size_after_build_raises_naming_the_layer(cls, kw, built, bad, fragments, rng):
    layer = cls(name="norm_under_test", **kw)
    layer(rng.standard_normal(built), training=True)
    with pytest.raises(ValueError) as e:
        layer(rng.standard_normal(bad))
    msg = str(e.value)
    for frag in ["norm_under_test", cls.__name__, *fragments]:
        assert frag in msg, (frag, msg)
    with pytest.raises(ValueError, match="norm_under_test.*rank"):
        layer(rng.standard_normal(built + (1,)))


@pytest.mark.parametrize(
    "cls,axis",
    [(c, a) for c in CLASSES for a in (0, 3, -4, [1, 1])
     if not (isinstance(a, list) and c in (GroupNormalization, InstanceNormalization))],
)
def test_invalid_axis_for_input_raises_at_build(cls, axis, rng):
    kw = {"groups": 1} if cls is GroupNormalization else {}
    with pytest.raises(ValueError, match="axis"):
        cls(axis=axis, name="ax", **kw)(rng.standard_normal((4, 3, 2)), training=True)


@pytest.mark.parametrize("groups,channels", [(4, 6), (32, 16), (5, 12)])
def test_group_norm_channels_not_divisible_raises_at_build(groups, channels, rng):
    layer = GroupNormalization(groups=groups, name="gn_bad")
    with pytest.raises(ValueError) as e:
        layer(rng.standard_normal((2, 3, channels)))
    msg = str(e.value)
    assert "gn_bad" in msg and f"groups={groups}" in msg and f"{channels} channels" in msg
    assert not layer.built and layer.params == {}


@pytest.mark.parametrize("cls", CLASSES)
def test_config_round_trip_through_json(cls, rng):
    kw = {
        LayerNormalization: dict(axis=[1, 2], epsilon=1e-5, center=False, gamma_regularizer="l2"),
        GroupNormalization: dict(groups=2, axis=1, epsilon=1e-4, scale=False, beta_regularizer="l1"),
        InstanceNormalization: dict(axis=1, epsilon=1e-2),
        RMSNormalization: dict(axis=[1, 2], epsilon=1e-5, gamma_regularizer="l2"),
    }[cls]
    layer = cls(name=f"cfg_{cls.__name__}", **affine_kw(cls, seed=7, **kw))
    cfg = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(cfg)
    assert type(clone) is cls and clone.get_config() == layer.get_config()
    assert "groups" not in InstanceNormalization().get_config()
    x = rng.standard_normal((3, 4, 5))
    np.testing.assert_allclose(layer(x, training=True), clone(x, training=True))
    assert clone.regularization_loss() == pytest.approx(layer.regularization_loss())


def _invalid_values(constraints):
    for name, allowed in constraints.items():
        cs = [c for c in allowed if hasattr(c, "invalid_examples")]
        for c in cs:
            for bad in c.invalid_examples():
                if not any(a.is_satisfied_by(bad) for a in cs if hasattr(a, "is_satisfied_by")):
                    yield name, bad


@pytest.mark.parametrize("cls", CLASSES)
def test_invalid_hyperparameters_generated_from_declared_constraints(cls):
    cases = list(_invalid_values(cls._param_constraints))
    assert cases
    for name, bad in cases:
        with pytest.raises(InvalidParameterError) as e:
            cls(**{name: bad})
        assert f"The {name!r} parameter of {cls.__name__} must be" in str(e.value)


@pytest.mark.parametrize(
    "cls,kwargs,message",
    [
        (LayerNormalization, {"epsilon": 0.0}, "The 'epsilon' parameter of LayerNormalization must be a float in the range (0, inf). Got 0.0 instead."),
        (GroupNormalization, {"groups": 0}, "The 'groups' parameter of GroupNormalization must be an int in the range [1, inf) or one of -1. Got 0 instead."),
        (GroupNormalization, {"groups": 2.0}, "'groups'"),
        (GroupNormalization, {"axis": [1, 2]}, "'axis'"),
        (InstanceNormalization, {"center": "yes"}, "The 'center' parameter of InstanceNormalization"),
        (RMSNormalization, {"epsilon": -1e-6}, "The 'epsilon' parameter of RMSNormalization"),
        (RMSNormalization, {"axis": 1.5}, "'axis'"),
        (LayerNormalization, {"gamma_initializer": "no_such_init"}, "Unknown initializer"),
    ],
)
def test_invalid_hyperparameters_rejected_at_construction(cls, kwargs, message):
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    assert message in str(e.value)
    with pytest.raises(TypeError):
        InstanceNormalization(groups=2)  # no 'groups' for instance norm


# ------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("cls", CLASSES)
def test_empty_batch_and_fortran_order(cls, rng):
    kw = {"groups": 2} if cls is GroupNormalization else {}
    layer = make(cls, **kw)
    x = rng.standard_normal((5, 3, 4))
    y = layer(x, training=True)
    yf = layer(np.asfortranarray(x), training=True)
    np.testing.assert_allclose(yf, y, rtol=1e-13, atol=1e-13)
    empty = layer(np.zeros((0, 3, 4)), training=True)
    assert empty.shape == (0, 3, 4)
    assert layer.backward(np.zeros((0, 3, 4))).shape == (0, 3, 4)


@pytest.mark.parametrize("cls", CLASSES)
def test_non_finite_sample_does_not_leak_into_the_others(cls, rng):
    """Statistics are per sample: a NaN in one sample leaves the other samples' outputs finite."""
    kw = {"groups": 2} if cls is GroupNormalization else {}
    x = rng.standard_normal((4, 3, 4))
    x[1, 2, 0] = np.nan
    y = make(cls, **kw)(x, training=True)
    assert np.isfinite(np.delete(y, 1, axis=0)).all()


# ------------------------------------------------------- the numba kernels
def _fwd_bwd(cls, kw, x, dy, params, use_numba, trainable=True, passes=1):
    from normlab.kernels import _backend

    previous = _backend.use_numba(use_numba)
    try:
        layer = cls(**kw, trainable=trainable)
        layer(x[:1])  # builds in x's dtype (build() alone would be redone by the first call)
        for k, v in params.items():
            layer.params[k][...] = v
        for _ in range(passes):  # gradients accumulate over backward passes
            y = layer(x, training=True)
            dx = layer.backward(dy)
        return y, dx, {k: g.copy() for k, g in layer.grads.items()}, layer._cache
    finally:
        _backend.use_numba(previous)


@pytest.mark.parametrize("cls,kw,shape", [
    (LayerNormalization, {}, (37, 100)),
    (LayerNormalization, {"axis": [2, 3]}, (3, 4, 5, 6)),
    (LayerNormalization, {"center": False}, (6, 7, 9)),
    (LayerNormalization, {"scale": False}, (6, 9)),
    (LayerNormalization, {"center": False, "scale": False}, (5, 33)),
    (RMSNormalization, {}, (11, 64)),
    (RMSNormalization, {"axis": [1, 2]}, (4, 3, 17)),
    (GroupNormalization, {"groups": 4}, (3, 5, 6, 8)),
    (GroupNormalization, {"groups": 1, "center": False}, (4, 7, 12)),
    (GroupNormalization, {"groups": 8, "scale": False}, (2, 32, 64, 32)),  # blocks of rows (65536 values)
    (InstanceNormalization, {}, (2, 9, 9, 6)),
    (InstanceNormalization, {"center": False, "scale": False}, (3, 5, 4)),
])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_numba_kernels_match_numpy(cls, kw, shape, dtype, tol, rng):
    from normlab.kernels import _backend

    if not _backend.NUMBA_AVAILABLE:
        pytest.skip("numba not installed")
    # an offset and a scale that a one-pass variance would not survive in float32
    x = (rng.standard_normal(shape) * 3 + 50).astype(dtype)
    x = np.asfortranarray(x)  # the numba path makes its own contiguous view
    dy = rng.standard_normal(shape).astype(dtype)
    probe = cls(**kw)
    probe.build(shape)
    params = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in probe.params.items()}
    for trainable, passes in ((True, 2), (False, 1)):
        fused = _fwd_bwd(cls, kw, x, dy, params, True, trainable, passes)
        ref = _fwd_bwd(cls, kw, x, dy, params, False, trainable, passes)
        numpy_caches = (K.NormalizeCache, K.GroupNormCache)
        assert not isinstance(fused[3], numpy_caches) and isinstance(ref[3], numpy_caches)
        for a, b in zip(fused[:2], ref[:2]):
            assert a.dtype == b.dtype == dtype and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
        assert fused[2].keys() == ref[2].keys()
        for k in ref[2]:
            g, r = fused[2][k], ref[2][k]
            if not trainable:
                assert not g.any() and not r.any()
            np.testing.assert_allclose(g, r, rtol=tol, atol=tol * max(np.abs(r).max(), 1.0))


def test_group_norm_numba_path_only_for_channels_last(rng):
    from normlab.kernels import _backend

    x = rng.standard_normal((3, 8, 5, 5)).astype(np.float32)
    for axis, fused in ((-1, True), (3, True), (1, False)):
        layer = GroupNormalization(groups=1, axis=axis)
        layer(x, training=True)
        expect = fused and _backend.numba_enabled()
        assert isinstance(layer._cache, K.GroupNormCache) is not expect, axis


def test_numba_path_only_for_trailing_axes(rng):
    from normlab.kernels import _backend

    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    for axis, fused in ((-1, True), ([1, 2], True), (1, False), ([1], False)):
        layer = LayerNormalization(axis=axis)
        layer(x, training=True)
        expect = fused and _backend.numba_enabled()
        assert isinstance(layer._cache, K.NormalizeCache) is not expect, axis


def test_model_with_sample_norms_gradients_and_training_on_both_paths(kernel_path, rng):
    """A model of Dense, layer / group / RMS norm: float64 model gradients, then float32 training."""
    import normlab
    from normlab.layers import Activation, Dense, Reshape
    from normlab.testing import check_model_gradients

    def build():
        model = normlab.Sequential([
            Dense(12, kernel_initializer=initializers.GlorotUniform(seed=0)),
            LayerNormalization(),
            Activation("tanh"),
            Reshape((3, 4)),
            GroupNormalization(groups=2),
            RMSNormalization(axis=[1, 2]),
            Reshape((12,)),
            Dense(3, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=1)),
        ])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        return model

    x = rng.standard_normal((16, 5))
    y = rng.integers(0, 3, 16)
    model = build()
    model(x)  # builds every layer in float64
    errs = check_model_gradients(model, x, y)
    assert len(errs) == 4 + 2 + 2 + 1 and max(errs.values()) < 1e-6, errs
    fused = kernel_path == "numba"
    for i in (1, 4, 5):  # the kernels' numba forward leaves its own named cache
        assert isinstance(model.layers[i]._cache, (K.RowNormCache, K.GroupRowsCache)) is fused
    model32 = build()  # float32, built by fit
    hist = model32.fit(x.astype(np.float32), y, epochs=30, batch_size=16, verbose=0, seed=0)
    assert hist.history["loss"][-1] < 0.8 * hist.history["loss"][0]


@pytest.mark.parametrize("cls,kw,shape", [
    (LayerNormalization, {}, (6, 10)),
    (LayerNormalization, {"axis": 1}, (4, 3, 5)),
    (RMSNormalization, {"axis": [1, 2]}, (4, 3, 5)),
    (GroupNormalization, {"groups": 2}, (3, 4, 4, 6)),
    (GroupNormalization, {"groups": 3, "axis": 1}, (3, 6, 4)),
    (InstanceNormalization, {"center": False}, (3, 5, 4)),
])
def test_model_step_path_is_the_public_path_in_kept_arrays(cls, kw, shape, rng):
    """``_train_forward`` / ``_train_backward`` (a model's step): the same bits as ``layer(x)`` / ``backward``,
    written into workspaces kept per input shape; the public calls return new arrays."""
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    pub, step = make(cls, **kw), make(cls, **kw)
    for layer in (pub, step):
        layer(x[:1])
    y_pub, dx_pub = pub(x, training=True), pub.backward(dy)
    y_step = step._train_forward(x)
    dx_step = step._train_backward(dy)
    np.testing.assert_array_equal(y_step, y_pub)
    np.testing.assert_array_equal(dx_step, dx_pub)
    for k in pub.grads:
        np.testing.assert_array_equal(step.grads[k], pub.grads[k])
    y2 = step._train_forward(x)
    assert np.shares_memory(y2, y_step) and np.shares_memory(step._train_backward(dy), dx_step)
    assert not np.shares_memory(pub(x, training=True), y_pub)
    assert step._train_backward(dy, need_dx=False) is None
    for k in pub.grads:  # three backward passes accumulated, against one
        np.testing.assert_allclose(step.grads[k], 3 * pub.grads[k], rtol=1e-6)


def test_input_shape_is_checked_once_per_new_shape(rng, monkeypatch):
    layer = LayerNormalization(name="ln_once")
    x = rng.standard_normal((4, 6))
    layer(x)
    calls = []
    monkeypatch.setattr(type(layer), "_check_sizes", lambda self, shape: calls.append(shape))
    for _ in range(3):
        layer(x, training=True)
        layer._train_forward(x)
    layer(rng.standard_normal((2, 6)))
    assert calls == [(2, 6)]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="ln_once"):
        layer._train_forward(rng.standard_normal((4, 5)))
