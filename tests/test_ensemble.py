import numpy as np
import pytest

import normlab
from normlab.ensemble import Bagging
from normlab.layers import BatchNormalization, Dense, Activation


def build():
    m = normlab.Sequential([Dense(32, use_bias=False), BatchNormalization(), Activation("relu"), Dense(10, activation="softmax")])
    m.compile(optimizer=normlab.optimizers.SGD(learning_rate=0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
    return m


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return normlab.datasets.load_digits()


def test_bagging_oob_score_on_digits(digits):
    (x, y), (xt, yt) = digits
    bag = Bagging(build, n_estimators=4, seed=0).fit(x, y, epochs=8, batch_size=32)
    assert len(bag.estimators_) == 4
    # each bootstrap sample leaves out about 1/e of the rows
    for idx in bag.samples_:
        assert 0.30 < 1 - len(np.unique(idx)) / len(x) < 0.44
    test_acc = bag.score(xt, yt)
    assert test_acc > 0.9
    # the out-of-bag estimate tracks the held-out accuracy
    assert abs(bag.oob_score_ - test_acc) < 0.06
    p = bag.predict(xt)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    assert np.mean(p.argmax(1) == yt) == test_acc


def test_parallel_equals_serial(digits):
    (x, y), _ = digits
    x, y = x[:300], y[:300]
    a = Bagging(build, n_estimators=2, seed=3, n_jobs=1).fit(x, y, epochs=2)
    b = Bagging(build, n_estimators=2, seed=3, n_jobs=2).fit(x, y, epochs=2)
    for ma, mb in zip(a.estimators_, b.estimators_):
        for wa, wb in zip(ma.get_weights(), mb.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    assert a.oob_score_ == b.oob_score_


def test_invalid():
    with pytest.raises(ValueError, match="'n_estimators' parameter of Bagging"):
        Bagging(build, n_estimators=0)
    with pytest.raises(ValueError, match="'max_samples'"):
        Bagging(build, max_samples=1.5)
    with pytest.raises(RuntimeError, match="fit"):
        Bagging(build).predict(np.ones((2, 64)))
