"""Batch normalization for real use (issue 5): conventions, ghost batches, renorm, policies."""

import json

import numpy as np
import pytest

from normlab import initializers
from normlab.layers import BatchNormalization, deserialize, serialize
from normlab.testing import check_layer_gradients


# every test runs on the fused numba kernels and on the NumPy kernels
pytestmark = pytest.mark.usefixtures("kernel_path")


def bn(**kw):
    kw.setdefault("gamma_initializer", initializers.RandomUniform(0.5, 1.5, seed=1))
    kw.setdefault("beta_initializer", initializers.RandomUniform(-0.5, 0.5, seed=2))
    return BatchNormalization(**kw)


def test_unbiased_moving_variance_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((10, 4)).astype(np.float32) * 3
    layer = BatchNormalization(momentum=0.9, epsilon=1e-5, unbiased_moving_variance=True)
    rm, rv = torch.zeros(4), torch.ones(4)
    for k in range(3):
        xb = x + k
        layer(xb, training=True)
        torch.nn.functional.batch_norm(torch.tensor(xb), rm, rv, training=True, momentum=0.1, eps=1e-5)
    np.testing.assert_allclose(layer.buffers["moving_mean"], rm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.buffers["moving_variance"], rv.numpy(), rtol=1e-5)


def test_unbiased_with_momentum_zero_is_var_ddof1(rng):
    x = rng.standard_normal((7, 3))
    layer = BatchNormalization(momentum=0.0, unbiased_moving_variance=True)
    layer(x, training=True)
    np.testing.assert_allclose(layer.buffers["moving_variance"], x.var(0, ddof=1), rtol=1e-12)


@pytest.mark.parametrize("shape", [(12, 5), (4, 3, 3, 2)])
def test_ghost_batch_of_full_size_equals_plain(shape, rng):
    x = rng.standard_normal(shape) * 2 + 1
    dy = rng.standard_normal(shape)
    plain, ghost = bn(momentum=0.5), bn(momentum=0.5, virtual_batch_size=shape[0])
    np.testing.assert_allclose(ghost(x, training=True), plain(x, training=True), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ghost.backward(dy), plain.backward(dy), rtol=1e-10, atol=1e-12)
    for k in plain.grads:
        np.testing.assert_allclose(ghost.grads[k], plain.grads[k], rtol=1e-10)
    for k in plain.buffers:
        np.testing.assert_allclose(ghost.buffers[k], plain.buffers[k], rtol=1e-12)


def test_ghost_batches_normalize_each_group(rng):
    x = rng.standard_normal((12, 3)) + np.repeat([[0.0], [10.0], [-5.0]], 4, axis=0)
    layer = BatchNormalization(virtual_batch_size=4, momentum=0.0, epsilon=1e-8)
    y = layer(x, training=True)
    for g in range(3):
        np.testing.assert_allclose(y[4 * g : 4 * g + 4].mean(0), 0, atol=1e-10)
        np.testing.assert_allclose(y[4 * g : 4 * g + 4].var(0), 1, atol=1e-6)
    groups = x.reshape(3, 4, 3)
    np.testing.assert_allclose(layer.buffers["moving_mean"], groups.mean(1).mean(0), rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["moving_variance"], groups.var(1).mean(0), rtol=1e-12)
    errs = check_layer_gradients(bn(virtual_batch_size=4), x)
    assert max(errs.values()) < 1e-6, errs
    with pytest.raises(ValueError, match="not a multiple of virtual_batch_size=4"):
        layer(x[:10], training=True)


def test_renorm_with_unit_clipping_is_plain_batch_norm(rng):
    x = rng.standard_normal((9, 4)) * 3 + 2
    dy = rng.standard_normal((9, 4))
    plain = bn()
    renorm = bn(renorm=True, renorm_clipping={"rmax": 1.0, "rmin": 1.0, "dmax": 0.0})
    np.testing.assert_allclose(renorm(x, training=True), plain(x, training=True), rtol=1e-12)
    np.testing.assert_allclose(renorm.backward(dy), plain.backward(dy), rtol=1e-10, atol=1e-12)
    for k in plain.grads:
        np.testing.assert_allclose(renorm.grads[k], plain.grads[k], rtol=1e-10)


def test_renorm_correction_and_gradients_with_active_clipping(rng):
    x = rng.standard_normal((16, 3)) * 2 + 1
    layer = bn(renorm=True, renorm_clipping={"rmax": 1.5, "rmin": 0.5, "dmax": 0.5}, renorm_momentum=0.0)
    layer(x, training=True)  # now renorm_mean/stddev are this batch's statistics
    layer.buffers["renorm_stddev"][:] = [10.0, 0.1, 1.0]  # r clipped to rmin, rmax, and free
    layer.buffers["renorm_mean"][:] = x.mean(0) + np.array([10.0, -10.0, 0.0])
    std_b = np.sqrt(x.var(0) + layer.epsilon)
    r = np.clip(std_b / layer.buffers["renorm_stddev"], 0.5, 1.5)
    d = np.clip((x.mean(0) - layer.buffers["renorm_mean"]) / layer.buffers["renorm_stddev"], -0.5, 0.5)
    y = layer(x.copy(), training=True)
    expected = layer.params["gamma"] * ((x - x.mean(0)) / std_b * r + d) + layer.params["beta"]
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    # r and d are held constant in the backward pass: check where clipping makes them so
    layer2 = bn(renorm=True, renorm_clipping={"rmax": 1.5, "rmin": 0.5, "dmax": 0.5}, renorm_momentum=1.0)
    layer2(x, training=True)
    layer2.buffers["renorm_stddev"][:] = [10.0, 0.1, 0.01]
    layer2.buffers["renorm_mean"][:] = [10.0, -10.0, 10.0]
    errs = check_layer_gradients(layer2, x)
    assert max(errs.values()) < 1e-6, errs


def test_batch_of_one_policy_falls_back_to_moving_statistics(rng):
    layer = bn(batch_of_one="moving_statistics", momentum=0.5)
    layer(rng.standard_normal((8, 3)), training=True)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    x1 = rng.standard_normal((1, 3))
    expected = layer(x1, training=False)
    y = layer(x1, training=True)
    np.testing.assert_allclose(y, expected)
    layer.zero_grads()
    layer.backward(np.ones_like(y))
    assert np.abs(layer.grads["gamma"]).sum() > 0 and np.allclose(layer.grads["beta"], 1.0)
    for k in before:
        np.testing.assert_array_equal(layer.buffers[k], before[k])


def test_frozen_stays_frozen_across_modes(rng):
    layer = bn()
    layer(rng.standard_normal((8, 3)), training=True)
    layer.trainable = False
    state = {k: v.copy() for k, v in {**layer.params, **layer.buffers}.items()}
    for training in (True, False, True):
        layer(rng.standard_normal((8, 3)) * 5, training=training)
        if training:
            layer.backward(np.ones((8, 3)))
    for k, v in {**layer.params, **layer.buffers}.items():
        np.testing.assert_array_equal(v, state[k])


def test_extras_config_round_trip():
    layer = BatchNormalization(renorm=True, renorm_clipping={"rmax": 3.0, "dmax": 5.0}, renorm_momentum=0.9,
                               virtual_batch_size=8, unbiased_moving_variance=True, batch_of_one="moving_statistics")
    clone = deserialize(json.loads(json.dumps(serialize(layer))))
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"renorm_clipping": {"rmax": 0}}, "renorm_clipping"),
        ({"renorm_clipping": {"rmax": 0.0, "rmin": 0.0}}, "renorm_clipping"),
        ({"renorm_clipping": {"rmin": -0.5}}, "renorm_clipping"),
        ({"renorm_clipping": {"rmax": 1.0, "rmin": 2.0}}, "renorm_clipping"),
        ({"renorm_clipping": {"dmax": -1.0}}, "renorm_clipping"),
        ({"renorm_clipping": {"rmax": float("nan")}}, "renorm_clipping"),
        ({"renorm_clipping": {"rmax": "3"}}, "renorm_clipping"),
        ({"renorm_clipping": {"r_max": 2.0}}, "renorm_clipping"),
        ({"renorm_clipping": [1, 2]}, "renorm_clipping"),
        ({"virtual_batch_size": 0}, "virtual_batch_size"),
        ({"batch_of_one": "ignore"}, "batch_of_one"),
        ({"renorm_momentum": 2.0}, "renorm_momentum"),
        ({"unbiased_moving_variance": 1}, "unbiased_moving_variance"),
    ],
)
def test_invalid_extras(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter of BatchNormalization"):
        BatchNormalization(**kwargs)


def test_set_weights_refuses_a_negative_variance():
    """moving_variance and renorm_stddev are declared non-negative: set_weights refuses them below 0, and sets nothing."""
    import normlab

    model = normlab.Sequential([BatchNormalization(renorm=True)])
    model.build((None, 3))
    for key in ("moving_variance", "moving_stddev", "renorm_stddev"):
        weights = model.get_weights()
        names = list(model.layers[0].params) + list(model.layers[0].buffers)
        weights[names.index(key)] = -np.ones(3, np.float32)
        with pytest.raises(ValueError, match=">= 0"):
            model.set_weights(weights)
        assert (model.layers[0].buffers[key] == 1).all()
