"""EarlyStopping driven by scripted metric sequences (no training needed)."""

import numpy as np
import pytest

from normlab.callbacks import EarlyStopping


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
