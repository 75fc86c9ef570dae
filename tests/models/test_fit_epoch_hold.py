"""fit holds BLAS on one thread (kernels._threads.one_pool) for an epoch's steps when nothing but normlab's code
runs between them: the steps find it held, the run is the same bit for bit, and the hold is given back."""

import numpy as np
import pytest

import normlab
from normlab import callbacks, layers
from normlab.kernels import _threads
from normlab.models import base as model_base
from normlab.models import training


def _model():
    m = normlab.Sequential([layers.Dense(8, use_bias=False), layers.BatchNormalization(), layers.Activation("relu"),
                            layers.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.build((None, 5), seed=0)
    return m


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, 5)).astype(np.float32), rng.integers(0, 3, 64)


class _Spy:
    """Records, per step, whether BLAS was held when the step began, and counts one_pool's entries."""

    def __init__(self, monkeypatch):
        self.held, self.pools = [], 0
        step = model_base.BaseModel._train_step
        pool = _threads.one_pool

        def spy_step(model, *args):
            self.held.append(_threads._held is not None)
            return step(model, *args)

        def spy_pool():
            self.pools += 1
            return pool()

        monkeypatch.setattr(model_base.BaseModel, "_train_step", spy_step)
        monkeypatch.setattr(_threads, "one_pool", spy_pool)


def test_the_steps_of_an_epoch_find_blas_held(monkeypatch):
    spy = _Spy(monkeypatch)
    x, y = _data()
    _model().fit(x, y, batch_size=16, epochs=2, verbose=0, seed=1)
    assert spy.held == [True] * 8
    assert spy.pools == 2  # once per epoch, not once per step
    assert _threads._held is None


class _BatchEnd(callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        assert _threads._held is None  # a callback's code runs with the limits as the user set them


@pytest.mark.parametrize("case", ["batch_hook", "metric", "generator"])
def test_no_hold_where_other_code_runs_between_steps(case, monkeypatch):
    spy = _Spy(monkeypatch)
    x, y = _data()
    model = _model()
    kw = {}
    if case == "batch_hook":
        kw["callbacks"] = [_BatchEnd()]
    elif case == "metric":
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if case == "generator":
        model.fit(((x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)), epochs=1, verbose=0)
    else:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, **kw)
    assert spy.held == [False] * 4
    assert spy.pools == 4


def test_the_same_run_with_and_without_the_hold(monkeypatch):
    x, y = _data()
    a = _model()
    ha = a.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=2).history["loss"]
    monkeypatch.setattr(training, "ArraySource", type("NotArraySource", (), {}))  # the hold's condition fails
    spy = _Spy(monkeypatch)
    b = _model()
    hb = b.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=2).history["loss"]
    assert spy.held == [False] * 12
    assert ha == hb
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)


def test_a_step_that_raises_inside_the_hold_gives_it_back():
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.layers[-1].params["bias"][0] = np.nan  # the loss of every step is NaN: the first step fails
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(FloatingPointError), np.errstate(invalid="ignore"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert _threads._held is None
    for p, q in zip(before, model.get_weights()):
        np.testing.assert_array_equal(p, q)  # the failed step left the model as it was
