"""WeightNormalization: w = g * v / ||v|| around a Dense layer (issue 5)."""

import json

import numpy as np
import pytest

from normlab import InvalidParameterError, initializers
from normlab.kernels import weightnorm as KW
from normlab.layers import Activation, Dense, WeightNormalization, deserialize, serialize
from normlab.testing import check_layer_gradients, numerical_gradient, rel_error


def wn(units=3, activation=None, use_bias=True, data_init=False, seed=0, **kw):
    dense = Dense(
        units, activation=activation, use_bias=use_bias,
        kernel_initializer=initializers.GlorotUniform(seed=seed),
        bias_initializer=initializers.RandomUniform(-0.5, 0.5, seed=seed + 1),
    )
    return WeightNormalization(dense, data_init=data_init, **kw)


# ---------------------------------------------------------------- the kernel
def test_kernel_forward_has_length_g_per_unit(rng):
    v = rng.standard_normal((5, 4))
    g = rng.uniform(0.5, 2.0, 4)
    w, _ = KW.weight_norm_forward(v, g)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), g, rtol=1e-14)
    np.testing.assert_allclose(w / np.linalg.norm(w, axis=0), v / np.linalg.norm(v, axis=0), rtol=1e-14)
    # a 4-D (convolution-shaped) kernel: norm over every axis but the last
    v4 = rng.standard_normal((3, 3, 2, 4))
    w4, _ = KW.weight_norm_forward(v4, g)
    np.testing.assert_allclose(np.sqrt((w4**2).sum(axis=(0, 1, 2))), g, rtol=1e-14)


@pytest.mark.parametrize("shape", [(5, 4), (3, 3, 2, 4)])
def test_kernel_backward_central_differences_and_orthogonality(shape, rng):
    v = rng.standard_normal(shape)
    g = rng.uniform(0.5, 2.0, shape[-1])
    dw = rng.standard_normal(shape)
    _, cache = KW.weight_norm_forward(v, g)
    dv, dg = KW.weight_norm_backward(dw, cache)
    f = lambda: float(np.sum(KW.weight_norm_forward(v, g)[0] * dw))  # noqa: E731
    assert rel_error(dv, numerical_gradient(f, v)) < 1e-7
    assert rel_error(dg, numerical_gradient(f, g)) < 1e-7
    # the documented forms: dg = sum(dw * v)/||v||, dv orthogonal to v per unit
    axes = tuple(range(len(shape) - 1))
    norm = np.sqrt((v**2).sum(axis=axes))
    np.testing.assert_allclose(dg, (dw * v).sum(axis=axes) / norm, rtol=1e-12)
    np.testing.assert_allclose((dv * v).sum(axis=axes), 0.0, atol=1e-12)


# --------------------------------------------------------- layer gradients
@pytest.mark.parametrize("activation", [None, "tanh", "sigmoid", "selu"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 4)])
def test_gradients_float64_central_differences(activation, use_bias, shape, rng):
    x = rng.standard_normal(shape)
    layer = wn(3, activation=activation, use_bias=use_bias)
    errs = check_layer_gradients(layer, x)
    assert set(errs) == {"x", "v", "g"} | ({"bias"} if use_bias else set())
    assert max(errs.values()) < 1e-6, errs


def test_gradients_after_data_dependent_init(rng):
    layer = wn(4, activation="tanh", data_init=True)
    x = rng.standard_normal((8, 5))
    layer(x, training=True)  # initializes g and bias from this batch
    assert layer.buffers["initialized"][0] == 1
    errs = check_layer_gradients(layer, x)
    assert max(errs.values()) < 1e-6, errs
    dy = rng.standard_normal((8, 4))
    layer(x, training=True)
    dx = layer.backward(dy)
    num = numerical_gradient(lambda: float(np.sum(layer(x, training=True) * dy)), x)
    assert rel_error(dx, num) < 1e-6  # elementwise, every entry


def test_effective_kernel_and_initial_state(rng):
    layer = wn(3, data_init=False)
    x = rng.standard_normal((5, 4))
    y = layer(x)
    v = layer.params["v"]
    # g starts at ||v||: w is the wrapped layer's initial kernel
    np.testing.assert_allclose(layer.params["g"], np.linalg.norm(v, axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.kernel, v, rtol=1e-12)
    np.testing.assert_allclose(y, x @ v + layer.params["bias"], rtol=1e-12)
    assert set(layer.params) == {"v", "g", "bias"} == set(layer.grads)
    assert layer.params["v"].shape == (4, 3) and layer.params["g"].shape == (3,)
    assert "initialized" not in layer.buffers


def test_wrapping_a_built_dense_takes_over_its_weights(rng):
    dense = Dense(3, activation="relu")
    x = rng.standard_normal((6, 4))
    y_dense = dense(x)
    layer = WeightNormalization(dense, data_init=False)
    np.testing.assert_allclose(layer(x), y_dense, rtol=1e-12, atol=1e-12)


def test_remove_returns_the_dense_with_the_effective_kernel(rng):
    layer = wn(3, activation="tanh", data_init=True)
    x = rng.standard_normal((10, 4))
    y = layer(x, training=True)
    layer.params["v"] *= 3.0  # direction unchanged, length kept by g
    dense = layer.remove()
    assert isinstance(dense, Dense)
    np.testing.assert_allclose(dense(x), y, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------- PyTorch reference
def test_torch_weight_norm_float32(rng):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import weight_norm

    x = rng.standard_normal((16, 5)).astype(np.float32)
    dy = rng.standard_normal((16, 3)).astype(np.float32)
    layer = wn(3, activation="tanh", data_init=False, dtype="float32")
    layer.build_from_shape((None, 5))
    layer.params["g"][:] = [0.5, 1.0, 2.0]
    y = layer(x, training=True)
    dx = layer.backward(dy)

    lin = torch.nn.Linear(5, 3)
    lin = weight_norm(lin, name="weight", dim=0)  # norm per output row of (units, n_in)
    with torch.no_grad():
        # torch's weight is kernel.T: v -> original1 = v.T, g -> original0 = g[:, None]
        lin.parametrizations.weight.original0.copy_(torch.tensor(layer.params["g"][:, None]))
        lin.parametrizations.weight.original1.copy_(torch.tensor(layer.params["v"].T))
        lin.bias.copy_(torch.tensor(layer.params["bias"]))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tanh(lin(tx))
    ty.backward(torch.tensor(dy))
    p = lin.parametrizations.weight

    def close(a, b):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())

    close(y, ty.detach().numpy())
    close(dx, tx.grad.numpy())
    close(layer.kernel, lin.weight.detach().numpy().T)
    close(layer.grads["v"], p.original1.grad.numpy().T)
    close(layer.grads["g"], p.original0.grad.numpy()[:, 0])
    close(layer.grads["bias"], lin.bias.grad.numpy())


# ----------------------------------------------------- data-dependent init
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(256, 10), (32, 8, 10)])
def test_data_init_gives_zero_mean_unit_variance_preactivations(dtype, shape, rng):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    layer = WeightNormalization(Dense(6, activation="relu"), dtype=dtype)
    a = layer(x, training=True)
    z = layer.logits.astype(np.float64).reshape(-1, 6)
    tol = 1e-10 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=tol)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=tol)
    # the activation still applies
    np.testing.assert_array_equal(a, np.maximum(layer.logits, 0))
    # the paper's formulas, with t = x . v/||v||
    v = layer.params["v"].astype(np.float64)
    t = (x.astype(np.float64) @ (v / np.linalg.norm(v, axis=0))).reshape(-1, 6)
    np.testing.assert_allclose(layer.params["g"], 1 / t.std(axis=0), rtol=10 * tol)
    np.testing.assert_allclose(layer.params["bias"], -t.mean(axis=0) / t.std(axis=0), rtol=10 * tol, atol=tol)


def test_data_init_happens_once_and_only_in_training(rng):
    layer = WeightNormalization(Dense(4))
    x1 = rng.standard_normal((50, 3))
    layer(x1, training=False)  # inference does not initialize
    assert layer.buffers["initialized"][0] == 0
    layer(x1, training=True)
    g1 = layer.params["g"].copy()
    layer(rng.standard_normal((50, 3)) * 5, training=True)  # a second batch does not re-initialize
    np.testing.assert_array_equal(layer.params["g"], g1)
    # a clone with the buffer loaded does not redo it either
    clone = deserialize(json.loads(json.dumps(serialize(layer))))
    clone.build_from_shape((None, 3))
    for k in layer.params:
        clone.params[k][...] = layer.params[k]
    clone.buffers["initialized"][...] = layer.buffers["initialized"]
    clone(rng.standard_normal((50, 3)), training=True)
    np.testing.assert_array_equal(clone.params["g"], g1)


def test_data_init_without_bias_sets_unit_variance_only(rng):
    x = rng.standard_normal((200, 5)) + 2
    layer = WeightNormalization(Dense(3, use_bias=False))
    layer(x, training=True)
    assert "bias" not in layer.params
    np.testing.assert_allclose(layer.logits.std(axis=0), 1.0, rtol=1e-10)


def test_data_init_false_and_frozen_skip_it(rng):
    x = rng.standard_normal((20, 3)) * 10
    a = wn(4, data_init=False)
    a(x, training=True)
    np.testing.assert_allclose(a.params["g"], np.linalg.norm(a.params["v"], axis=0))
    b = wn(4, data_init=True, trainable=False)
    b(x, training=True)
    np.testing.assert_allclose(b.params["g"], np.linalg.norm(b.params["v"], axis=0))
    assert b.buffers["initialized"][0] == 0


def test_data_init_on_a_degenerate_batch_raises(rng):
    layer = WeightNormalization(Dense(2), name="wn_one")
    with pytest.raises(ValueError, match="wn_one.*at least 2"):
        layer(rng.standard_normal((1, 3)), training=True)
    with pytest.raises(ValueError, match="wn_one.*zero variance"):
        layer(np.ones((4, 3)), training=True)
    assert not layer.built  # a failed first call leaves the layer unbuilt (nothing initialized)
    layer(rng.standard_normal((4, 3)), training=True)
    assert layer.buffers["initialized"][0] == 1


def test_sgd_on_a_regression_problem_decreases_the_loss(rng):
    x = rng.standard_normal((128, 4))
    y = np.tanh(x @ rng.standard_normal((4, 2)) + 0.3)
    layer = WeightNormalization(Dense(2, activation="tanh"), dtype="float64")
    losses = []
    for _ in range(100):
        out = layer(x, training=True)
        losses.append(float(np.mean((out - y) ** 2)))
        layer.zero_grads()
        layer.backward(2 * (out - y) / out.size)
        for k, p in layer.params.items():
            p -= 0.5 * layer.grads[k]
    assert losses[-1] < 0.1 * losses[0]


# --------------------------------------------------------------- state & api
def test_logits_and_backward_from_logits_for_fused_losses(rng):
    layer = wn(3, activation="softmax")
    assert layer.activation == "softmax"
    x = rng.standard_normal((5, 4))
    p = layer(x, training=True)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    dz = rng.standard_normal((5, 3))
    dx = layer.backward_from_logits(dz)
    ref = wn(3)  # linear, same seeds: same weights
    ref(x, training=True)
    np.testing.assert_allclose(dx, ref.backward(dz), rtol=1e-12)
    for k in ref.grads:
        np.testing.assert_allclose(layer.grads[k], ref.grads[k], rtol=1e-12)
    assert layer.backward_from_logits(dz, need_dx=False) is None


def test_backward_without_training_forward_raises(rng):
    layer = wn(2)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((2, 2)))
    layer(rng.standard_normal((3, 4)), training=False)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward_from_logits(np.ones((3, 2)))


def test_input_size_mismatch_after_build_names_the_layer(rng):
    layer = WeightNormalization(Dense(2), name="wn_shape")
    layer(rng.standard_normal((3, 4)), training=True)
    with pytest.raises(ValueError) as e:
        layer(rng.standard_normal((3, 5)))
    msg = str(e.value)
    assert "wn_shape" in msg and "WeightNormalization" in msg and "4" in msg and "(3, 5)" in msg
    with pytest.raises(ValueError, match="wn_shape.*rank"):
        layer(rng.standard_normal((3, 1, 4)))


def test_regularizers_of_the_wrapped_layer_apply_to_v_and_bias(rng):
    layer = WeightNormalization(Dense(3, kernel_regularizer="l2", bias_regularizer="l1"), data_init=False)
    layer(rng.standard_normal((4, 2)))
    assert layer.regularization_loss() > 0
    assert set(layer._regularizers) == {"v", "bias"}


def test_config_round_trip_through_json(rng):
    dense = Dense(
        3, activation="tanh", kernel_initializer=initializers.GlorotNormal(seed=4),
        kernel_regularizer="l2", name="inner_dense",
    )
    layer = WeightNormalization(dense, data_init=False, name="wn_cfg")
    cfg = json.loads(json.dumps(serialize(layer)))
    assert cfg["config"]["layer"]["class_name"] == "Dense"
    clone = deserialize(cfg)
    assert type(clone) is WeightNormalization and type(clone.layer) is Dense
    assert clone.layer is not dense and clone.layer.get_config() == dense.get_config()
    assert clone.get_config() == layer.get_config()
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(clone(x), layer(x), rtol=1e-12)  # seeded initializer: same weights


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"layer": Activation("relu")}, "The 'layer' parameter of WeightNormalization must be a Dense, Conv1D or Conv2D layer."),
        ({"layer": "dense"}, "'layer'"),
        ({"layer": Dense(2), "data_init": "yes"}, "The 'data_init' parameter of WeightNormalization must be a bool. Got 'yes' instead."),
        ({"layer": Dense(2), "name": 3}, "'name'"),
    ],
)
def test_invalid_hyperparameters_rejected_at_construction(kwargs, message):
    with pytest.raises(InvalidParameterError) as e:
        WeightNormalization(**kwargs)
    assert message in str(e.value)


def test_model_file_round_trip_keeps_weights_and_the_init_flag(tmp_path, rng):
    pytest.importorskip("normlab.optimizers")  # the model file module needs it
    from normlab import Sequential
    from normlab.layers import GroupNormalization, LayerNormalization, RMSNormalization
    from normlab.models import load_model, save_model

    model = Sequential([
        WeightNormalization(Dense(4, activation="tanh")), LayerNormalization(),
        GroupNormalization(groups=2), WeightNormalization(Dense(3), data_init=False), RMSNormalization(),
    ])
    model.build((None, 5), seed=1)
    x = rng.standard_normal((20, 5)).astype(np.float32)
    model.layers[0](x, training=True)  # data-dependent init
    save_model(model, tmp_path / "m.nlz")
    clone = load_model(tmp_path / "m.nlz")
    assert [type(l) for l in clone.layers] == [type(l) for l in model.layers]
    assert clone.layers[0].buffers["initialized"][0] == 1
    for a, b in zip(model.layers, clone.layers):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    g = clone.layers[0].params["g"].copy()
    clone.layers[0](x * 3, training=True)  # no second initialization
    np.testing.assert_array_equal(clone.layers[0].params["g"], g)
