"""Keras 3 parity of batch renormalization and LayerNormalization(rms_scaling=True) (issue 22).

Tests named ``test_keras_<name>`` port the Keras test of that name from
keras-team/keras, ``keras/src/layers/normalization/batch_normalization_test.py``
(``BatchNormalizationTest``) or ``layer_normalization_test.py``
(``LayerNormalizationTest``), with normlab's API (``params`` / ``buffers``
for Keras's variables). Tests named ``test_live_*`` run Keras itself, from
the same weights and inputs, and skip where keras is not installed (CI).
"""

import importlib.util
import json
import os
import warnings

import numpy as np
import pytest

import normlab
from normlab import initializers
from normlab.layers import BatchNormalization, Dense, LayerNormalization, deserialize, serialize
from normlab.models.saving import ModelFileError
from normlab.testing import check_layer_gradients

pytestmark = pytest.mark.usefixtures("kernel_path")

RENORM_BUFFERS = ["moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev"]


def rms_scaling_layer(**kw):
    with pytest.warns(UserWarning, match="RMSNormalization"):
        return LayerNormalization(rms_scaling=True, **kw)


# ------------------------------------------------------- ports: batch renorm
@pytest.mark.parametrize(
    "clipping,shape",
    [(None, (2, 3)), ({"rmax": 3.0, "rmin": 0.3, "dmax": 5.0}, (2, 4, 4, 3))],
)
def test_keras_test_renorm_basics(clipping, shape, rng):
    """Keras ``test_renorm_basics``: 2 trainable and 5 non-trainable weights, the output's shape."""
    layer = BatchNormalization(center=True, scale=True, renorm=True, renorm_clipping=clipping)
    y = layer(rng.standard_normal(shape), training=True)
    assert y.shape == shape
    assert list(layer.params) == ["gamma", "beta"]
    assert list(layer.buffers) == RENORM_BUFFERS  # Keras's order of non-trainable weights


def test_keras_test_renorm_invalid_clipping_keys():
    """Keras ``test_renorm_invalid_clipping_keys``: unknown keys, rmax < rmin, dmax < 0."""
    for clipping in ({"random_key": 1.0}, {"rmax": 0.0, "rmin": 1.0}, {"rmax": 1.0, "dmax": -1.0}):
        with pytest.raises(ValueError, match="'renorm_clipping' parameter of BatchNormalization"):
            BatchNormalization(renorm=True, renorm_clipping=clipping)


def test_keras_test_renorm_stddev_initializer():
    """Keras ``test_renorm_stddev_initializer``: moving_stddev and renorm_stddev start at
    sqrt of moving_variance_initializer's values."""
    layer = BatchNormalization(renorm=True, moving_variance_initializer=initializers.Constant(4.0))
    layer.build_from_shape((None, 5))
    np.testing.assert_array_equal(layer.buffers["moving_stddev"], np.full(5, 2.0))
    np.testing.assert_array_equal(layer.buffers["renorm_stddev"], np.full(5, 2.0))


def test_keras_test_renorm_inference(rng):
    """Keras ``test_renorm_inference``: inference is the same with and without renorm."""
    bn, bn_renorm = BatchNormalization(renorm=False), BatchNormalization(renorm=True)
    bn.build_from_shape((None, 10))
    bn_renorm.build_from_shape((None, 10))
    for key in ("gamma", "beta", "moving_mean", "moving_variance"):
        store = "params" if key in bn.params else "buffers"
        value = rng.standard_normal(10).astype(np.float32)
        if key == "moving_variance":
            value = np.abs(value)  # normlab refuses a negative variance; Keras takes one
        getattr(bn, store)[key][:] = value
        getattr(bn_renorm, store)[key][:] = value
    x = rng.standard_normal((4, 10)).astype(np.float32)
    np.testing.assert_allclose(bn_renorm(x, training=False), bn(x, training=False), rtol=1e-5, atol=1e-5)


def test_keras_test_renorm_correctness():
    """Keras ``test_renorm_correctness``: output, r and d, and all five moving statistics after one step."""
    rs = np.random.default_rng(1337)
    epsilon, momentum, renorm_momentum = 1e-3, 0.9, 0.8
    layer = BatchNormalization(axis=-1, epsilon=epsilon, momentum=momentum, renorm=True,
                               renorm_momentum=renorm_momentum)
    layer.build_from_shape((None, 3))
    init = {
        "moving_mean": rs.normal(0.0, 1.0, 3),
        "moving_variance": np.abs(rs.normal(1.0, 0.5, 3)),
        "renorm_mean": rs.normal(0.0, 1.0, 3),
        "renorm_stddev": np.abs(rs.normal(1.0, 0.5, 3)),
    }
    init["moving_stddev"] = np.sqrt(init["moving_variance"])
    gamma, beta = rs.normal(1.0, 0.1, 3), rs.normal(0.0, 0.1, 3)
    for key, value in init.items():
        layer.buffers[key][:] = value
    layer.params["gamma"][:], layer.params["beta"][:] = gamma, beta
    init = {k: v.astype(np.float32).astype(np.float64) for k, v in init.items()}
    gamma, beta = gamma.astype(np.float32), beta.astype(np.float32)
    x = np.array([[4.0, 6.0, 2.0], [8.0, -2.0, 5.0], [6.0, 4.0, 3.0]], dtype="float32")

    batch_mean, batch_var = x.mean(0, dtype=np.float64), x.var(0, dtype=np.float64)
    batch_stddev = np.sqrt(batch_var + epsilon)
    r = batch_stddev / init["renorm_stddev"]
    d = (batch_mean - init["renorm_mean"]) / init["renorm_stddev"]
    expected = ((x - batch_mean) / batch_stddev * r + d) * gamma + beta
    np.testing.assert_allclose(layer(x, training=True), expected, atol=1e-5)

    expected_stats = {
        "renorm_mean": init["renorm_mean"] * renorm_momentum + batch_mean * (1 - renorm_momentum),
        "renorm_stddev": init["renorm_stddev"] * renorm_momentum + batch_stddev * (1 - renorm_momentum),
        "moving_mean": init["moving_mean"] * momentum + batch_mean * (1 - momentum),
        "moving_stddev": init["moving_stddev"] * momentum + batch_stddev * (1 - momentum),
    }
    expected_stats["moving_variance"] = expected_stats["moving_stddev"] ** 2 - epsilon
    for key, value in expected_stats.items():
        np.testing.assert_allclose(layer.buffers[key], value, atol=1e-5, err_msg=key)


def test_keras_test_serialization():
    """Keras ``test_serialization`` (BatchNormalizationTest): the renorm config round-trips (through JSON)."""
    layer = BatchNormalization(renorm=True, renorm_clipping={"rmax": 3.0, "rmin": 0.3, "dmax": 5.0},
                               renorm_momentum=0.95)
    config = layer.get_config()
    assert BatchNormalization.from_config(config).get_config() == config
    assert deserialize(json.loads(json.dumps(serialize(layer)))).get_config() == config


# ---------------------------------------------------- ports: rms_scaling
def test_keras_test_ln_basics_rms_scaling(rng):
    """Keras ``test_ln_basics`` (its rms_scaling case): one trainable weight, no non-trainable one."""
    layer = rms_scaling_layer()
    assert layer(rng.standard_normal((3, 3)), training=True).shape == (3, 3)
    assert list(layer.params) == ["gamma"] and not layer.buffers


def test_keras_test_output_with_rms_scaling():
    """Keras ``test_output_with_rms_scaling``: its expected values."""
    layer = rms_scaling_layer(dtype="float32", gamma_initializer="ones")
    out = layer(np.arange(5).astype("float32")[None, :], training=False)
    np.testing.assert_allclose(out, [[0.0, 0.70693, 1.41386, 2.12079, 2.82772]], rtol=1e-5, atol=1e-5)


# --------------------------------------------------- normlab: batch renorm
def test_renorm_rmax_alone_leaves_rmin_unclipped(rng):
    """Keras clips only the given bounds: with rmax alone, r may fall below 1 / rmax."""
    x = rng.standard_normal((16, 2))
    layer = BatchNormalization(renorm=True, renorm_clipping={"rmax": 2.0}, renorm_momentum=1.0, dtype="float64")
    layer.build_from_shape((None, 2))
    layer.buffers["renorm_stddev"][:] = [100.0, 0.05]  # r far below 1 / rmax, and above rmax
    std_b = np.sqrt(x.var(0) + layer.epsilon)
    r = np.array([std_b[0] / 100.0, 2.0])
    d = x.mean(0) / layer.buffers["renorm_stddev"]
    expected = (x - x.mean(0)) / std_b * r + d
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-12)
    assert r[0] < 0.5


def test_renorm_stddev_floor_is_sqrt_epsilon(rng):
    """A renorm_stddev below sqrt(epsilon) divides as sqrt(epsilon) (Keras: no blow-up early on)."""
    x = rng.standard_normal((8, 1))
    layer = BatchNormalization(renorm=True, renorm_momentum=1.0, epsilon=1e-2, dtype="float64")
    layer.build_from_shape((None, 1))
    layer.buffers["renorm_stddev"][:] = 0.0
    std_b = np.sqrt(x.var(0) + 1e-2)
    expected = (x - x.mean(0)) / std_b * (std_b / 0.1) + x.mean(0) / 0.1
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-12)


def test_renorm_buffers_start_from_initializers():
    layer = BatchNormalization(renorm=True, moving_mean_initializer=initializers.Constant(0.5),
                               moving_variance_initializer=initializers.Constant(9.0))
    layer.build_from_shape((None, 3))
    np.testing.assert_array_equal(layer.buffers["renorm_mean"], np.full(3, 0.5))
    for key in ("moving_stddev", "renorm_stddev"):
        np.testing.assert_array_equal(layer.buffers[key], np.full(3, 3.0))


def test_renorm_moving_variance_follows_the_averaged_stddev(rng):
    """Several steps: moving_variance is max(moving_stddev^2 - eps, 0), not the average of the variances."""
    layer = BatchNormalization(renorm=True, momentum=0.5, dtype="float64")
    stddev, averaged_var, eps = np.ones(2), np.ones(2), layer.epsilon
    for k in range(4):
        x = rng.standard_normal((10, 2)) * (1 + 3 * k)
        layer(x, training=True)
        stddev = 0.5 * stddev + 0.5 * np.sqrt(x.var(0) + eps)
        averaged_var = 0.5 * averaged_var + 0.5 * x.var(0)
    np.testing.assert_allclose(layer.buffers["moving_stddev"], stddev, rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["moving_variance"], stddev**2 - eps, rtol=1e-12)
    assert np.all(np.abs(layer.buffers["moving_variance"] / averaged_var - 1) > 0.05)


def test_renorm_refused_step_leaves_every_buffer(rng):
    """An overflowing float32 batch: NonFiniteError, and moving_stddev unchanged with the others."""
    layer = BatchNormalization(renorm=True)
    layer(rng.standard_normal((8, 2)).astype(np.float32), training=True)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    x = np.array([[3e38, 0.0], [-3e38, 1.0]] * 4, np.float32)
    with pytest.raises(normlab.errors.NonFiniteError, match="overflow"):
        layer(x, training=True)
    for key, value in before.items():
        np.testing.assert_array_equal(layer.buffers[key], value, err_msg=key)


def test_renorm_model_file_round_trip_and_older_file(tmp_path, rng):
    model = normlab.Sequential([BatchNormalization(renorm=True)])
    model.build((None, 3))
    model.layers[0](rng.standard_normal((8, 3)).astype(np.float32), training=True)
    model.save(tmp_path / "new.nlm")
    loaded = normlab.load_model(tmp_path / "new.nlm")
    for key, value in model.layers[0].buffers.items():
        np.testing.assert_array_equal(loaded.layers[0].buffers[key], value)
    # a file written before moving_stddev existed: refused with a ModelFileError naming the weight
    model.layers[0].buffers.pop("moving_stddev")
    model.save(tmp_path / "old.nlm")
    with pytest.raises(ModelFileError, match="moving_stddev"):
        normlab.load_model(tmp_path / "old.nlm")


# ---------------------------------------------------- normlab: rms_scaling
def test_rms_scaling_formula_center_and_scale_ignored(rng):
    x = rng.standard_normal((4, 3, 5)) * 2 + 3
    layer = rms_scaling_layer(axis=[1, 2], center=True, scale=False, dtype="float64",
                              gamma_initializer=initializers.RandomUniform(0.5, 1.5, seed=3))
    y = layer(x, training=False)
    assert list(layer.params) == ["gamma"]
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, x / np.sqrt(var + layer.epsilon) * layer.params["gamma"], rtol=1e-12)


@pytest.mark.parametrize("axis", [-1, [1, 2], 1])
def test_rms_scaling_gradients(axis, rng):
    layer = rms_scaling_layer(axis=axis, gamma_initializer=initializers.RandomUniform(0.5, 1.5, seed=4))
    errs = check_layer_gradients(layer, rng.standard_normal((3, 4, 5)) * 2 + 1)
    assert max(errs.values()) < 1e-6, errs


def test_rms_scaling_config_and_frozen(rng):
    layer = rms_scaling_layer(epsilon=1e-4)
    with pytest.warns(UserWarning):
        clone = deserialize(json.loads(json.dumps(serialize(layer))))
    assert clone.rms_scaling and clone.get_config() == layer.get_config()
    assert LayerNormalization().get_config()["rms_scaling"] is False  # always in the config (the .keras mapping reads it)
    layer.trainable = False
    x = rng.standard_normal((4, 6))
    layer(x, training=True)
    layer.zero_grads()
    layer.backward(np.ones_like(x))
    assert not np.any(layer.grads["gamma"])


def test_rms_scaling_in_a_model_step_matches_the_layer(rng):
    """fit's step (workspaces) takes the same gradient as layer.backward."""
    x, y = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((8, 6)).astype(np.float32)
    with pytest.warns(UserWarning):
        model = normlab.Sequential([LayerNormalization(rms_scaling=True)])
    model.build((None, 6))
    layer = model.layers[0]
    gamma0 = layer.params["gamma"].copy()
    out = layer(x, training=True)
    layer.zero_grads()
    layer.backward(2 * (out - y) / out.size)
    expected = gamma0 - 0.1 * layer.grads["gamma"]
    model.compile(optimizer=normlab.optimizers.SGD(0.1), loss="mse")
    model.train_on_batch(x, y)
    np.testing.assert_allclose(layer.params["gamma"], expected, rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------- live Keras
def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax" if importlib.util.find_spec("jax") else "torch")
    return pytest.importorskip("keras")


def _normlab_weights(model):
    return [w for layer in model.layers for w in [*layer.params.values(), *layer.buffers.values()]]


def _fit_both(keras, k_layer, n_layer, x, y, epochs=3):
    """The same Dense -> layer -> Dense model in Keras and normlab, SGD on mse, 3 epochs of 4 steps."""
    keras.utils.set_random_seed(0)  # Keras's initial weights, which normlab's model copies
    km = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Dense(4), k_layer, keras.layers.Dense(2)])
    nm = normlab.Sequential([Dense(4), n_layer, Dense(2)])
    nm.build((None,) + x.shape[1:])
    nm.set_weights([np.asarray(w) for w in km.get_weights()])
    km.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    nm.compile(optimizer=normlab.optimizers.SGD(0.05), loss="mse")
    km.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    nm.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    assert [w.path.split("/")[-1] for w in km.weights[2:-2]] == list(n_layer.params) + list(n_layer.buffers)
    for kw, nw in zip(km.weights, _normlab_weights(nm)):
        np.testing.assert_allclose(nw, np.asarray(kw), rtol=2e-5, atol=2e-6, err_msg=kw.path)
    np.testing.assert_allclose(nm.predict(x, verbose=0), np.asarray(km(x, training=False)), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("clipping", [None, {"rmax": 1.5, "dmax": 0.5}])
def test_live_renorm_training_matches_keras(clipping, rng):
    keras = _keras()
    x = (rng.standard_normal((64, 6)) * 2 + 1).astype(np.float32)
    y = rng.standard_normal((64, 2)).astype(np.float32)
    kw = dict(momentum=0.9, renorm=True, renorm_momentum=0.8, renorm_clipping=clipping)
    _fit_both(keras, keras.layers.BatchNormalization(**kw), BatchNormalization(**kw), x, y)


def test_live_renorm_rmax_only_and_initializers_match_keras(rng):
    """Layer calls, five batches: rmax alone (r below 1 / rmax stays), buffers from initializers."""
    keras = _keras()
    kw = dict(renorm=True, momentum=0.7, renorm_momentum=0.5, renorm_clipping={"rmax": 1.2},
              moving_mean_initializer="ones", moving_variance_initializer=initializers.Constant(400.0))
    k_kw = {**kw, "moving_variance_initializer": keras.initializers.Constant(400.0)}
    k_layer, n_layer = keras.layers.BatchNormalization(**k_kw), BatchNormalization(**kw)
    k_layer.build((None, 3))
    n_layer.build_from_shape((None, 3))
    for k in range(5):
        x = (rng.standard_normal((12, 3)) * (1 + k)).astype(np.float32)
        np.testing.assert_allclose(n_layer(x, training=True), np.asarray(k_layer(x, training=True)),
                                   rtol=2e-5, atol=2e-6)
        k_buffers = {w.path.split("/")[-1]: np.asarray(w) for w in k_layer.non_trainable_weights}
        assert list(k_buffers) == list(n_layer.buffers)
        for key, value in k_buffers.items():
            np.testing.assert_allclose(n_layer.buffers[key], value, rtol=2e-5, atol=2e-6, err_msg=key)


def test_live_rms_scaling_training_matches_keras(rng):
    keras = _keras()
    x = (rng.standard_normal((64, 6)) * 2 + 1).astype(np.float32)
    y = rng.standard_normal((64, 2)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        k_layer = keras.layers.LayerNormalization(rms_scaling=True, center=True)
        n_layer = LayerNormalization(rms_scaling=True, center=True)
    _fit_both(keras, k_layer, n_layer, x, y)
