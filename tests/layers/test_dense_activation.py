"""Dense and Activation: gradients, activations against references, config, errors."""

import json
import math

import numpy as np
import pytest

from normlab import activations, initializers
from normlab.layers import Activation, Dense, deserialize, serialize
from normlab.testing import check_layer_gradients

# every test runs on the fused numba kernels and on the NumPy kernels
pytestmark = pytest.mark.usefixtures("kernel_path")

ACTS = ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "softmax"]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_gradients(act, use_bias, rng):
    # inputs kept away from relu's kink at 0 (where the derivative is undefined)
    x = rng.standard_normal((5, 4))
    layer = Dense(3, activation=act, use_bias=use_bias, bias_initializer=initializers.RandomUniform(seed=0))
    errs = check_layer_gradients(layer, x)
    assert set(errs) == {"x", "kernel"} | ({"bias"} if use_bias else set())
    assert max(errs.values()) < 1e-6, errs


def test_dense_on_3d_input_acts_on_last_axis(rng):
    layer = Dense(2)
    x = rng.standard_normal((3, 4, 5))
    y = layer(x, training=True)
    np.testing.assert_allclose(y, x @ layer.params["kernel"] + layer.params["bias"])
    errs = check_layer_gradients(layer, x)
    assert max(errs.values()) < 1e-6


@pytest.mark.parametrize("act", ACTS)
def test_activation_layer_gradients(act, rng):
    errs = check_layer_gradients(Activation(act), rng.standard_normal((4, 6)) * 2)
    assert errs["x"] < 1e-6


def _torch_act(torch, name, t):
    F = torch.nn.functional
    return {
        "linear": lambda: t,
        "sigmoid": lambda: torch.sigmoid(t),
        "tanh": lambda: torch.tanh(t),
        "relu": lambda: F.relu(t),
        "leaky_relu": lambda: F.leaky_relu(t, 0.2),  # Keras 3 default slope 0.2 (torch: 0.01)
        "elu": lambda: F.elu(t),
        "selu": lambda: F.selu(t),
        "gelu": lambda: F.gelu(t),  # exact erf form in both
        "softmax": lambda: F.softmax(t, dim=-1),
    }[name]()


@pytest.mark.parametrize("act", ACTS)
def test_activations_match_torch(act, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 5)) * 3
    k = activations.get(act)
    t = torch.tensor(x, requires_grad=True)
    ty = _torch_act(torch, act, t)
    da = rng.standard_normal(x.shape)
    ty.backward(torch.tensor(da))
    a = k.forward(x.copy())
    np.testing.assert_allclose(a, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k.backward(da, x, a), t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_sigmoid_and_softmax_are_stable_for_extreme_inputs():
    z = np.array([[-1000.0, 0.0, 1000.0]])
    np.testing.assert_allclose(activations.sigmoid(z), [[0.0, 0.5, 1.0]])
    np.testing.assert_allclose(activations.softmax(z), [[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(activations.gelu(np.array([1.0])), [0.5 * (1 + math.erf(1 / math.sqrt(2)))])


def test_dense_shape_mismatch_after_build(rng):
    layer = Dense(3, name="d_in")
    layer(rng.standard_normal((2, 4)))
    with pytest.raises(ValueError, match="d_in.*4 input features"):
        layer(rng.standard_normal((2, 5)))


def test_dense_rank_one_input_rejected():
    with pytest.raises(ValueError, match="rank >= 2"):
        Dense(3)(np.ones(4))


def test_string_input_rejected():
    with pytest.raises(TypeError, match="real numbers"):
        Dense(3)(np.array([["a", "b"]]))


def test_dense_backward_before_forward_raises():
    with pytest.raises(RuntimeError):
        Dense(2).backward(np.ones((1, 2)))


def test_dense_dy_shape_checked(rng):
    layer = Dense(2)
    layer(rng.standard_normal((3, 4)), training=True)
    with pytest.raises(ValueError, match="shape of the last output"):
        layer.backward(np.ones((3, 3)))


def test_frozen_dense_gets_no_gradients(rng):
    layer = Dense(2, trainable=False)
    layer(rng.standard_normal((3, 4)), training=True)
    layer.backward(np.ones((3, 2)))
    assert all((g == 0).all() for g in layer.grads.values())
    assert layer.trainable_params == {}


def test_dtype_follows_first_input_or_argument(rng):
    assert Dense(2)(rng.standard_normal((2, 3)).astype(np.float32)).dtype == np.float32
    assert Dense(2)(rng.standard_normal((2, 3))).dtype == np.float64
    assert Dense(2, dtype="float32")(rng.standard_normal((2, 3))).dtype == np.float32
    assert Dense(2)(np.ones((2, 3), dtype=np.int64)).dtype == np.float32


@pytest.mark.parametrize(
    "layer",
    [
        Dense(4, activation="tanh", use_bias=False, kernel_initializer="he_normal", kernel_regularizer="l2", name="dx"),
        Dense(3, kernel_initializer=initializers.GlorotNormal(seed=4), bias_regularizer={"class_name": "L1", "config": {"l1": 0.5}}),
        Activation("softmax", name="act"),
    ],
)
def test_config_round_trip(layer):
    cfg = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(cfg)
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"units": 0}, "'units' parameter of Dense must be an int in the range [1, inf)"),
        ({"units": 2.5}, "'units'"),
        ({"units": 3, "activation": "swishy"}, "'activation'"),
        ({"units": 3, "use_bias": 1}, "'use_bias'"),
        ({"units": 3, "kernel_initializer": 5}, "'kernel_initializer'"),
        ({"units": 3, "kernel_regularizer": "l3"}, "Unknown regularizer"),
    ],
)
def test_dense_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError) as e:
        Dense(**kwargs)
    assert match in str(e.value)


def test_regularizer_penalty_and_gradient(rng):
    layer = Dense(3, kernel_regularizer={"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.2}})
    layer(rng.standard_normal((2, 4)), training=True)
    w = layer.params["kernel"]
    assert layer.regularization_loss() == pytest.approx(0.1 * np.abs(w).sum() + 0.2 * (w**2).sum())
    layer.add_regularization_grads()
    np.testing.assert_allclose(layer.grads["kernel"], 0.1 * np.sign(w) + 0.4 * w)
