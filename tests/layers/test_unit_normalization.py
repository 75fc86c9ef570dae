"""UnitNormalization (Keras 3 numerics): kernel, layer, models (issue 20)."""

import json

import numpy as np
import pytest

import normlab
from normlab import InvalidParameterError, initializers
from normlab.kernels import _backend
from normlab.kernels import unitnorm as K
from normlab.layers import Dense, UnitNormalization, deserialize, serialize
from normlab.testing import check_layer_gradients, check_model_gradients, numerical_gradient, rel_error

# every test runs on the numba kernels (trailing axes) and on NumPy
pytestmark = pytest.mark.usefixtures("kernel_path")


def unit_ref(x, axes):
    """Keras's formula, written out in float64."""
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.maximum((x * x).sum(axis=axes, keepdims=True), 1e-12))


def squared_l2_norm(x):
    return float(np.sum(np.asarray(x, np.float64) ** 2))


# ------------------------------------------------ Keras's own test cases, ported
@pytest.mark.parametrize("kw,shape", [({"axis": -1}, (2, 3)), ({"axis": (1, 2)}, (1, 3, 3))])
def test_keras_basics_output_shape(kw, shape, rng):
    layer = UnitNormalization(**kw)
    y = layer(rng.standard_normal(shape))
    assert y.shape == shape and layer.compute_output_shape(shape) == shape
    assert layer.params == {} and layer.count_params() == 0


def test_keras_invalid_axis_type():
    with pytest.raises(TypeError, match="The 'axis' parameter of UnitNormalization must be an int or a non-empty list"):
        UnitNormalization(axis={"axis": -1})


def test_keras_correctness(rng):
    y = UnitNormalization(axis=-1)(rng.normal(size=(2, 3)))
    assert squared_l2_norm(y[0, :]) == pytest.approx(1.0, abs=1e-6)
    assert squared_l2_norm(y[1, :]) == pytest.approx(1.0, abs=1e-6)

    y = UnitNormalization(axis=(1, 2))(rng.normal(size=(2, 3, 3)))
    assert squared_l2_norm(y[0, :, :]) == pytest.approx(1.0, abs=1e-6)
    assert squared_l2_norm(y[1, :, :]) == pytest.approx(1.0, abs=1e-6)

    y = UnitNormalization(axis=1)(rng.normal(size=(2, 3, 2)))
    for n in range(2):
        for k in range(2):
            assert squared_l2_norm(y[n, :, k]) == pytest.approx(1.0, abs=1e-6)


def test_keras_docstring_example():
    """``np.arange(6).reshape(2, 3)``: the first row (0, 1, 2) scaled to unit norm."""
    y = UnitNormalization()(np.arange(6).reshape(2, 3))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0], np.array([0, 1, 2]) / np.sqrt(5), rtol=1e-6)
    assert squared_l2_norm(y[0]) == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------- formula, float64
AXES_CASES = [
    ((6, 5), -1),
    ((4, 3, 5), -1),
    ((4, 3, 5), 1),
    ((4, 3, 5), [1, 2]),
    ((2, 3, 4, 5), [1, 3]),
    ((2, 3, 4, 5), [-3, -2, -1]),
]


def _axes(shape, axis):
    nd = len(shape)
    return tuple(sorted(a % nd for a in ([axis] if isinstance(axis, int) else axis)))


@pytest.mark.parametrize("shape,axis", AXES_CASES)
def test_matches_keras_formula_float64(shape, axis, rng):
    x = rng.standard_normal(shape) * 3 + 1
    y = UnitNormalization(axis=axis)(x)
    np.testing.assert_allclose(y, unit_ref(x, _axes(shape, axis)), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("shape,axis", AXES_CASES)
def test_gradients_float64(shape, axis, rng):
    x = rng.standard_normal(shape) * 2 + 0.5
    errs = check_layer_gradients(UnitNormalization(axis=axis), x)
    assert set(errs) == {"x"}
    assert errs["x"] < 1e-7, errs


def test_gradients_elementwise_relative_error(rng):
    x = rng.standard_normal((3, 4, 5))
    dy = rng.standard_normal(x.shape)
    layer = UnitNormalization(axis=[1, 2])
    layer(x, training=True)
    dx = layer.backward(dy)
    num = numerical_gradient(lambda: float(np.sum(layer(x, training=True) * dy)), x)
    assert rel_error(dx, num) < 1e-6


def test_below_the_floor_the_output_is_x_times_1e6_and_so_is_the_gradient(rng):
    """Rows with sum(x^2) < 1e-12 are scaled by 1/sqrt(1e-12) = 1e6; the clamp passes no gradient to s."""
    x = rng.standard_normal((3, 4)) * 1e-8  # squared norms ~ 4e-16
    x[1] *= 1e9  # one row above the floor
    dy = rng.standard_normal(x.shape)
    layer = UnitNormalization()
    y = layer(x, training=True)
    dx = layer.backward(dy)
    small = [0, 2]
    np.testing.assert_allclose(y[small], x[small] * 1e6, rtol=1e-15)
    np.testing.assert_allclose(dx[small], dy[small] * 1e6, rtol=1e-15)
    np.testing.assert_allclose(y[1], unit_ref(x, 1)[1], rtol=1e-14)
    # the same with central differences, at a step small enough for these inputs
    num = numerical_gradient(lambda: float(np.sum(layer(x, training=True) * dy)), x, h=1e-10)
    np.testing.assert_allclose(dx[small], num[small], rtol=1e-5)


def test_gradient_is_tangent_to_the_sphere(rng):
    """``dx . x = 0`` for every sample: scaling an input does not change its output."""
    x = rng.standard_normal((8, 3, 7))
    dy = rng.standard_normal(x.shape)
    layer = UnitNormalization(axis=[1, 2])
    layer(x, training=True)
    dx = layer.backward(dy)
    dots = (dx * x).sum(axis=(1, 2)) / (np.abs(dx).sum(axis=(1, 2)) * np.abs(x).max())
    np.testing.assert_allclose(dots, 0.0, atol=1e-14)


def test_kernel_directional_derivative_on_a_larger_shape(rng):
    x = rng.standard_normal((6, 7, 8, 12)) + 1
    dy = rng.standard_normal(x.shape)
    d = rng.standard_normal(x.shape)
    h = 1e-6
    for axes in ((3,), (2, 3), (1,)):
        def f(xx):
            return float(np.sum(K.unit_norm_forward(xx, axes=axes)[0] * dy))

        _, cache = K.unit_norm_forward(x, axes=axes)
        dx = K.unit_norm_backward(dy, cache)
        num = (f(x + h * d) - f(x - h * d)) / (2 * h)
        assert abs(np.sum(dx * d) - num) < 1e-6 * abs(num) + 1e-8, axes


# ---------------------------------------------------------------- PyTorch
def _torch_run(torch, x, dy, dims):
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.normalize(tx, p=2.0, dim=dims, eps=1e-6)  # Keras's 1e-12, square-rooted
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("shape,axis,dims", [((16, 12), -1, -1), ((8, 5, 6), [1, 2], (1, 2)), ((4, 6, 5), 1, 1)])
def test_torch_normalize_float32(shape, axis, dims, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = UnitNormalization(axis=axis)
    y = layer(x, training=True)
    dx = layer.backward(dy)
    ty, tdx = _torch_run(torch, x, dy, dims)
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-6 * np.abs(ty).max())
    np.testing.assert_allclose(dx, tdx, rtol=1e-5, atol=1e-6 * np.abs(tdx).max())


def test_torch_normalize_float64_with_rows_below_the_floor(rng):
    """The epsilon conversion holds on both sides of the floor, to float64 rounding."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 10))
    x[::2] *= 1e-9  # norms ~ 3e-9 < 1e-6: torch divides by 1e-6, Keras multiplies by 1e6
    dy = rng.standard_normal(x.shape)
    layer = UnitNormalization()
    y = layer(x, training=True)
    dx = layer.backward(dy)
    ty, tdx = _torch_run(torch, x, dy, -1)
    np.testing.assert_allclose(y, ty, rtol=1e-14)
    np.testing.assert_allclose(dx, tdx, rtol=1e-13, atol=1e-13 * np.abs(tdx).max())


# ---------------------------------------------------- the two implementations
@pytest.mark.parametrize("axis,shape", [(-1, (37, 100)), ([2, 3], (3, 4, 5, 6)), (-1, (300, 7))])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_numba_kernels_match_numpy(axis, shape, dtype, tol, rng):
    if not _backend.NUMBA_AVAILABLE:
        pytest.skip("numba not installed")
    x = np.asfortranarray((rng.standard_normal(shape) * 3 + 2).astype(dtype))
    dy = rng.standard_normal(shape).astype(dtype)
    got = {}
    for use in (True, False):
        previous = _backend.use_numba(use)
        try:
            layer = UnitNormalization(axis=axis)
            y = layer(x, training=True)
            got[use] = (y, layer.backward(dy), layer._cache.rows)
        finally:
            _backend.use_numba(previous)
    assert got[True][2] and not got[False][2]  # each path ran
    for a, b in zip(got[True][:2], got[False][:2]):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_value_per_norm_gives_its_sign_and_a_zero_gradient(dtype, rng):
    """``M = 1``: ``y = sign(x)``, constant, so ``dx`` is 0 up to the rounding of ``r dy``."""
    x = (rng.standard_normal((6, 1)) * 3).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    layer = UnitNormalization()
    y = layer(x, training=True)
    np.testing.assert_allclose(y, np.sign(x), rtol=2 * np.finfo(dtype).eps)
    dx = layer.backward(dy)
    scale = np.abs(dy / x).max()  # r |dy|, the size of each of the two terms that cancel
    assert np.abs(dx).max() <= 4 * np.finfo(dtype).eps * scale


def test_numba_path_only_for_trailing_axes(rng):
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    for axis, rows in ((-1, True), ([1, 2], True), (1, False), ([1], False)):
        layer = UnitNormalization(axis=axis)
        layer(x, training=True)
        assert layer._cache.rows is (rows and _backend.numba_enabled()), axis


# ------------------------------------------------------------- layer state
def test_training_and_inference_compute_the_same_and_backward_needs_training(rng):
    x = rng.standard_normal((4, 5, 6))
    layer = UnitNormalization(axis=[1, 2])
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((4, 5, 6)))
    np.testing.assert_array_equal(layer(x, training=True), layer(x, training=False))
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((4, 5, 6)))


def test_non_normalized_and_normalized_axes_may_change_size_but_not_the_rank(rng):
    layer = UnitNormalization(name="un_rank")
    layer(rng.standard_normal((4, 3, 5)))
    y = layer(rng.standard_normal((2, 7, 9)))
    np.testing.assert_allclose((y.astype(np.float64) ** 2).sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="un_rank.*rank"):
        layer(rng.standard_normal((4, 3)))


def test_model_step_path_uses_workspaces_and_gives_the_same_bits(rng):
    """``_train_forward`` / ``_train_backward`` (a model's step) write into kept arrays; ``layer(x)`` does not."""
    x = rng.standard_normal((8, 6)).astype(np.float32)
    dy = rng.standard_normal((8, 6)).astype(np.float32)
    layer = UnitNormalization()
    y_pub = layer(x, training=True)
    dx_pub = layer.backward(dy)
    y1 = layer._train_forward(x)
    dx1 = layer._train_backward(dy)
    np.testing.assert_array_equal(y1, y_pub)
    np.testing.assert_array_equal(dx1, dx_pub)
    y1c, dx1c = y1.copy(), dx1.copy()
    y2 = layer._train_forward(x * 2)
    dx2 = layer._train_backward(dy * 2)
    assert np.shares_memory(y1, y2) and np.shares_memory(dx1, dx2)  # the same workspaces
    np.testing.assert_array_equal(y2, y1c)  # scaling x does not change its unit vector
    assert layer._train_backward(dy, need_dx=False) is None
    # the public path gives new arrays each time
    a, b = layer(x, training=True), layer(x, training=True)
    assert not np.shares_memory(a, b) and not np.shares_memory(a, y2)
    np.testing.assert_array_equal(dx1c, layer.backward(dy))
    # a new batch size gets a new workspace
    assert layer._train_forward(x[:3]).shape == (3, 6)


def test_config_round_trip_through_json(rng):
    layer = UnitNormalization(axis=(1, 2), name="un_cfg", dtype="float64")
    cfg = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(cfg)
    assert type(clone) is UnitNormalization
    assert clone.get_config() == layer.get_config() == {"axis": [1, 2], "name": "un_cfg", "trainable": True, "dtype": "float64"}
    x = rng.standard_normal((3, 4, 5))
    np.testing.assert_array_equal(layer(x), clone(x))
    assert UnitNormalization(axis=2).get_config()["axis"] == 2
    assert normlab.layers.get({"class_name": "UnitNormalization", "config": {"axis": -1}}).axis == -1


# -------------------------------------------------------------- bad inputs
def test_invalid_axis_values_generated_from_the_declared_constraint():
    for bad in UnitNormalization._param_constraints["axis"][0].invalid_examples():
        with pytest.raises(InvalidParameterError) as e:
            UnitNormalization(axis=bad)
        assert "The 'axis' parameter of UnitNormalization must be" in str(e.value)
    with pytest.raises(InvalidParameterError, match="'axis'"):
        UnitNormalization(axis=[1, True])


@pytest.mark.parametrize("axis,fragment", [(0, "batch axis"), (3, "out of range"), (-4, "out of range"), ([1, 1], "repeated"), ([1, 0], "batch axis")])
def test_wrong_axis_for_the_input_raises_at_build_naming_the_layer(axis, fragment, rng):
    layer = UnitNormalization(axis=axis, name="un_axis")
    with pytest.raises(ValueError) as e:
        layer(rng.standard_normal((4, 3, 2)))
    assert "un_axis" in str(e.value) and "UnitNormalization" in str(e.value) and fragment in str(e.value)
    assert not layer.built


def test_nan_makes_its_own_sample_nan_and_no_other(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    x[1, 2, 0] = np.nan
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for axis, bad in ((-1, (1, 2)), ([1, 2], (1,))):
        layer = UnitNormalization(axis=axis)
        y = layer(x, training=True)
        dx = layer.backward(dy)
        assert np.isnan(y[bad]).all() and np.isnan(dx[bad]).all(), axis
        finite = np.ones(y.shape, bool)
        finite[bad] = False
        assert np.isfinite(y[finite]).all() and np.isfinite(dx[finite]).all(), axis


def test_zero_sample_gives_zero_and_empty_batch(rng):
    layer = UnitNormalization()
    x = rng.standard_normal((3, 4))
    x[1] = 0.0
    y = layer(x, training=True)
    assert (y[1] == 0).all() and np.isfinite(layer.backward(np.ones((3, 4)))).all()
    assert layer(np.zeros((0, 4)), training=True).shape == (0, 4)
    assert layer.backward(np.zeros((0, 4))).shape == (0, 4)


# ------------------------------------------------------------------ models
def _layers(seed, dtype):
    return [
        Dense(8, activation="tanh", kernel_initializer=initializers.GlorotUniform(seed=seed), dtype=dtype),
        UnitNormalization(dtype=dtype),
        Dense(3, activation="softmax", kernel_initializer=initializers.GlorotUniform(seed=seed + 1), dtype=dtype),
    ]


def _sequential(seed=0, dtype=None):
    return normlab.Sequential(_layers(seed, dtype))


def _functional(seed=0, dtype=None):
    h = inp = normlab.Input((5,))
    for layer in _layers(seed, dtype):
        h = layer(h)
    return normlab.Model(inp, h)


def _data(rng, n=48):
    x = rng.standard_normal((n, 5))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    return x, y


@pytest.mark.parametrize("build", [_sequential, _functional])
def test_model_gradients_float64(build, rng):
    x, y = _data(rng, 12)
    model = build(dtype="float64")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    errs = check_model_gradients(model, x, y)
    assert len(errs) == 4 and max(errs.values()) < 1e-6, errs


def test_sequential_and_functional_train_with_fit_to_the_same_weights(rng, tmp_path):
    x, y = _data(rng)
    x = x.astype(np.float32)
    models = [_sequential(), _functional()]
    for m in models:
        m.compile(optimizer=normlab.optimizers.Adam(learning_rate=0.05), loss="sparse_categorical_crossentropy")
        hist = m.fit(x, y, epochs=25, batch_size=16, verbose=0, seed=0)
        assert hist.history["loss"][-1] < 0.7 * hist.history["loss"][0]
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    # saved and loaded, the model predicts the same and goes on training the same
    model = models[1]
    model.save(tmp_path / "un.npz")
    back = normlab.load_model(tmp_path / "un.npz")
    assert [type(layer).__name__ for layer in back.layers].count("UnitNormalization") == 1
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    back.fit(x, y, epochs=27, initial_epoch=25, batch_size=16, verbose=0, seed=0)
    model.fit(x, y, epochs=27, initial_epoch=25, batch_size=16, verbose=0, seed=0)
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
