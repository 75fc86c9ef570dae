"""callbacks.RecomputeBatchNormStatistics: exact BN statistics at the end of fit, opt-in (issue 26 item 5)."""

import numpy as np
import pytest

from normlab import InvalidParameterError, Sequential, optimizers, recompute_batchnorm_statistics
from normlab.callbacks import EarlyStopping, RecomputeBatchNormStatistics
from normlab.layers import Activation, BatchNormalization, Dense


def _model(momentum=0.99, seed=0):
    m = Sequential([Dense(8, use_bias=False), BatchNormalization(momentum=momentum), Activation("relu"),
                    Dense(3, activation="softmax")])
    m.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    m.build((None, 5), seed=seed)
    return m


def _data(rng):
    x = (rng.standard_normal((96, 5)) * 3 + 2).astype(np.float32)
    return x, rng.integers(0, 3, 96)


def test_off_by_default_and_exact_statistics_after_fit_when_asked(rng):
    x, y = _data(rng)
    plain, with_cb = _model(), _model()
    plain.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=1)
    cb = RecomputeBatchNormStatistics(x, batch_size=32)
    with_cb.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=1, callbacks=[cb])
    bn_plain, bn_cb = plain.layers[1], with_cb.layers[1]
    # the same training (the statistics do not enter the steps); the parameters agree bit for bit
    for a, b in zip(plain.layers[0].params.values(), with_cb.layers[0].params.values()):
        np.testing.assert_array_equal(a, b)
    # plain fit keeps Keras's moving averages: still far from the population after 12 steps at 0.99
    h = x.astype(np.float64) @ with_cb.layers[0].params["kernel"].astype(np.float64)
    np.testing.assert_allclose(bn_cb.buffers["moving_mean"], h.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn_cb.buffers["moving_variance"], h.var(axis=0, ddof=1), rtol=1e-5)
    assert not np.allclose(bn_plain.buffers["moving_mean"], h.mean(axis=0), rtol=0.05)
    assert set(cb.statistics_) == {bn_cb.name}
    # the same as calling the function after fit
    recompute_batchnorm_statistics(plain, x)
    np.testing.assert_array_equal(bn_plain.buffers["moving_variance"], bn_cb.buffers["moving_variance"])


def test_after_early_stopping_the_statistics_are_those_of_the_restored_weights(rng):
    x, y = _data(rng)
    xv, yv = _data(rng)
    model = _model()
    es = EarlyStopping(patience=1, restore_best_weights=True)
    model.fit(x, y, batch_size=16, epochs=8, validation_data=(xv, yv), verbose=0, seed=0,
              callbacks=[es, RecomputeBatchNormStatistics(x)])
    h = x.astype(np.float64) @ model.layers[0].params["kernel"].astype(np.float64)
    np.testing.assert_allclose(model.layers[1].buffers["moving_mean"], h.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_model_without_batch_norm_is_left_alone(rng):
    x, y = _data(rng)
    m = Sequential([Dense(3, activation="softmax")])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    cb = RecomputeBatchNormStatistics(x)
    m.fit(x, y, epochs=1, verbose=0, callbacks=[cb], seed=0)
    assert cb.statistics_ == {}


def test_invalid_arguments_and_config():
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter of RecomputeBatchNormStatistics"):
        RecomputeBatchNormStatistics(np.zeros((2, 2)), batch_size=0)
    with pytest.raises(InvalidParameterError, match="'when' parameter of RecomputeBatchNormStatistics"):
        RecomputeBatchNormStatistics(np.zeros((2, 2)), when="epoch_end")
    with pytest.raises(InvalidParameterError, match="'x' parameter of RecomputeBatchNormStatistics must be an array"):
        RecomputeBatchNormStatistics(None)
    assert RecomputeBatchNormStatistics(np.zeros((2, 2)), batch_size=64).get_config() == {
        "batch_size": 64, "when": "train_end"}
