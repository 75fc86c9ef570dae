"""EarlyStopping driven by scripted metric sequences (no training needed), and ports of Keras's tests."""

import numpy as np
import pytest

import normlab
from normlab.callbacks import EarlyStopping
from normlab.layers import Dense


class FakeModel:
    """Weights are the epoch number, so restored weights tell which epoch they came from."""

    def __init__(self):
        self.stop_training = False
        self.w = np.array([-1.0])

    def get_weights(self):
        return [self.w.copy()]

    def set_weights(self, ws):
        self.w = ws[0].copy()


def drive(cb, values, key="val_loss", steps_per_epoch=3):
    model = FakeModel()
    cb.set_model(model)
    cb.on_train_begin()
    last = None
    for epoch, v in enumerate(values):
        model.w = np.array([float(epoch)])
        for b in range(steps_per_epoch):
            cb.on_train_batch_end(b, {"loss": 1.0})
        cb.on_epoch_end(epoch, {key: v, "loss": 1.0})
        last = epoch
        if model.stop_training:
            break
    cb.on_train_end()
    return model, last


def test_notes_meta_algorithm_patience():
    # improvement at epochs 0, 1, 3; then 2 epochs without -> stop at epoch 5
    cb = EarlyStopping(patience=2)
    model, last = drive(cb, [1.0, 0.8, 0.9, 0.7, 0.75, 0.71, 0.1, 0.1])
    assert last == 5 and cb.stopped_epoch == 5
    assert cb.best == 0.7 and cb.best_epoch == 3 and cb.best_step == 12


def test_patience_zero_stops_at_first_non_improvement():
    cb = EarlyStopping(patience=0)
    _, last = drive(cb, [1.0, 0.9, 0.95, 0.5])
    assert last == 2


def test_min_delta_counts_small_gains_as_no_improvement():
    cb = EarlyStopping(patience=1, min_delta=0.05)
    _, last = drive(cb, [1.0, 0.97, 0.96, 0.5])
    assert last == 1 and cb.best == 1.0


def test_restore_best_weights_when_stopped_and_when_not():
    cb = EarlyStopping(patience=1, restore_best_weights=True)
    model, last = drive(cb, [1.0, 0.5, 0.6, 0.7])
    assert last == 2 and model.w[0] == 1.0
    # training ran to the end without stopping: best weights are still restored
    cb = EarlyStopping(patience=10, restore_best_weights=True)
    model, last = drive(cb, [1.0, 0.4, 0.6, 0.7])
    assert last == 3 and cb.stopped_epoch == 0 and model.w[0] == 1.0


def test_mode_max_and_auto_for_accuracy():
    cb = EarlyStopping(monitor="val_accuracy", patience=1)
    _, last = drive(cb, [0.5, 0.6, 0.55, 0.58], key="val_accuracy")
    assert last == 2 and cb.best == 0.6
    cb = EarlyStopping(monitor="val_loss", mode="max", patience=0)
    _, last = drive(cb, [0.5, 0.6, 0.55], key="val_loss")
    assert last == 2


def test_baseline_must_be_beaten_within_patience():
    # Keras: epochs that improve on the best never stop training, even above the baseline;
    # the wait (3 epochs by epoch 2, none below 0.5) stops at the first epoch that does not improve
    cb = EarlyStopping(patience=2, baseline=0.5)
    _, last = drive(cb, [0.9, 0.8, 0.7, 0.71, 0.3])
    assert last == 3 and cb.stopped_epoch == 3 and cb.wait == 4
    # ... and epochs that keep improving run on until one beats the baseline, which restarts the wait
    cb = EarlyStopping(patience=2, baseline=0.5)
    _, last = drive(cb, [0.9, 0.8, 0.7, 0.4, 0.45, 0.46, 0.47, 0.3])
    assert last == 5 and cb.best == 0.4 and cb.best_epoch == 3
    # beating the baseline takes more than min_delta, like any improvement (Keras's _is_improvement)
    # (0.45 is not below 0.5 - 0.1: the wait goes on from epoch 0 and runs out at epoch 1, not 2)
    cb = EarlyStopping(patience=2, baseline=0.5, min_delta=0.1)
    _, last = drive(cb, [0.45, 0.46, 0.47, 0.48])
    assert last == 1 and cb.wait == 2
    cb = EarlyStopping(patience=2, baseline=0.85)
    _, last = drive(cb, [0.9, 0.8, 0.81, 0.82, 0.83])
    assert last == 3


def test_start_from_epoch_ignores_warm_up():
    cb = EarlyStopping(patience=0, start_from_epoch=3)
    _, last = drive(cb, [0.1, 0.5, 0.9, 1.0, 0.9, 0.95])
    assert last == 5 and cb.best_epoch == 4


def test_missing_monitor_is_an_error():
    cb = EarlyStopping(monitor="val_loss")
    with pytest.raises(ValueError, match="'val_loss' is not in the logs; available: loss"):
        drive(cb, [1.0], key="loss")


@pytest.mark.parametrize(
    "kwargs,name", [({"mode": "minimum"}, "mode"), ({"patience": -1}, "patience"), ({"min_delta": -0.1}, "min_delta"),
                    ({"start_from_epoch": 1.5}, "start_from_epoch"), ({"restore_best_weights": "yes"}, "restore_best_weights")],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter of EarlyStopping"):
        EarlyStopping(**kwargs)


def test_nan_never_becomes_best():
    cb = EarlyStopping(patience=1)
    _, last = drive(cb, [float("nan"), 0.5, float("nan"), float("nan")])
    assert cb.best == 0.5 and last == 2


# ------------------------------------------------- ports of Keras 3's early_stopping_test.py
# (keras/src/callbacks/early_stopping_test.py; each test names the Keras test it ports)


def _relu_model(lr=0.01):
    m = normlab.Sequential([Dense(1, activation="relu"), Dense(1, activation="relu")])
    m.compile(optimizer=normlab.optimizers.SGD(lr), loss="mse")  # Keras: "mae", which normlab lacks
    return m


def _random_data(n=10, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), rng.random((n, 1)).astype(np.float32)


@pytest.mark.parametrize("mode,monitor,expected", [
    ("max", "val_loss", "max"), ("min", "val_loss", "min"), ("auto", "val_loss", "min"), ("auto", "loss", "min"),
    ("auto", "accuracy", "max"), ("auto", "val_accuracy", "max"), ("auto", "hinge", "min"),
    ("auto", "f1_score", "max"), ("auto", "val_acc", "max"),
])
def test_keras_early_stopping_mode(mode, monitor, expected):
    """Keras: test_early_stopping (the direction each mode and monitored name gives)."""
    cb = EarlyStopping(monitor=monitor, mode=mode)
    assert cb._sign == (1.0 if expected == "max" else -1.0)


def test_keras_early_stopping_fit_and_unknown_monitor():
    """Keras: test_early_stopping (fit with validation data; an unknown monitor is a ValueError)."""
    x, y = _random_data()
    xt, yt = _random_data(seed=1)
    model = _relu_model()
    for monitor in ("val_loss", "loss"):
        hist = model.fit(x, y, batch_size=5, validation_data=(xt, yt), epochs=2, verbose=0, seed=0,
                         callbacks=[EarlyStopping(patience=0, monitor=monitor)])
        assert 1 <= len(hist.epoch) <= 2
    with pytest.raises(ValueError, match="'unknown' is not in the logs"):
        model.fit(x, y, batch_size=5, validation_data=(xt, yt), epochs=2, verbose=0,
                  callbacks=[EarlyStopping(patience=0, monitor="unknown")])


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_keras_early_stopping_patience(patience):
    """Keras: test_early_stopping_patience."""
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    stopper = EarlyStopping(monitor="loss", patience=patience)
    stopper.set_model(FakeModel())
    stopper.on_train_begin()
    for epoch, loss in enumerate(losses):
        stopper.on_epoch_end(epoch=epoch, logs={"loss": loss})
        if stopper.model.stop_training:
            break
    assert stopper.stopped_epoch == max(patience, 1) + 2


def test_keras_early_stopping_reuse():
    """Keras: test_early_stopping_reuse (one callback, two fits)."""
    patience = 3
    rng = np.random.default_rng(0)
    data = rng.random((100, 1)).astype(np.float32)
    labels = np.where(data > 0.5, 1.0, 0.0).astype(np.float32)
    model = _relu_model()
    stopper = EarlyStopping(monitor="loss", patience=patience)
    h1 = model.fit(data, labels, callbacks=[stopper], verbose=0, epochs=20, seed=0)
    assert len(h1.epoch) >= patience
    h2 = model.fit(data, labels, callbacks=[stopper], verbose=0, epochs=20, seed=1)
    assert len(h2.epoch) >= patience


def test_keras_state_reset_across_fit_calls():
    """Keras: test_state_reset_across_fit_calls (Keras resets ``best`` to None and ``best_epoch`` to 0;
    normlab's "nothing seen yet" is ``best = inf`` in min mode and ``best_epoch = -1``)."""
    stopper = EarlyStopping(monitor="loss", patience=3)
    stopper.set_model(FakeModel())
    stopper.on_train_begin()
    stopper.best, stopper.wait, stopper.stopped_epoch, stopper.best_epoch = 0.1, 3, 5, 5
    stopper.best_weights = object()
    stopper.on_train_begin()
    assert stopper.best == np.inf and stopper.wait == 0 and stopper.stopped_epoch == 0
    assert stopper.best_epoch == -1 and stopper.best_weights is None


def test_keras_early_stopping_with_baseline():
    """Keras: test_early_stopping_with_baseline."""
    x, y = _random_data()
    patience = 3
    stopper = EarlyStopping(monitor="loss", patience=patience, baseline=0.6)
    hist = _relu_model().fit(x, y, callbacks=[stopper], verbose=0, epochs=20, seed=0)
    assert len(hist.epoch) >= patience


class _DummyModel:
    """Keras's DummyModel: the weights are the epoch number."""

    def __init__(self):
        self.stop_training = False
        self.weights = -1

    def get_weights(self):
        return self.weights

    def set_weights(self, weights):
        self.weights = weights

    def set_weight_to_epoch(self, epoch):
        self.weights = epoch


def _run_dummy(early_stop, losses, stop_at=None):
    early_stop.set_model(_DummyModel())
    epochs_trained = 0
    early_stop.on_train_begin()
    for epoch, loss in enumerate(losses):
        epochs_trained += 1
        early_stop.model.set_weight_to_epoch(epoch=epoch)
        early_stop.on_epoch_end(epoch, logs={"val_loss": loss})
        if epoch == stop_at:
            early_stop.model.stop_training = True
        if early_stop.model.stop_training:
            break
    early_stop.on_train_end()
    return epochs_trained


def test_keras_early_stopping_final_weights_when_restoring_model_weights():
    """Keras: test_early_stopping_final_weights_when_restoring_model_weights (its three cases)."""
    early_stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    _run_dummy(early_stop, [0.2, 0.15, 0.1, 0.11, 0.12])
    assert early_stop.model.get_weights() == 2  # the best epoch (0.1)
    # no epoch beats the baseline: patience epochs run, the best of them is restored
    early_stop = EarlyStopping(monitor="val_loss", patience=5, baseline=0.5, restore_best_weights=True)
    assert _run_dummy(early_stop, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]) == 5
    assert early_stop.model.get_weights() == 2
    # another callback stops training: the best weights are still restored
    early_stop = EarlyStopping(monitor="val_loss", patience=5, baseline=0.5, restore_best_weights=True)
    assert _run_dummy(early_stop, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], stop_at=3) == 4
    assert early_stop.model.get_weights() == 2


def test_keras_early_stopping_with_start_from_epoch():
    """Keras: test_early_stopping_with_start_from_epoch."""
    x, y = _random_data()
    model = _relu_model()
    for start_from_epoch, patience in ((2, 3), (2, 0)):
        stopper = EarlyStopping(monitor="loss", patience=patience, start_from_epoch=start_from_epoch)
        history = model.fit(x, y, callbacks=[stopper], verbose=0, epochs=20, seed=0)
        assert len(history.epoch) >= patience + start_from_epoch
