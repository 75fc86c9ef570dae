"""Ports of Keras 3's callback tests (keras/src/callbacks/*_test.py) for the callbacks normlab has.

Each test names the Keras test it ports in its docstring (``Keras: <file>::<test>``).
Where normlab differs from Keras on purpose (it refuses what Keras warns
about, it has no ``mse`` metric), the docstring says so and the test
asserts normlab's behaviour. Where normlab lacks a Keras feature, the port
is an ``xfail`` (strict, with the exception normlab raises) naming it, so
that it turns into a failure to update when the feature lands.
Not ported: the ``val_auc`` case of ModelCheckpoint (no AUC metric). EarlyStopping's and BackupAndRestore's
ports are in test_early_stopping.py and test_backup_and_restore.py.
"""

import csv
import math
import os

import numpy as np
import pytest

import normlab
from normlab import initializers, optimizers
from normlab.callbacks import (BackupAndRestore, Callback, CSVLogger, LambdaCallback, LearningRateScheduler,
                               ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN)
from normlab.layers import Dense
from normlab.optimizers import schedules

TRAIN_SAMPLES = TEST_SAMPLES = 10
INPUT_DIM = 3
BATCH_SIZE = 4


def random_data(n=TRAIN_SAMPLES, d=INPUT_DIM, out=1, seed=1337):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), rng.random((n, out)).astype(np.float32)


def classes(n=TRAIN_SAMPLES, num_classes=2, seed=1337):
    """Keras's test_utils.get_test_data with to_categorical: class-dependent inputs, one-hot targets."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    centers = rng.standard_normal((num_classes, INPUT_DIM))
    x = (centers[labels] + 0.5 * rng.standard_normal((n, INPUT_DIM))).astype(np.float32)
    return x, np.eye(num_classes, dtype=np.float32)[labels]


def overflowing_model():
    """Keras's model whose loss overflows on the first batch: five Dense(2) with kernels of 1e5."""
    m = normlab.Sequential()
    for _ in range(5):
        m.add(Dense(2, activation="relu", kernel_initializer=initializers.Constant(1e5)))
    m.add(Dense(2))
    m.compile(loss="mean_squared_error", optimizer="sgd")
    return m


# ------------------------------------------------------------------ Callback
def test_keras_model_state_is_current_on_epoch_end():
    """Keras: callback_test.py::test_model_state_is_current_on_epoch_end (the model has taken
    ``batch + 1`` steps when ``on_batch_end`` sees batch ``batch``)."""
    seen = []

    class CBK(Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append((self.model.optimizer.iterations, batch + 1))

    model = normlab.Sequential([Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = random_data(8, 1)
    model.fit(x, y, callbacks=[CBK()], batch_size=2, verbose=0)
    assert len(seen) == 4 and all(a == b for a, b in seen)


# ----------------------------------------------------------------- CSVLogger
def _csv_model():
    model = normlab.Sequential([Dense(2, activation="relu"), Dense(1)])
    model.compile(loss="mse", optimizer="sgd")  # Keras adds metrics=["mse"], which normlab lacks
    return model


def test_keras_CSVLogger(tmp_path):
    """Keras: csv_logger_test.py::test_CSVLogger (a new file with a separator, appending without a second
    header, reusing the logger, NA for validation values in epochs without validation)."""
    filepath = str(tmp_path / "log.tsv")
    sep = "\t"
    x, y = random_data()
    xt, yt = random_data(seed=1)
    # case 1: a new file with the separator given
    _csv_model().fit(x, y, batch_size=BATCH_SIZE, validation_data=(xt, yt), verbose=0, epochs=1, seed=0,
                     callbacks=[CSVLogger(filepath, separator=sep)])
    assert os.path.exists(filepath)
    with open(filepath) as fh:
        assert csv.Sniffer().sniff(fh.read()).delimiter == sep
    # case 2: append to the file, no new header; case 3: the same logger again
    model = _csv_model()
    cbks = [CSVLogger(filepath, separator=sep, append=True)]
    model.fit(x, y, batch_size=BATCH_SIZE, validation_data=(xt, yt), verbose=0, epochs=1, seed=0, callbacks=cbks)
    model.fit(x, y, batch_size=BATCH_SIZE, validation_data=(xt, yt), verbose=0, epochs=2, seed=0, callbacks=cbks)
    with open(filepath) as fh:
        lines = fh.readlines()
    # normlab's logs also hold learning_rate and global_norm: epoch + 4 keys, as Keras's epoch + loss, mse,
    # val_loss, val_mse
    assert lines[0].rstrip("\n").split(sep) == ["epoch", "global_norm", "learning_rate", "loss", "val_loss"]
    assert all(line.count(sep) == 4 for line in lines)
    assert len(lines) == 5
    assert " ".join(lines).count("epoch") == 1
    os.remove(filepath)
    # validation every 3rd epoch: val_loss is NA in the other rows
    hist = _csv_model().fit(x, y, batch_size=BATCH_SIZE, validation_data=(xt, yt), validation_freq=3,
                            verbose=0, epochs=5, seed=0, callbacks=[CSVLogger(filepath, separator=sep)])
    with open(filepath) as fh:
        rows = list(csv.DictReader(fh, delimiter=sep))
    assert len(rows) == 5
    for idx, row in enumerate(rows, 1):
        assert "val_loss" in row
        if idx == 3:
            assert float(row["val_loss"]) == hist.history["val_loss"][0]
        else:
            assert row["val_loss"] == "NA"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_keras_stop_training_csv(tmp_path):
    """Keras: csv_logger_test.py::test_stop_training_csv (TerminateOnNaN with CSVLogger leaves a valid CSV
    whose last row holds the non-finite loss; in float32 it overflows to inf here, nan in Keras)."""
    path = str(tmp_path / "csv_logger.csv")
    x, y = classes()
    xt, yt = classes(seed=1)
    history = overflowing_model().fit(x, y, batch_size=BATCH_SIZE, validation_data=(xt, yt), epochs=20, verbose=0,
                                      callbacks=[TerminateOnNaN(), CSVLogger(path)])
    loss = history.history["loss"]
    assert len(loss) == 1 and not math.isfinite(loss[0])
    with open(path) as fh:
        rows = [r for r in csv.reader(fh) if r]
    header, last = rows[0], rows[-1]
    assert len(rows) == 2 and last[header.index("loss")] in ("nan", "inf")


# ------------------------------------------------------------ TerminateOnNaN
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_keras_TerminateOnNaN():
    """Keras: terminate_on_nan_test.py::test_TerminateOnNaN."""
    x, y = classes()
    xt, yt = classes(seed=1)
    history = overflowing_model().fit(x, y, batch_size=BATCH_SIZE, validation_data=(xt, yt), epochs=20, verbose=0,
                                      callbacks=[TerminateOnNaN()])
    loss = history.history["loss"]
    assert len(loss) == 1 and (np.isnan(loss[0]) or np.isinf(loss[0]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_keras_terminate_on_nan_graceful_stop():
    """Keras: terminate_on_nan_test.py::test_terminate_on_nan_graceful_stop. Keras feeds inf targets;
    normlab refuses non-finite targets at fit's door, so the loss overflows inside instead."""
    x, y = classes()
    with pytest.raises(ValueError, match="'y' holds NaN or inf"):
        overflowing_model().fit(x, np.full_like(y, np.inf), epochs=1, verbose=0, callbacks=[TerminateOnNaN()])
    history = overflowing_model().fit(x, y, epochs=2, batch_size=1, callbacks=[TerminateOnNaN()], verbose=0)
    assert len(history.history["loss"]) < 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_keras_terminate_on_nan_raise_error_raises_error():
    """Keras: terminate_on_nan_test.py::test_terminate_on_nan_raise_error_raises_error and
    test_raise_error_terminate_does_not_trigger_on_train_end (the loss overflows inside, as above).

    Whether NumPy also warns of the overflow depends on which kernels run (numba's do not warn), so
    the test asserts only what Keras's does: the error, and no on_train_end.
    """
    x, y = classes()
    ended = []
    with pytest.raises(RuntimeError, match="TerminateOnNaN: the loss is (nan|inf)"):
        overflowing_model().fit(x, y, epochs=1, batch_size=1, verbose=0, callbacks=[
            LambdaCallback(on_train_end=lambda logs: ended.append(True)), TerminateOnNaN(raise_error=True)])
    assert not ended


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_keras_raise_error_terminate_preserves_backup(tmp_path):
    """Keras: terminate_on_nan_test.py::test_raise_error_terminate_preserves_backup."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    (backup_dir / "checkpoint.txt").write_text("dummy checkpoint")
    x, y = classes()
    with pytest.raises(RuntimeError, match="TerminateOnNaN"):
        overflowing_model().fit(x, y, epochs=1, batch_size=1, verbose=0, callbacks=[
            BackupAndRestore(backup_dir=backup_dir, save_freq=1), TerminateOnNaN(raise_error=True)])
    assert (backup_dir / "checkpoint.txt").read_text() == "dummy checkpoint"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_keras_raise_error_terminate_stops_on_later_batch():
    """Keras: terminate_on_nan_test.py::test_raise_error_terminate_stops_on_later_batch. Keras puts inf in the
    second target; normlab refuses that at fit's door, so the second input overflows the loss instead."""
    model = normlab.Sequential([Dense(1, kernel_initializer=initializers.Constant(1e10), use_bias=False)])
    model.compile(optimizer=optimizers.SGD(0.0), loss="mse")
    x = np.array([[1.0], [1e30]], dtype=np.float32)
    seen = []
    with pytest.raises(RuntimeError, match="at batch 1"):
        model.fit(x, np.ones_like(x), epochs=1, batch_size=1, verbose=0, shuffle=False, callbacks=[
            LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(batch)),
            TerminateOnNaN(raise_error=True)])
    assert seen == [0, 1]


@pytest.mark.parametrize("raise_error", [False, True])
def test_keras_normal_training_does_not_raise_either_way(raise_error):
    """Keras: terminate_on_nan_test.py::test_normal_training_does_not_raise (both settings)."""
    model = normlab.Sequential([Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    history = model.fit(x, x, epochs=2, callbacks=[TerminateOnNaN(raise_error=raise_error)], verbose=0)
    assert len(history.history["loss"]) == 2
    assert TerminateOnNaN.from_config(TerminateOnNaN(raise_error=raise_error).get_config()).raise_error is raise_error


def test_keras_normal_training_does_not_raise():
    """Keras: terminate_on_nan_test.py::test_normal_training_does_not_raise (the default callback)."""
    model = normlab.Sequential([Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    history = model.fit(x, x, epochs=2, callbacks=[TerminateOnNaN()], verbose=0)
    assert len(history.history["loss"]) == 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_keras_raise_error_terminate_does_not_trigger_on_train_end_and_preserves_backup(tmp_path):
    """Keras: terminate_on_nan_test.py::test_raise_error_terminate_does_not_trigger_on_train_end and
    test_raise_error_terminate_preserves_backup, with normlab's raising path: without TerminateOnNaN the
    optimizer refuses the non-finite step (NonFiniteError); fit ends without on_train_end, so
    BackupAndRestore keeps its folder and the files in it."""
    from normlab.errors import NonFiniteError

    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    (backup_dir / "checkpoint.txt").write_text("dummy checkpoint")
    ended = []
    x, y = classes()
    with pytest.raises(NonFiniteError):
        overflowing_model().fit(x, y, epochs=1, verbose=0, callbacks=[
            BackupAndRestore(backup_dir=backup_dir, save_freq=1),
            LambdaCallback(on_train_end=lambda logs: ended.append(True))])
    assert not ended
    assert (backup_dir / "checkpoint.txt").read_text() == "dummy checkpoint"


# ------------------------------------------------------------ LambdaCallback
def _lambda_model():
    model = normlab.Sequential([Dense(1)])
    model.compile(optimizer=optimizers.SGD(), loss="mse")
    rng = np.random.default_rng(0)
    return model, rng.standard_normal((16, 2)).astype(np.float32), rng.standard_normal((16, 1)).astype(np.float32)


def test_keras_lambda_callback():
    """Keras: lambda_callback_test.py::test_lambda_callback (a list instead of log records)."""
    model, x, y = _lambda_model()
    calls = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: calls.append("on_train_begin"),
        on_epoch_begin=lambda epoch, logs: calls.append("on_epoch_begin"),
        on_epoch_end=lambda epoch, logs: calls.append("on_epoch_end"),
        on_train_end=lambda logs: calls.append("on_train_end"),
    )
    model.fit(x, y, batch_size=4, validation_split=0.2, callbacks=[cb], epochs=5, verbose=0)
    assert calls == ["on_train_begin"] + ["on_epoch_begin", "on_epoch_end"] * 5 + ["on_train_end"]


def test_keras_lambda_callback_with_batches():
    """Keras: lambda_callback_test.py::test_lambda_callback_with_batches."""
    model, x, y = _lambda_model()
    calls = []
    cb = LambdaCallback(on_train_batch_begin=lambda batch, logs: calls.append(("begin", batch)),
                        on_train_batch_end=lambda batch, logs: calls.append(("end", batch)))
    model.fit(x, y, batch_size=4, validation_split=0.2, callbacks=[cb], epochs=5, verbose=0)
    # int(16 * 0.2) = 3 samples held out; 13 in batches of 4: 4 per epoch
    assert calls == [(kind, b) for _ in range(5) for b in range(4) for kind in ("begin", "end")]


def test_keras_lambda_callback_with_kwargs():
    """Keras: lambda_callback_test.py::test_lambda_callback_with_kwargs (on_test_begin in evaluate)."""
    model, x, y = _lambda_model()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    calls = []
    model.evaluate(x, y, batch_size=4, verbose=0,
                   callbacks=[LambdaCallback(on_test_begin=lambda logs: calls.append("custom_on_test_begin"))])
    assert calls == ["custom_on_test_begin"]


def test_keras_lambda_callback_during_prediction():
    """Keras: lambda_callback_test.py::test_lambda_callback_during_prediction."""
    model, x, _ = _lambda_model()
    model.build((None, 2), seed=0)
    calls = []
    model.predict(x, batch_size=4, verbose=0,
                  callbacks=[LambdaCallback(on_predict_begin=lambda logs: calls.append("on_predict_begin"))])
    assert calls == ["on_predict_begin"]


def test_lambda_callback_takes_every_hook():
    """Keras 3 takes any hook as a keyword (``**kwargs``): each one is called where the protocol calls it."""
    model, x, y = _lambda_model()
    calls = []
    hooks = {name: (lambda name: lambda *args: calls.append(name))(name) for name in LambdaCallback._HOOKS}
    cb = LambdaCallback(**hooks)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb], validation_data=(x, y))
    model.evaluate(x, y, batch_size=8, verbose=0, callbacks=[cb])
    model.predict(x, batch_size=8, verbose=0, callbacks=[cb])
    # given on_train_batch_begin/end, their older names on_batch_begin/end are not called (as in Keras)
    assert set(calls) == set(LambdaCallback._HOOKS) - {"on_batch_begin", "on_batch_end"}
    # on_batch_begin/end are the train-batch hooks' older names: a callback given only them is called per batch
    seen = []
    model.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[LambdaCallback(on_batch_end=lambda batch, logs: seen.append(batch))])
    assert seen == [0, 1]
    with pytest.raises(ValueError, match="unknown hook.*on_batch_middle"):
        LambdaCallback(on_batch_middle=lambda *a: None)


def test_keras_lambda_callback_no_args():
    """Keras: lambda_callback_test.py::test_lambda_callback_no_args."""
    assert isinstance(LambdaCallback(), LambdaCallback)


def test_keras_lambda_callback_with_additional_kwargs():
    """Keras: lambda_callback_test.py::test_lambda_callback_with_additional_kwargs. Keras sets any keyword
    as an attribute; normlab refuses a name that is no hook (a misspelt hook would never run)."""
    with pytest.raises(ValueError, match="LambdaCallback: unknown hook"):
        LambdaCallback(custom_method=lambda logs: None)


# ----------------------------------------------------- LearningRateScheduler
@pytest.fixture
def lr_setup():
    x, y = classes()
    model = normlab.Sequential([Dense(5), Dense(2)])
    model.compile(loss="mse", optimizer="sgd")
    return model, x, y


def test_keras_lrs_updates_learning_rate(lr_setup):
    """Keras: learning_rate_scheduler_test.py::test_updates_learning_rate."""
    model, x, y = lr_setup
    model.fit(x, y, callbacks=[LearningRateScheduler(lambda step: 1.0 / (2.0 + step))], epochs=1, verbose=0)
    assert model.optimizer.learning_rate == 0.5


def test_keras_lrs_verbose_logging(lr_setup, capsys):
    """Keras: learning_rate_scheduler_test.py::test_verbose_logging (printed here, logged there)."""
    model, x, y = lr_setup
    model.fit(x, y, callbacks=[LearningRateScheduler(lambda step: 1.0 / (1.0 + step), verbose=1)],
              epochs=1, verbose=0)
    assert "LearningRateScheduler setting learning rate to 1.0" in capsys.readouterr().out


def test_keras_lrs_schedule_dependent_on_previous_learning_rate(lr_setup):
    """Keras: learning_rate_scheduler_test.py::test_schedule_dependent_on_previous_learning_rate."""
    model, x, y = lr_setup
    initial_lr = 0.03
    model.compile(loss="mse", optimizer=optimizers.Adam(initial_lr))
    model.fit(x, y, callbacks=[LearningRateScheduler(lambda step, lr: lr / 2)], epochs=2, verbose=0)
    assert model.optimizer.learning_rate == initial_lr / 4.0


def test_keras_lrs_throws_when_optimizer_has_schedule(lr_setup):
    """Keras: learning_rate_scheduler_test.py::test_throws_when_optimizer_has_schedule."""
    model, x, y = lr_setup
    model.compile(loss="mse", optimizer=optimizers.Adam(
        schedules.PolynomialDecay(initial_learning_rate=0.1, decay_steps=10)))
    with pytest.raises(TypeError, match="LearningRateScheduler: the optimizer's learning_rate is a schedule"):
        model.fit(x, y, callbacks=[LearningRateScheduler(lambda step, lr: lr / 2)], epochs=2, verbose=0)


def test_keras_lrs_learning_rate_in_history(lr_setup):
    """Keras: learning_rate_scheduler_test.py::test_learning_rate_in_history."""
    model, x, y = lr_setup
    history = model.fit(x, y, callbacks=[LearningRateScheduler(lambda step, lr: 0.5)], epochs=1, verbose=0)
    assert "learning_rate" in history.history
    assert type(history.history["learning_rate"][0]) is float
    assert history.history["learning_rate"][0] == 0.5


# --------------------------------------------------------- ReduceLROnPlateau
@pytest.fixture
def plateau_setup():
    x, y = classes()
    xt, yt = classes(seed=1)
    model = normlab.Sequential([Dense(5), Dense(2)])
    model.compile(loss="mse", optimizer=optimizers.Adam(0.1))
    return model, x, y, (xt, yt)


def test_keras_rlrop_reduces_lr_with_model_fit(plateau_setup):
    """Keras: reduce_lr_on_plateau_test.py::test_reduces_lr_with_model_fit (the rate is float64 here:
    0.1 * 0.1 exactly as computed, where Keras compares float32 values with 0.01)."""
    model, x, y, val = plateau_setup
    cb = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)
    model.fit(x, y, validation_data=val, callbacks=[cb], epochs=2, verbose=0)
    assert model.optimizer.learning_rate == 0.1 * 0.1


def test_keras_rlrop_throws_when_optimizer_has_schedule(plateau_setup):
    """Keras: reduce_lr_on_plateau_test.py::test_throws_when_optimizer_has_schedule."""
    model, x, y, val = plateau_setup
    model.compile(loss="mse", optimizer=optimizers.Adam(
        schedules.PolynomialDecay(initial_learning_rate=0.1, decay_steps=10)))
    cb = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100)
    with pytest.raises(TypeError, match="ReduceLROnPlateau: the optimizer's learning_rate is a schedule"):
        model.fit(x, y, validation_data=val, callbacks=[cb], epochs=2, verbose=0)


def test_keras_rlrop_verbose_logging(plateau_setup, capsys):
    """Keras: reduce_lr_on_plateau_test.py::test_verbose_logging."""
    model, x, y, val = plateau_setup
    cb = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100, verbose=1)
    model.fit(x, y, validation_data=val, callbacks=[cb], epochs=2, verbose=0)
    assert f"ReduceLROnPlateau reducing learning rate to {0.1 * 0.1}" in capsys.readouterr().out


def test_keras_rlrop_honors_min_lr(plateau_setup):
    """Keras: reduce_lr_on_plateau_test.py::test_honors_min_lr."""
    model, x, y, val = plateau_setup
    cb = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=10, min_lr=0.005)
    model.fit(x, y, validation_data=val, callbacks=[cb], epochs=4, verbose=0)
    assert model.optimizer.learning_rate == 0.005


def test_keras_rlrop_cooldown(plateau_setup):
    """Keras: reduce_lr_on_plateau_test.py::test_cooldown (a cooldown of 2: reduced at epochs 1 and 3)."""
    model, x, y, val = plateau_setup
    cb = ReduceLROnPlateau(patience=1, factor=0.1, monitor="val_loss", min_delta=100, cooldown=2)
    model.fit(x, y, validation_data=val, callbacks=[cb], epochs=4, verbose=0)
    assert model.optimizer.learning_rate == 0.1 * 0.1 * 0.1


def test_keras_rlrop_state_reset_across_fit_calls(plateau_setup):
    """Keras: reduce_lr_on_plateau_test.py::test_state_reset_across_fit_calls (Keras resets best to None,
    normlab to inf in min mode)."""
    model = plateau_setup[0]
    cb = ReduceLROnPlateau(patience=1, factor=0.1, monitor="loss", min_delta=0, cooldown=2)
    cb.set_model(model)
    cb.on_train_begin()
    cb.best, cb.wait, cb.cooldown_counter = 0.5, 3, 2
    cb.on_train_begin()
    assert cb.best == math.inf and cb.wait == 0 and cb.cooldown_counter == 0


# ----------------------------------------------------------- ModelCheckpoint
def _ckpt_model():
    model = normlab.Sequential([Dense(5, activation="relu"), Dense(2, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    return model


def test_keras_model_checkpoint_options(tmp_path):
    """Keras: model_checkpoint_test.py::test_model_checkpoint_options, cases 1-6 and 11-14 (the folder is
    created; monitors and modes; initial_value_threshold). Cases 5 and 6 differ on purpose: Keras warns
    about an unknown monitor or mode and saves anyway or falls back to "auto"; normlab raises."""
    x, y = classes()
    val = classes(seed=1)
    model = _ckpt_model()
    filepath = str(tmp_path / "subdir" / "checkpoint.npz")

    def fit(**kw):
        model.fit(x, y, batch_size=BATCH_SIZE, validation_data=val, epochs=1, verbose=0,
                  callbacks=[ModelCheckpoint(filepath, **kw)])

    for kw in (dict(monitor="val_loss", save_best_only=False, mode="auto"),  # case 1
               dict(monitor="val_loss", save_best_only=False, mode="min"),  # case 2
               dict(monitor="val_accuracy", save_best_only=False, mode="max"),  # case 3
               dict(monitor="val_accuracy", save_best_only=True, mode="max"),  # case 4
               dict(monitor="val_accuracy", save_best_only=True, mode="max", initial_value_threshold=-0.01),  # 11
               dict(monitor="val_loss", save_best_only=True, mode="auto")):  # case 12
        fit(**kw)
        assert os.path.exists(filepath), kw
        os.remove(filepath)
    # case 5: a monitor the logs do not have
    with pytest.raises(ValueError, match="'unknown' is not in the logs"):
        fit(monitor="unknown", save_best_only=True, mode="min")
    # case 6: an unknown mode
    with pytest.raises(ValueError, match="'mode' parameter of ModelCheckpoint"):
        ModelCheckpoint(filepath, mode="unknown")
    # cases 13 and 14: a loss of 0 to beat is never beaten: nothing is saved
    for mode in ("min", "auto"):
        fit(monitor="val_loss", save_best_only=True, mode=mode, initial_value_threshold=0)
        assert not os.path.exists(filepath)


def test_keras_model_checkpoint_epoch_in_filepath(tmp_path):
    """Keras: model_checkpoint_test.py::test_model_checkpoint_options, cases 8a and 10a as far as they
    apply: file names through ``{epoch:02d}`` (1-based), one per epoch end; ``{batch}`` in the name is
    refused before training when saving at epoch ends (Keras raises KeyError at the first save)."""
    x, y = classes()
    filepath = str(tmp_path / "checkpoint.epoch{epoch:02d}.npz")
    _ckpt_model().fit(x, y, batch_size=BATCH_SIZE, epochs=4, verbose=0,
                      callbacks=[ModelCheckpoint(filepath, monitor="loss")])
    assert sorted(os.listdir(tmp_path)) == [f"checkpoint.epoch{e:02d}.npz" for e in (1, 2, 3, 4)]
    model = _ckpt_model()
    with pytest.raises(ValueError, match=r"uses \{batch\} \(it saves at epoch ends"):
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0,
                  callbacks=[ModelCheckpoint(str(tmp_path / "b{epoch:02d}-{batch:02d}.npz"))])
    assert model.optimizer.iterations == 0


@pytest.mark.parametrize("suffix", [".npz", ".weights.h5"])
def test_keras_model_checkpoint_save_freq(tmp_path, suffix):
    """Keras: model_checkpoint_test.py::test_model_checkpoint_options, cases 8a/8b (save_freq=15 with 5
    batches an epoch: epochs 3, 6 and 9), 9 (save_freq values) and 10a/10b ({batch} with save_freq=1)."""
    if suffix == ".weights.h5":
        pytest.importorskip("h5py")
    x, y = classes(n=30)
    val = classes(n=10, seed=1)
    for weights_only in (False, True):
        if suffix == ".weights.h5" and not weights_only:
            continue
        folder = tmp_path / f"w{int(weights_only)}"
        filepath = str(folder / ("checkpoint.epoch{epoch:02d}" + suffix))
        _ckpt_model().fit(x, y, batch_size=6, validation_data=val, epochs=10, verbose=0,
                          callbacks=[ModelCheckpoint(filepath, save_freq=15, save_weights_only=weights_only)])
        assert sorted(os.listdir(folder)) == [os.path.basename(filepath.format(epoch=e)) for e in (3, 6, 9)]
    # case 9
    with pytest.raises(ValueError, match="'save_freq' parameter of ModelCheckpoint"):
        ModelCheckpoint(filepath, save_freq="invalid_save_freq")
    for bad in (0, -3, 2.5, True):
        with pytest.raises((ValueError, TypeError), match="save_freq"):
            ModelCheckpoint(filepath, save_freq=bad)
    ModelCheckpoint(filepath, save_weights_only=True, save_freq="epoch")
    ModelCheckpoint(filepath, save_weights_only=True, save_freq=3)
    # cases 10a and 10b: 10 samples in batches of 5, five epochs
    for weights_only in (False, True):
        folder = tmp_path / f"b{int(weights_only)}"
        filepath = str(folder / ("checkpoint.epoch{epoch:02d}batch{batch:02d}" + suffix))
        if suffix == ".weights.h5" and not weights_only:
            continue
        _ckpt_model().fit(*classes(), batch_size=5, epochs=5, verbose=0,
                          callbacks=[ModelCheckpoint(filepath, monitor="loss", save_freq=1,
                                                     save_weights_only=weights_only)])
        assert sorted(os.listdir(folder)) == sorted(os.path.basename(filepath.format(epoch=e, batch=b))
                                                    for e in range(1, 6) for b in (1, 2))


def test_model_checkpoint_save_freq_best_only_monitors_the_batch_logs(tmp_path):
    """save_freq=<int> with save_best_only: the batch logs' running loss decides; a val_ monitor is refused
    before training (Keras warns at each save and saves anyway)."""
    x, y = classes(n=30)
    model = _ckpt_model()
    with pytest.raises(ValueError, match="monitor='val_loss' with save_freq=2"):
        model.fit(x, y, batch_size=6, epochs=1, verbose=0, validation_data=classes(seed=1),
                  callbacks=[ModelCheckpoint(str(tmp_path / "m.npz"), save_freq=2, save_best_only=True)])
    assert model.optimizer.iterations == 0
    losses = []
    cb = ModelCheckpoint(str(tmp_path / "m{epoch}-{batch}.npz"), monitor="loss", save_freq=2, save_best_only=True)
    model.fit(x, y, batch_size=6, epochs=2, verbose=0, shuffle=False,
              callbacks=[LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(logs["loss"])), cb])
    # every second batch, counted across epochs (5 an epoch): batches 2, 4 of epoch 1, 1, 3, 5 of epoch 2
    checked = [(1, 2), (1, 4), (2, 1), (2, 3), (2, 5)]
    values = [losses[(e - 1) * 5 + b - 1] for e, b in checked]
    best, expected = math.inf, []
    for (e, b), v in zip(checked, values):
        if v < best:
            best = v
            expected.append(f"m{e}-{b}.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(expected) and cb.best == best


def test_keras_model_checkpoint_loading_weights(tmp_path):
    """Keras: model_checkpoint_test.py::test_model_checkpoint_loading, the save_weights_only half: the
    weights file loads into a fresh model of the same architecture."""
    pytest.importorskip("h5py")
    from normlab.models.keras_format import load_weights

    x, y = classes()
    val = classes(seed=1)
    model = _ckpt_model()
    filepath = str(tmp_path / "checkpoint.weights.h5")
    model.fit(x, y, batch_size=BATCH_SIZE, validation_data=val, epochs=1, verbose=0,
              callbacks=[ModelCheckpoint(filepath, monitor="val_loss", save_best_only=True, save_weights_only=True)])
    assert os.path.exists(filepath)
    new_model = _ckpt_model()
    new_model.build((None, x.shape[1]))
    load_weights(new_model, filepath)
    for a, b in zip(model.get_weights(), new_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert new_model.optimizer.iterations == model.optimizer.iterations  # the optimizer's variables too


def test_keras_model_checkpoint_loading(tmp_path):
    """Keras: model_checkpoint_test.py::test_model_checkpoint_loading (the saved model loads with the
    weights the model ended with)."""
    x, y = classes()
    val = classes(seed=1)
    model = _ckpt_model()
    filepath = str(tmp_path / "checkpoint.model.npz")
    model.fit(x, y, batch_size=BATCH_SIZE, validation_data=val, epochs=1, verbose=0,
              callbacks=[ModelCheckpoint(filepath, monitor="val_loss", save_best_only=True, mode="auto")])
    assert os.path.exists(filepath)
    new_model = normlab.load_model(filepath)
    ref, new = model.get_weights(), new_model.get_weights()
    assert len(ref) == len(new)
    for a, b in zip(ref, new):
        np.testing.assert_array_equal(a, b)
