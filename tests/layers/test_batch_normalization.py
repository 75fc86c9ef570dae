"""BatchNormalization: what must hold (issue 2)."""

import json

import numpy as np
import pytest

from normlab import initializers
from normlab.layers import BatchNormalization, deserialize, serialize
from normlab.testing import check_layer_gradients, numerical_gradient, rel_error


# every test runs on the fused numba kernels and on the NumPy kernels
pytestmark = pytest.mark.usefixtures("kernel_path")


def bn(**kw):
    """A BN layer with well-scaled random gamma/beta so that gradients are O(1)."""
    kw.setdefault("gamma_initializer", initializers.RandomUniform(0.5, 1.5, seed=1))
    kw.setdefault("beta_initializer", initializers.RandomUniform(-0.5, 0.5, seed=2))
    return BatchNormalization(**kw)


CASES = [
    ((8, 5), -1),
    ((8, 5), 1),
    ((3, 4, 5, 6), -1),  # channels-last image batch
    ((3, 4, 5, 6), 3),
    ((3, 6, 4, 5), 1),  # channels-first layout via axis=1
    ((4, 7, 3), -1),  # sequences
    # the numba kernels sum four rows at a time: these row counts (7, 15, 2)
    # also run the remainder loop, alone or after full blocks
    ((7, 5), -1),
    ((5, 3, 3), -1),
    ((2, 4), -1),
]


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_gradients_float64_central_differences(shape, axis, center, scale, rng):
    x = rng.standard_normal(shape) * 2.0 + 1.0
    layer = bn(axis=axis, center=center, scale=scale)
    errs = check_layer_gradients(layer, x)
    assert set(errs) == {"x"} | ({"gamma"} if scale else set()) | ({"beta"} if center else set())
    for k, e in errs.items():
        assert e < 1e-6, (k, e)


@pytest.mark.parametrize("shape", [(m, 6) for m in range(2, 10)] + [(1101, 60), (20, 8, 8, 60)])
def test_numba_and_numpy_kernels_agree_for_every_row_remainder(shape):
    """The numba kernels' blocked loops give the NumPy kernels' results for any batch size.

    Sums run over four rows at a time; the elementwise passes over many rows of
    few features run in blocks of several rows ((1101, 60): a partial last block).
    """
    from normlab.kernels import _backend

    if not _backend.NUMBA_AVAILABLE:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(shape[0])
    x = rng.standard_normal(shape) * 3 + 5  # an offset, so that the shifted sums matter
    dy = rng.standard_normal(shape)
    out = {}
    for use in (True, False):
        previous = _backend.use_numba(use)
        try:
            layer = bn()
            y = layer(x, training=True)
            dx = layer.backward(dy)
            out[use] = (y, dx, layer.grads["gamma"].copy(), layer.grads["beta"].copy(),
                        layer.buffers["moving_mean"].copy(), layer.buffers["moving_variance"].copy())
        finally:
            _backend.use_numba(previous)
    for a, b in zip(out[True], out[False]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,axis", [((16, 6), -1), ((4, 3, 3, 5), -1)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_float32_layer_matches_float64_reference(shape, axis, center, scale, rng):
    """The float32 path gives the float64 output and gradients to float32 precision."""
    x64 = rng.standard_normal(shape) * 3 + 2
    dy64 = rng.standard_normal(shape)
    l32 = bn(axis=axis, center=center, scale=scale, dtype="float32")
    l64 = bn(axis=axis, center=center, scale=scale, dtype="float64")
    y32 = l32(x64.astype(np.float32), training=True)
    y64 = l64(x64, training=True)
    assert y32.dtype == np.float32 and y64.dtype == np.float64
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    dx32 = l32.backward(dy64.astype(np.float32))
    dx64 = l64.backward(dy64)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-5)
    for k in l64.grads:
        np.testing.assert_allclose(l32.grads[k], l64.grads[k], rtol=1e-4, atol=1e-4)
    # and the float64 gradient itself is the central-difference one
    num = numerical_gradient(lambda: float(np.sum(l64(x64, training=True) * dy64)), x64)
    assert rel_error(dx64, num) < 1e-6


@pytest.mark.parametrize("order", ["C", "F"])
def test_fortran_ordered_input(order, rng):
    x = np.asarray(rng.standard_normal((10, 4)), order=order)
    layer = bn()
    y = layer(x, training=True)
    ref = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3) * layer.params["gamma"] + layer.params["beta"]
    np.testing.assert_allclose(y, ref, rtol=1e-12)


def test_torch_batch_norm_reference_float32(rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((32, 6, 5, 7)) * 2 + 0.5).astype(np.float32)  # NCHW for torch
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = bn(axis=1, epsilon=1e-3, momentum=0.9)
    y = layer(x, training=True)
    dx = layer.backward(dy)

    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(layer.params["gamma"], requires_grad=True)
    tb = torch.tensor(layer.params["beta"], requires_grad=True)
    rm, rv = torch.zeros(6), torch.ones(6)
    # torch's momentum weights the new value: torch_momentum = 1 - keras_momentum
    ty = torch.nn.functional.batch_norm(tx, rm, rv, tg, tb, training=True, momentum=0.1, eps=1e-3)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(layer.grads["gamma"], tg.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grads["beta"], tb.grad.numpy(), rtol=1e-5, atol=1e-4)
    # moving mean: same update in both conventions
    np.testing.assert_allclose(layer.buffers["moving_mean"], rm.numpy(), rtol=1e-5, atol=1e-6)
    # moving variance: Keras stores the biased batch variance, torch the unbiased one
    m = x.shape[0] * x.shape[2] * x.shape[3]
    keras_from_torch = 0.9 * 1.0 + 0.1 * ((rv.numpy() - 0.9) / 0.1) * (m - 1) / m
    np.testing.assert_allclose(layer.buffers["moving_variance"], keras_from_torch, rtol=1e-5)


def test_moving_statistics_follow_keras_update_by_hand(rng):
    layer = BatchNormalization(momentum=0.8)
    mm, mv = np.zeros(3), np.ones(3)
    for _ in range(4):
        x = rng.standard_normal((20, 3)) * [1, 2, 3] + [0, 5, -5]
        layer(x, training=True)
        mm = 0.8 * mm + 0.2 * x.mean(0)
        mv = 0.8 * mv + 0.2 * x.var(0)  # biased variance
    np.testing.assert_allclose(layer.buffers["moving_mean"], mm, rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["moving_variance"], mv, rtol=1e-12)
    # inference uses them
    x = rng.standard_normal((5, 3))
    np.testing.assert_allclose(layer(x, training=False), (x - mm) / np.sqrt(mv + 1e-3), rtol=1e-12)


def test_worked_example_without_epsilon_truncates_to_the_table():
    # the table prints sqrt(3/2) = 1.2247... truncated to 1.224
    x = np.array([[1.0, 3.0, 2.0], [2.0, 4.0, 3.0], [3.0, 5.0, 4.0]])
    y = BatchNormalization(epsilon=1e-12)(x, training=True)
    np.testing.assert_array_equal(np.trunc(y * 1000) / 1000, [[-1.224] * 3, [0.0] * 3, [1.224] * 3])


def test_worked_example_of_the_notes():
    """004_4fe5f238090a0eab.txt: 3 samples x 3 features, gamma=(1.5, 1, 0.5), beta=(0.5, 0, -0.5).

    With Keras's default epsilon (1e-3) every entry of the table is reproduced to 1e-3.
    """
    x = np.array([[1.0, 3.0, 2.0], [2.0, 4.0, 3.0], [3.0, 5.0, 4.0]])
    layer = BatchNormalization(
        gamma_initializer=initializers.Constant(1.0),
        beta_initializer="zeros",
    )
    normalized = layer(x, training=True)
    table_normalized = np.array([[-1.224] * 3, [0.0] * 3, [1.224] * 3])
    np.testing.assert_allclose(normalized, table_normalized, atol=1e-3)
    layer.params["gamma"][:] = [1.5, 1.0, 0.5]
    layer.params["beta"][:] = [0.5, 0.0, -0.5]
    scaled = layer(x, training=True)
    table_scaled = np.array(
        [[-1.336, -1.224, -1.112], [0.5, 0.0, -0.5], [2.336, 1.224, 0.112]]
    )
    np.testing.assert_allclose(scaled, table_scaled, atol=1e-3)


@pytest.mark.parametrize("shape,axis", [((12, 4), -1), ((3, 4, 4, 5), -1), ((3, 5, 4, 4), 1)])
def test_momentum_zero_inference_reproduces_training_output(shape, axis, rng):
    x = rng.standard_normal(shape) * 4 - 1
    layer = bn(axis=axis, momentum=0.0)
    y_train = layer(x, training=True)
    y_inf = layer(x, training=False)
    np.testing.assert_allclose(y_inf, y_train, rtol=1e-10, atol=1e-12)


def test_batch_of_one_in_training_raises_and_inference_works(rng):
    layer = BatchNormalization(name="bn_one")
    layer(rng.standard_normal((4, 3)), training=True)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    with pytest.raises(ValueError) as e:
        layer(rng.standard_normal((1, 3)), training=True)
    msg = str(e.value)
    assert "bn_one" in msg and "(1, 3)" in msg
    for k in before:
        np.testing.assert_array_equal(layer.buffers[k], before[k])
    y = layer(rng.standard_normal((1, 3)), training=False)
    assert y.shape == (1, 3) and np.isfinite(y).all()


def test_batch_of_one_image_has_spatial_statistics(rng):
    # one image still has H*W values per channel: training works (as in PyTorch)
    y = BatchNormalization()(rng.standard_normal((1, 4, 4, 2)), training=True)
    np.testing.assert_allclose(y.reshape(-1, 2).mean(0), 0, atol=1e-12)


def test_large_offset_float32_normalizes_to_unit_variance(rng):
    x = (1e4 + rng.standard_normal((4096, 64))).astype(np.float32)
    y = BatchNormalization(epsilon=1e-6)(x, training=True)
    assert y.dtype == np.float32
    var = y.astype(np.float64).var(0)
    np.testing.assert_allclose(var, 1.0, atol=1e-3)
    np.testing.assert_allclose(y.astype(np.float64).mean(0), 0.0, atol=1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_raises_and_keeps_moving_statistics(bad, rng):
    layer = BatchNormalization(name="bn_nan")
    layer(rng.standard_normal((8, 3)), training=True)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    x = rng.standard_normal((8, 3))
    x[2, 1] = bad
    with pytest.raises(ValueError, match="bn_nan.*NaN or inf"):
        layer(x, training=True)
    for k in before:
        np.testing.assert_array_equal(layer.buffers[k], before[k])


def test_other_size_along_axis_after_build_raises(rng):
    layer = BatchNormalization(axis=-1, name="bn_size")
    layer(rng.standard_normal((4, 2, 2, 8)), training=True)
    with pytest.raises(ValueError) as e:
        layer(rng.standard_normal((4, 2, 2, 6)), training=False)
    msg = str(e.value)
    assert "bn_size" in msg and "axis 3" in msg and "8" in msg and "6" in msg


def test_rank_change_after_build_raises(rng):
    layer = BatchNormalization()
    layer(rng.standard_normal((4, 3)), training=True)
    with pytest.raises(ValueError, match="rank"):
        layer(rng.standard_normal((4, 1, 3)), training=True)


@pytest.mark.parametrize("axis", [0, 2, -3, [1, 1]])
def test_invalid_axis_for_input_raises(axis, rng):
    with pytest.raises(ValueError, match="axis"):
        BatchNormalization(axis=axis)(rng.standard_normal((4, 3)), training=True)


def test_trainable_false_is_inference_mode_and_frozen(rng):
    layer = bn(momentum=0.5)
    layer(rng.standard_normal((16, 3)) + 2, training=True)
    state = {k: v.copy() for k, v in {**layer.params, **layer.buffers}.items()}
    layer.trainable = False
    assert layer.trainable_params == {}
    x = rng.standard_normal((16, 3))
    y_inference = layer(x, training=False)
    y = layer(x, training=True)
    np.testing.assert_allclose(y, y_inference)
    for k, v in {**layer.params, **layer.buffers}.items():
        np.testing.assert_array_equal(v, state[k])
    dx = layer.backward(np.ones_like(y))
    g = layer.params["gamma"] / np.sqrt(layer.buffers["moving_variance"] + layer.epsilon)
    np.testing.assert_allclose(dx, np.broadcast_to(g, x.shape))
    assert all((v == 0).all() for v in layer.grads.values())


def test_backward_without_training_forward_raises(rng):
    layer = BatchNormalization()
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((2, 2)))
    layer(rng.standard_normal((4, 2)), training=False)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((4, 2)))


def test_backward_accumulates_into_grads(rng):
    layer = bn()
    x, dy = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    layer(x, training=True)
    layer.backward(dy)
    g1 = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(dy)
    for k in g1:
        np.testing.assert_allclose(layer.grads[k], 2 * g1[k])
    layer.zero_grads()
    assert all((v == 0).all() for v in layer.grads.values())


def test_params_buffers_keys_and_shapes(rng):
    layer = BatchNormalization(axis=1)
    layer(rng.standard_normal((2, 5, 3, 3)), training=False)
    assert set(layer.params) == {"gamma", "beta"} == set(layer.grads)
    assert set(layer.buffers) == {"moving_mean", "moving_variance"}
    assert all(v.shape == (5,) for v in {**layer.params, **layer.buffers}.values())
    assert set(BatchNormalization(center=False, scale=False).get_config()) >= {"center", "scale"}


def test_config_round_trip_through_json(rng):
    layer = BatchNormalization(
        axis=[1, 2], momentum=0.9, epsilon=1e-5, center=False, gamma_regularizer="l2",
        gamma_initializer=initializers.RandomNormal(1.0, 0.1, seed=3), name="bn_cfg",
    )
    cfg = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(cfg)
    assert type(clone) is BatchNormalization
    assert clone.get_config() == layer.get_config()
    x = rng.standard_normal((4, 3, 2, 5))
    a, b = layer(x, training=True), clone(x, training=True)
    np.testing.assert_allclose(a, b)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"momentum": 1.5}, "The 'momentum' parameter of BatchNormalization must be a float in the range [0, 1]. Got 1.5 instead."),
        ({"momentum": -0.1}, "'momentum'"),
        ({"epsilon": -1e-3}, "'epsilon'"),
        ({"center": "yes"}, "'center'"),
        ({"axis": 1.5}, "'axis'"),
        ({"gamma_initializer": "no_such_init"}, "Unknown initializer"),
    ],
)
def test_invalid_hyperparameters_rejected_at_construction(kwargs, fragment):
    with pytest.raises(ValueError) as e:
        BatchNormalization(**kwargs)
    assert fragment in str(e.value)


def test_momentum_zero_and_int_accepted():
    assert BatchNormalization(momentum=0).momentum == 0.0
    assert BatchNormalization(momentum=1).momentum == 1.0
