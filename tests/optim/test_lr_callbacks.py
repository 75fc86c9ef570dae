"""LearningRateScheduler and ReduceLROnPlateau driven by scripted metric sequences."""

import math

import numpy as np
import pytest

from normlab import optimizers as O
from normlab._validation import InvalidParameterError
from normlab.callbacks import History, LearningRateScheduler, ReduceLROnPlateau
from normlab.optimizers import schedules


class FakeModel:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.stop_training = False


def drive(cb, values, lr=0.1, key="val_loss", steps_per_epoch=2, optimizer=None):
    """Run epochs with scripted monitored values; one optimizer step per batch. Returns History."""
    opt = optimizer or O.SGD(lr)
    model = FakeModel(opt)
    hist = History()
    for c in (hist, cb):
        c.set_model(model)
        c.on_train_begin()
    w = np.zeros(1)
    for epoch, v in enumerate(values):
        for c in (hist, cb):
            c.on_epoch_begin(epoch)
        for _ in range(steps_per_epoch):
            opt.apply([np.ones(1)], [w])
        logs = {"loss": 1.0, key: v}
        cb.on_epoch_end(epoch, logs)  # the callbacks write into the logs History then records
        hist.on_epoch_end(epoch, logs)
    return hist, opt


# ------------------------------------------------------ LearningRateScheduler
def test_scheduler_two_argument_form_sets_each_epoch_and_logs():
    cb = LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch > 0 else lr)
    hist, opt = drive(cb, [1.0, 1.0, 1.0, 1.0], lr=0.8)
    assert hist.history["learning_rate"] == [0.8, 0.4, 0.2, 0.1]
    assert opt.learning_rate == 0.1


def test_scheduler_one_argument_form_and_a_schedule_object(capsys):
    cb = LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1), verbose=1)
    hist, _ = drive(cb, [1.0, 1.0, 1.0])
    assert hist.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3], rel=1e-15)
    assert "Epoch 2: LearningRateScheduler setting learning rate to 0.05." in capsys.readouterr().out
    # a step schedule used per epoch
    cb = LearningRateScheduler(schedules.ExponentialDecay(1.0, 1, 0.5))
    hist, _ = drive(cb, [1.0, 1.0, 1.0])
    assert hist.history["learning_rate"] == [1.0, 0.5, 0.25]


def test_scheduler_rejects_bad_output_and_schedule_optimizers():
    with pytest.raises(ValueError, match="finite float >= 0; at epoch 0 it gave -1.0"):
        drive(LearningRateScheduler(lambda e: -1.0), [1.0])
    with pytest.raises(ValueError, match="gave 'x'"):
        drive(LearningRateScheduler(lambda e: "x"), [1.0])
    opt = O.SGD(schedules.ExponentialDecay(0.1, 10, 0.5))
    with pytest.raises(TypeError, match="learning_rate is a schedule"):
        drive(LearningRateScheduler(lambda e: 0.1), [1.0], optimizer=opt)
    with pytest.raises(InvalidParameterError, match="'schedule' parameter of LearningRateScheduler must be a callable"):
        LearningRateScheduler(0.1)


# --------------------------------------------------------- ReduceLROnPlateau
def test_plateau_reduces_after_patience_and_logs_the_epoch_rate():
    cb = ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.0)
    hist, opt = drive(cb, [1.0, 0.9, 0.95, 0.92, 0.91, 0.8, 0.85, 0.85, 0.85])
    #            epoch:    0    1    2     3     4    5    6     7     8
    # no improvement at 2, 3 -> halve after epoch 3; at 4 (0.91 < 0.9? no) wait 1; 5 improves; 6, 7 -> halve
    assert hist.history["learning_rate"] == [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025]
    assert opt.learning_rate == 0.025 and cb.best == 0.8


def test_plateau_min_delta_cooldown_and_min_lr():
    cb = ReduceLROnPlateau(factor=0.1, patience=1, min_delta=0.05, cooldown=2, min_lr=0.0005)
    vals = [1.0, 0.98, 0.97, 0.97, 0.96, 0.96, 0.96, 0.96, 0.96]
    hist, opt = drive(cb, vals, lr=0.1)
    # gains below min_delta never count. Patience 1: reduce at the end of epoch 1; the cooldown
    # counter (2) falls to 1 at epoch 2 and to 0 at epoch 3, which counts again (Keras) -> reduce
    # at 3; again at 5, where max(1e-4, min_lr) = min_lr; from then on the rate is at the floor
    assert hist.history["learning_rate"] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0005, 0.0005, 0.0005], rel=1e-12
    )
    assert opt.learning_rate == pytest.approx(0.0005, rel=1e-12)
    cb2 = ReduceLROnPlateau(factor=0.1, patience=0, min_lr=0.0005)
    _, opt2 = drive(cb2, [1.0] * 6, lr=0.0005)
    assert opt2.learning_rate == 0.0005  # already at the floor: unchanged


def test_plateau_max_mode_for_accuracy(capsys):
    cb = ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1, verbose=1)
    hist, opt = drive(cb, [0.5, 0.6, 0.55, 0.7, 0.65], key="val_accuracy")
    assert hist.history["learning_rate"] == [0.1, 0.1, 0.1, 0.05, 0.05]
    assert opt.learning_rate == 0.025
    assert "Epoch 3: ReduceLROnPlateau reducing learning rate to 0.05." in capsys.readouterr().out


def test_plateau_nan_counts_as_no_improvement():
    cb = ReduceLROnPlateau(factor=0.5, patience=1)
    _, opt = drive(cb, [1.0, math.nan])
    assert opt.learning_rate == 0.05


def test_plateau_errors_and_config():
    with pytest.raises(ValueError, match="'val_loss' is not in the logs"):
        drive(ReduceLROnPlateau(), [1.0], key="loss_other")
    opt = O.Adam(schedules.CosineDecay(0.1, 10))
    with pytest.raises(TypeError, match="learning_rate is a schedule"):
        drive(ReduceLROnPlateau(), [1.0], optimizer=opt)
    with pytest.raises(InvalidParameterError) as e:
        ReduceLROnPlateau(factor=1.0)
    assert str(e.value) == "The 'factor' parameter of ReduceLROnPlateau must be a float in the range [0, 1). Got 1.0 instead."
    with pytest.raises(InvalidParameterError, match="'patience' parameter of ReduceLROnPlateau"):
        ReduceLROnPlateau(patience=-1)
    with pytest.raises(InvalidParameterError, match="'mode' parameter"):
        ReduceLROnPlateau(mode="up")
    cb = ReduceLROnPlateau(monitor="loss", factor=0.2, patience=3, cooldown=1, min_lr=1e-5)
    assert ReduceLROnPlateau.from_config(cb.get_config()).get_config() == cb.get_config()
    assert ReduceLROnPlateau().get_config() == {
        "monitor": "val_loss", "factor": 0.1, "patience": 10, "verbose": 0, "mode": "auto",
        "min_delta": 1e-4, "cooldown": 0, "min_lr": 0.0,
    }


def test_plateau_state_resets_on_train_begin():
    cb = ReduceLROnPlateau(factor=0.5, patience=1)
    drive(cb, [1.0, 2.0])
    assert cb.best == 1.0
    hist, opt = drive(cb, [5.0, 4.0])
    assert cb.best == 4.0 and opt.learning_rate == 0.1 and hist.history["learning_rate"] == [0.1, 0.1]
