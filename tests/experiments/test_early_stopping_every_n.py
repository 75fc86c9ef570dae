"""The notes' early-stopping meta-algorithm as fit(steps_per_epoch=n, ...) + EarlyStopping (issue 26 item 2).

The notes: evaluate every n steps; j counts evaluations since the last
improvement; stop when j reaches P; keep theta*, i* of the best evaluation.
The run below is checked against that algorithm written out literally over
the validation losses fit recorded.
"""

import math

import numpy as np
import pytest

from normlab import Sequential, optimizers
from normlab.callbacks import Callback, EarlyStopping, train_on_all_data
from normlab.layers import Dense

pytest.importorskip("sklearn")

N_STEPS, PATIENCE, BATCH = 5, 3, 32


def _data():
    from normlab.datasets import load_digits

    (x, y), (xt, yt) = load_digits()
    # 320 samples = 10 batches of 32 per pass: an epoch of n = 5 steps never straddles a pass
    return x[:320], y[:320], xt[:200], yt[:200]


def _model(seed=0):
    m = Sequential([Dense(64, activation="relu"), Dense(10, activation="softmax")])
    m.compile(optimizer=optimizers.SGD(0.3, momentum=0.9), loss="sparse_categorical_crossentropy")
    m.build((None, 64), seed=seed)
    return m


class Recorder(Callback):
    """Steps taken at each evaluation, its validation loss and the weights then."""

    def __init__(self):
        super().__init__()
        self.steps, self.at_eval, self.val, self.weights = 0, [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self.at_eval.append(self.steps)
        self.val.append(logs["val_loss"])
        self.weights.append(self.model.get_weights())


def notes_algorithm(val_losses, n, patience):
    """The notes' meta-algorithm, literally, over a sequence of validation errors."""
    i, i_star, j, v, best = 0, 0, 0, math.inf, None
    k = -1
    while j < patience:
        k += 1  # "update theta running the training algorithm for n steps"
        i, j = i + n, j + 1
        v_new = val_losses[k]
        if v_new < v:
            j, best, i_star, v = 0, k, i, v_new
    return {"evaluations": k + 1, "best": best, "i_star": i_star, "v": v}


def test_fit_every_n_steps_is_the_notes_algorithm():
    x, y, xv, yv = _data()
    model = _model()
    rec = Recorder()
    es = EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True)
    model.fit(x, y, batch_size=BATCH, steps_per_epoch=N_STEPS, epochs=1000, validation_data=(xv, yv),
              callbacks=[rec, es], verbose=0, seed=0)
    # evaluated every n steps, exactly
    assert rec.at_eval == [N_STEPS * (k + 1) for k in range(len(rec.at_eval))]
    ref = notes_algorithm(rec.val, N_STEPS, PATIENCE)
    assert len(rec.val) < 1000  # it stopped early
    assert len(rec.val) == ref["evaluations"]  # stopped when j reached P
    assert es.best == ref["v"] and es.best_step == ref["i_star"] == N_STEPS * (ref["best"] + 1)
    for a, b in zip(model.get_weights(), rec.weights[ref["best"]]):  # theta* restored
        np.testing.assert_array_equal(a, b)


def test_the_notes_two_ways_of_using_the_validation_data_afterwards():
    x, y, xv, yv = _data()
    model = _model()
    es = EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True)
    model.fit(x, y, batch_size=BATCH, steps_per_epoch=N_STEPS, epochs=1000, validation_data=(xv, yv),
              callbacks=[es], verbose=0, seed=0)
    # 1. retrain from scratch on train + validation data for i* steps
    fresh, info = train_on_all_data("retrain", x_train=x, y_train=y, x_val=xv, y_val=yv, early_stopping=es,
                                    build_fn=_model, batch_size=BATCH, seed=1)
    assert info["steps"] == es.best_step
    assert fresh.optimizer.iterations == es.best_step
    # 2. keep theta* and train on all the data until the validation loss is below the training loss at i*
    cont, info = train_on_all_data("continue", x_train=x, y_train=y, x_val=xv, y_val=yv, early_stopping=es,
                                   model=model, batch_size=BATCH, max_epochs=20, seed=1)
    assert cont is model
    assert info["val_loss"] <= info["target_loss"] or info["epochs"] == 20


def test_an_endless_generator_gives_exactly_n_steps_whatever_the_data_size():
    # with arrays an epoch ends where a pass ends (Keras's EpochIterator does the same);
    # an endless generator of batches makes every epoch exactly n steps
    x, y, xv, yv = _data()
    x, y = x[:300], y[:300]  # 9.4 batches per pass

    def batches(seed=0):
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(len(x))
            for s in range(0, len(x) - BATCH + 1, BATCH):
                idx = order[s:s + BATCH]
                yield x[idx], y[idx]

    rec = Recorder()
    model = _model()
    model.fit(batches(), steps_per_epoch=7, epochs=6, validation_data=(xv, yv), callbacks=[rec], verbose=0)
    assert rec.at_eval == [7, 14, 21, 28, 35, 42]
    rec = Recorder()
    _model().fit(x, y, batch_size=BATCH, steps_per_epoch=7, epochs=3, validation_data=(xv, yv), callbacks=[rec],
                 verbose=0, seed=0)
    assert rec.at_eval == [7, 10, 17]  # the second epoch ends with the first pass (10 batches)


def test_validation_freq_counts_patience_in_evaluations():
    x, y, xv, yv = _data()
    rec = Recorder()
    es = EarlyStopping(monitor="val_loss", patience=PATIENCE)
    _model().fit(x, y, batch_size=BATCH, steps_per_epoch=N_STEPS, epochs=60, validation_freq=2,
                 validation_data=(xv, yv), callbacks=[es], verbose=0, seed=0)
    assert es.best_step % (2 * N_STEPS) == 0
