"""Adamax, Adadelta, Lamb, Ftrl and Adafactor: training, state round trips and pickling (their Keras golden tests are
in tests/keras_ports/test_optimizers_*_keras_file.py)."""

import pickle

import numpy as np
import pytest

import normlab
from normlab import optimizers as O

MAKERS = {
    "Adamax": lambda: O.Adamax(0.05),
    "Adadelta": lambda: O.Adadelta(1.0),
    "Lamb": lambda: O.Lamb(0.05, weight_decay=0.01),
    "Ftrl": lambda: O.Ftrl(0.5, l1_regularization_strength=0.001, l2_regularization_strength=0.01),
    "Adafactor": lambda: O.Adafactor(0.05),
}


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5))
    return x, (x @ rng.normal(size=(5, 1)) + 0.1).ravel()


def _model(opt):
    m = normlab.Sequential([normlab.Input((5,)), normlab.layers.Dense(1)], seed=0)
    m.compile(opt, "mse")
    return m


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_trains_and_resumes_bit_for_bit(name):
    x, y = _data()
    model = _model(MAKERS[name]())
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False)
    assert model.evaluate(x, y, verbose=0) < before
    # the state moves to a fresh optimizer (and through pickle): the next steps are the same
    clone = _model(pickle.loads(pickle.dumps(model.optimizer)))
    clone.set_weights(model.get_weights())
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    clone.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_lamb_trust_ratio_and_ftrl_sparsity():
    """Lamb's step has the norm lr * ||w||; Ftrl with a large l1 keeps weights at exactly 0."""
    w = np.array([3.0, 4.0])
    O.Lamb(0.1).apply_gradients([(np.array([1.0, -2.0]), w)])
    assert np.linalg.norm(w - [3.0, 4.0]) == pytest.approx(0.1 * 5.0, rel=1e-12)
    w = np.zeros(3)
    O.Ftrl(0.1, l1_regularization_strength=10.0).apply_gradients([(np.array([0.5, -1.0, 2.0]), w)])
    np.testing.assert_array_equal(w, 0.0)
