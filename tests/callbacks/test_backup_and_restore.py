"""BackupAndRestore: an interrupted fit resumes where it stopped, bit for bit.

Tests named ``test_keras_*`` are ports of Keras 3's
``keras/src/callbacks/backup_and_restore_test.py`` (the Keras test is named
in each docstring). Keras counts training calls with a ``CanaryLayer``; here
the optimizer's step count plays that part: it is saved and restored with
the backup just as the canary's counter is.
"""

import json
import os

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.callbacks import BackupAndRestore, Callback
from normlab.layers import BatchNormalization, Dense, GaussianNoise


class Interrupt(Callback):
    """Keras's InterruptingCallback: raise after the ``steps_int``-th batch or the ``epoch_int``-th epoch."""

    def __init__(self, steps_int=None, epoch_int=None, exc=RuntimeError):
        super().__init__()
        self.batch_count = self.epoch_count = 0
        self.steps_int, self.epoch_int, self.exc = steps_int, epoch_int, exc

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_count += 1
        if self.epoch_int is not None and self.epoch_count == self.epoch_int:
            raise self.exc("EpochInterruption")

    def on_batch_end(self, batch, logs=None):
        self.batch_count += 1
        if self.steps_int is not None and self.batch_count == self.steps_int:
            raise self.exc("StepsInterruption")


def make_model(stateful=False):
    layers = [Dense(1)]
    if stateful:  # moving statistics, a generator and Adam's slots: everything a backup must carry
        layers = [Dense(4), BatchNormalization(), GaussianNoise(0.1), Dense(1)]
    m = normlab.Sequential(layers)
    m.compile(loss="mse", optimizer=optimizers.Adam(1e-2) if stateful else "sgd")
    return m


def data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 3)).astype(np.float32), rng.random((n, 1)).astype(np.float32)


def _fit_honours_a_resume_epoch() -> bool:
    """Whether fit starts at ``model._initial_epoch`` when a callback sets it in on_train_begin (Keras)."""

    class Resume(Callback):
        def on_train_begin(self, logs=None):
            self.model._initial_epoch = 1

    x, y = data(4)
    hist = make_model().fit(x, y, epochs=2, verbose=0, seed=0, callbacks=[Resume()])
    return hist.epoch == [1]


def _fit_skips_taken_steps() -> bool:
    """Whether fit skips the first ``model._initial_step`` batches of the epoch it resumes at."""

    class Resume(Callback):
        def on_train_begin(self, logs=None):
            self.model._initial_epoch, self.model._initial_step = 0, 1

    x, y = data(4)
    model = make_model()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, seed=0, callbacks=[Resume()])
    return model.optimizer.iterations == 1


FIT_SKIPS_TAKEN_STEPS = _fit_skips_taken_steps()


# fit's side of the resume (reading model._initial_epoch after on_train_begin) is the trainer's: these
# tests show what it must do until it does
needs_resume = pytest.mark.xfail(
    not _fit_honours_a_resume_epoch(), strict=True,
    reason="fit does not yet start at model._initial_epoch set by a callback's on_train_begin (issue 22)",
)
needs_step_skip = pytest.mark.xfail(
    not FIT_SKIPS_TAKEN_STEPS, strict=True,
    reason="fit does not yet skip the model._initial_step batches a mid-epoch backup had taken (issue 22)",
)


def iterations(model):
    return model.optimizer.iterations


# ------------------------------------------------------------- Keras's tests
def test_keras_save_freq_unknown_error():
    """Keras: test_save_freq_unknown_error."""
    for bad in ("batch", 0.15, 0, True):
        with pytest.raises(ValueError, match="'save_freq' parameter of BackupAndRestore"):
            BackupAndRestore(backup_dir="backup_dir", save_freq=bad)


def test_keras_backup_dir_empty_error():
    """Keras: test_backup_dir_empty_error."""
    with pytest.raises(ValueError, match="'backup_dir' parameter of BackupAndRestore must be a non-empty path"):
        BackupAndRestore(backup_dir="", save_freq="epoch")


def test_keras_backup_dir_none_error():
    """Keras: test_backup_dir_none_error (a ValueError there; here an InvalidParameterError, also a TypeError)."""
    with pytest.raises(ValueError, match="'backup_dir' parameter of BackupAndRestore must be an instance of str"):
        BackupAndRestore(backup_dir=None, save_freq="epoch")
    with pytest.raises(TypeError, match="'backup_dir' parameter of BackupAndRestore"):
        BackupAndRestore()  # required


def test_keras_best_case_step(tmp_path):
    """Keras: test_best_case_step. Keras resumes a mid-epoch backup at the start of its epoch, training
    its first batches again (17 steps in all); a trainer that skips them takes 15, as an uninterrupted run."""
    backup_dir = tmp_path / "subdir"
    model = make_model()
    cbk = BackupAndRestore(backup_dir, save_freq=1)
    x, y = data()
    with pytest.raises(RuntimeError, match="StepsInterruption"):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[cbk, Interrupt(steps_int=2)])
    assert backup_dir.exists()
    assert (cbk._epoch, cbk._step) == (0, 2)
    assert iterations(model) == 2
    state = json.loads((backup_dir / "training_state.json").read_text())
    assert (state["latest"]["epoch"], state["latest"]["step"]) == (0, 2)
    hist = model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[cbk])
    assert cbk._epoch == 5 and hist.epoch[-1] == 4 and hist.epoch[0] == 0
    # the restored 2 steps, then epoch 0 from where the backup was taken (or from its start)
    assert iterations(model) == (5 * 3 if FIT_SKIPS_TAKEN_STEPS else 2 + 5 * 3)
    assert not backup_dir.exists()


@needs_resume
def test_keras_best_case_epoch(tmp_path):
    """Keras: test_best_case_epoch."""
    backup_dir = tmp_path / "subdir"
    model = make_model()
    assert iterations(model) == 0
    cbk = BackupAndRestore(backup_dir=backup_dir, save_freq="epoch")
    x, y = data()
    with pytest.raises(RuntimeError, match="EpochInterruption"):
        model.fit(x, y, batch_size=4, epochs=6, verbose=0, callbacks=[cbk, Interrupt(epoch_int=2)])
    assert cbk._epoch == 2 and backup_dir.exists()
    assert iterations(model) == 6
    hist = model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[cbk])
    assert cbk._epoch == 5 and hist.epoch == [2, 3, 4]
    assert iterations(model) == 5 * 3


@needs_resume
def test_keras_backup_corrupted(tmp_path):
    """Keras: test_backup_corrupted. With double_checkpoint, a damaged latest backup falls back to the previous one."""
    backup_dir = tmp_path / "subdir"
    model = make_model()
    cbk = BackupAndRestore(backup_dir=backup_dir, save_freq="epoch", double_checkpoint=True)
    x, y = data()
    with pytest.raises(RuntimeError, match="EpochInterruption"):
        model.fit(x, y, batch_size=4, epochs=6, verbose=0, callbacks=[cbk, Interrupt(epoch_int=2)])
    assert cbk._epoch == 2
    state = json.loads((backup_dir / "training_state.json").read_text())
    assert state["latest"]["epoch"] == 2 and state["previous"]["epoch"] == 1
    latest, previous = backup_dir / state["latest"]["file"], backup_dir / state["previous"]["file"]
    assert latest.exists() and previous.exists()
    assert iterations(model) == 6
    latest.write_text("0")  # damage the latest weights
    hist = model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[cbk])
    assert cbk._epoch == 5 and hist.epoch == [1, 2, 3, 4]
    assert iterations(model) == 5 * 3  # 3 restored from the epoch-1 backup, 4 epochs of 3 steps


def test_keras_model_deleted_case_epoch(tmp_path):
    """Keras: test_model_deleted_case_epoch. A completed fit deletes the backup."""
    backup_dir = tmp_path / "subdir"
    model = make_model()
    cbk = BackupAndRestore(backup_dir, save_freq="epoch")
    x, y = data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[cbk])
    assert not backup_dir.exists()


# ------------------------------------------------------- exact resumption
@needs_resume
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_fit_resumes_bit_for_bit(tmp_path, exc):
    """Interrupted at epoch 2, resumed in a fresh model: the weights, moving statistics, Adam's slots
    and the noise layer's generator end exactly as in the uninterrupted run."""
    x, y = data(24)
    kw = dict(batch_size=5, epochs=5, verbose=0, seed=7)
    reference = make_model(stateful=True)
    ref_hist = reference.fit(x, y, **kw)

    backup_dir = tmp_path / "backup"
    first = make_model(stateful=True)
    with pytest.raises(exc):
        first.fit(x, y, callbacks=[BackupAndRestore(backup_dir), Interrupt(epoch_int=2, exc=exc)], **kw)
    # a new process: a new model, built from another seed, restored from the backup
    resumed = make_model(stateful=True)
    resumed.build((None, 3), seed=123)
    hist = resumed.fit(x, y, callbacks=[BackupAndRestore(backup_dir)], **kw)

    assert hist.epoch == [2, 3, 4]
    assert hist.history["loss"] == ref_hist.history["loss"][2:]
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    for la, lb in zip(reference.layers, resumed.layers):
        for k in la.buffers:
            np.testing.assert_array_equal(la.buffers[k], lb.buffers[k])
    ref_state, state = reference.optimizer.get_state(), resumed.optimizer.get_state()
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        np.testing.assert_array_equal(ref_state[k], state[k])
    assert reference.layers[2].get_rng_state() == resumed.layers[2].get_rng_state()
    assert not backup_dir.exists()


@needs_resume
@needs_step_skip
def test_mid_epoch_backup_resumes_bit_for_bit(tmp_path):
    """save_freq=2 with 5 batches an epoch, interrupted after the 8th: the backup is at epoch 1, step 3."""
    x, y = data(24)
    kw = dict(batch_size=5, epochs=3, verbose=0, seed=7)
    reference = make_model(stateful=True)
    reference.fit(x, y, **kw)
    first = make_model(stateful=True)
    with pytest.raises(KeyboardInterrupt):
        first.fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b", save_freq=2),
                                   Interrupt(steps_int=8, exc=KeyboardInterrupt)], **kw)
    state = json.loads((tmp_path / "b" / "training_state.json").read_text())
    assert (state["latest"]["epoch"], state["latest"]["step"]) == (1, 3)
    resumed = make_model(stateful=True)
    resumed.build((None, 3), seed=5)
    hist = resumed.fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b", save_freq=2)], **kw)
    assert hist.epoch == [1, 2]
    assert resumed.optimizer.iterations == reference.optimizer.iterations == 15
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


@needs_resume
def test_same_model_object_resumes_bit_for_bit(tmp_path):
    x, y = data(24)
    kw = dict(batch_size=5, epochs=4, verbose=0, seed=3)
    reference = make_model(stateful=True)
    reference.fit(x, y, **kw)
    model = make_model(stateful=True)
    cbk = BackupAndRestore(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, callbacks=[cbk, Interrupt(epoch_int=1, exc=KeyboardInterrupt)], **kw)
    model.fit(x, y, callbacks=[cbk], **kw)
    for a, b in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ the restore itself
def test_restore_sets_the_resume_position_and_state_in_place(tmp_path):
    x, y = data(12)
    model = make_model(stateful=True)
    cbk = BackupAndRestore(tmp_path / "b")
    with pytest.raises(RuntimeError):
        model.fit(x, y, batch_size=4, epochs=3, verbose=0, seed=0, callbacks=[cbk, Interrupt(epoch_int=2)])
    saved = [w.copy() for w in model.get_weights()]
    other = make_model(stateful=True)
    other.build((None, 3), seed=99)
    other.compile(loss="mse", optimizer=optimizers.Adam(1e-2))
    other._prepare_training()
    arrays = [layer.params[k] for layer in other.layers for k in layer.params]
    restorer = BackupAndRestore(tmp_path / "b")
    restorer.set_model(other)
    restorer.on_train_begin()
    assert other._initial_epoch == 2 and other._initial_step == 0
    assert other.optimizer.iterations == 6
    for a, b in zip(saved, other.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the same arrays (views into the optimizer's buffers), written in place
    assert all(a is b for a, b in zip(arrays, [layer.params[k] for layer in other.layers for k in layer.params]))


def test_no_backup_leaves_the_model_alone(tmp_path):
    model = make_model()
    model.build((None, 3), seed=0)
    before = [w.copy() for w in model.get_weights()]
    cbk = BackupAndRestore(tmp_path / "none")
    cbk.set_model(model)
    cbk.on_train_begin()
    assert getattr(model, "_initial_epoch", None) is None
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "none").exists()


def test_backup_of_another_model_is_refused_with_nothing_changed(tmp_path):
    x, y = data(12)
    cbk = BackupAndRestore(tmp_path / "b")
    with pytest.raises(RuntimeError):
        make_model().fit(x, y, epochs=3, verbose=0, callbacks=[cbk, Interrupt(epoch_int=1)])
    other = normlab.Sequential([Dense(2), Dense(1)])
    other.compile(loss="mse", optimizer="sgd")
    other.build((None, 3), seed=0)
    before = [w.copy() for w in other.get_weights()]
    cbk2 = BackupAndRestore(tmp_path / "b")
    cbk2.set_model(other)
    with pytest.raises(ValueError, match="BackupAndRestore: the backup .* is not of this model: it has 1 layers"):
        cbk2.on_train_begin()
    for a, b in zip(before, other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unbuilt_model_is_an_error(tmp_path):
    x, y = data(12)
    cbk = BackupAndRestore(tmp_path / "b")
    with pytest.raises(RuntimeError):
        make_model().fit(x, y, epochs=3, verbose=0, callbacks=[cbk, Interrupt(epoch_int=1)])
    cbk.set_model(make_model())
    with pytest.raises(ValueError, match="BackupAndRestore: model .* must be built before fit"):
        cbk.on_train_begin()


def test_damaged_state_file_is_an_error_naming_it(tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    (d / "training_state.json").write_text('{"latest": 3}')
    model = make_model()
    model.build((None, 3), seed=0)
    cbk = BackupAndRestore(d)
    cbk.set_model(model)
    with pytest.raises(ValueError, match="training_state.json is not a backup's training state"):
        cbk.on_train_begin()


def test_damaged_backup_without_a_previous_one_is_an_error(tmp_path):
    x, y = data(12)
    cbk = BackupAndRestore(tmp_path / "b")
    model = make_model()
    with pytest.raises(RuntimeError):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[cbk, Interrupt(epoch_int=2)])
    state = json.loads((tmp_path / "b" / "training_state.json").read_text())
    assert state["previous"] is None
    (tmp_path / "b" / state["latest"]["file"]).write_bytes(b"0")
    cbk.set_model(model)
    with pytest.raises(ValueError, match="no backup in .* can be read"):
        cbk.on_train_begin()


# ------------------------------------------------------------------ files
def test_one_backup_file_at_a_time_and_two_with_double_checkpoint(tmp_path):
    x, y = data(12)
    for double, expected in ((False, 1), (True, 2)):
        d = tmp_path / f"b{double}"
        counts = []

        class Count(Callback):
            def on_epoch_end(self, epoch, logs=None):
                counts.append(len([f for f in os.listdir(d) if f.endswith(".npz")]))

        make_model().fit(x, y, epochs=3, verbose=0,
                         callbacks=[BackupAndRestore(d, double_checkpoint=double), Count()])
        assert counts == [1, expected, expected]
        assert not d.exists()


def test_delete_checkpoint_false_keeps_the_backup_and_other_files_are_kept(tmp_path):
    x, y = data(12)
    d = tmp_path / "b"
    make_model().fit(x, y, epochs=2, verbose=0, callbacks=[BackupAndRestore(d, delete_checkpoint=False)])
    state = json.loads((d / "training_state.json").read_text())
    assert state["latest"]["epoch"] == 2 and (d / state["latest"]["file"]).exists()
    # a folder holding someone else's file: only the backup's own files go
    (d / "notes.txt").write_text("mine")
    make_model().fit(x, y, epochs=3, verbose=0, callbacks=[BackupAndRestore(d)])
    assert sorted(os.listdir(d)) == ["notes.txt"]


def test_save_freq_counts_batches_across_epochs(tmp_path):
    x, y = data(12)
    d = tmp_path / "b"
    seen = []

    class Look(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (d / "training_state.json").exists():
                e = json.loads((d / "training_state.json").read_text())["latest"]
                seen.append((e["epoch"], e["step"]))

    # 3 batches an epoch, a backup every 2: after the 2nd (0, 2), the 4th (1, 1), the 6th (1, 3)
    make_model().fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[BackupAndRestore(d, save_freq=2), Look()])
    assert sorted(set(seen)) == [(0, 2), (1, 1), (1, 3)]


def test_get_config_round_trip(tmp_path):
    cbk = BackupAndRestore(tmp_path / "b", save_freq=5, double_checkpoint=True, delete_checkpoint=False)
    again = BackupAndRestore.from_config(json.loads(json.dumps(cbk.get_config())))
    assert again.get_config() == cbk.get_config()
    assert normlab.callbacks.registry.lookup("BackupAndRestore") is BackupAndRestore


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_a_diverged_state_is_not_backed_up(tmp_path):
    """With on_nonfinite="proceed" the weights turn inf, then NaN: the backup of the last finite state stays."""
    x, y = data(12)
    model = normlab.Sequential([Dense(1)])
    model.compile(loss="mse", optimizer=optimizers.SGD(1.0, on_nonfinite="proceed"))
    d = tmp_path / "b"
    x[:, 0] *= 1e19  # huge but finite weights after the first step, inf after the second, NaN after the third
    with pytest.warns(RuntimeWarning, match=r"BackupAndRestore: the model holds NaN or inf at epoch \d") as rec:
        with pytest.raises(RuntimeError, match="EpochInterruption"):
            model.fit(x, y, batch_size=12, epochs=5, verbose=0, seed=0,
                      callbacks=[BackupAndRestore(d), Interrupt(epoch_int=3)])
    skipped = [str(w.message).split(";")[0] for w in rec if "BackupAndRestore" in str(w.message)]
    assert [m.split(" at ")[-1] for m in skipped] == ["epoch 2, step 0", "epoch 3, step 0"]
    assert not np.isfinite(model.get_weights()[0]).all()
    state = json.loads((d / "training_state.json").read_text())
    assert state["latest"]["epoch"] == 1
    saved = normlab.load_model(d / state["latest"]["file"])
    assert all(np.isfinite(w).all() for w in saved.get_weights())


@needs_resume
def test_functional_model_resumes_bit_for_bit(tmp_path):
    def make():
        inp = normlab.Input((3,))
        h = Dense(4, activation="relu")(inp)
        out = Dense(1)(BatchNormalization()(h))
        m = normlab.Model(inp, out)
        m.compile(loss="mse", optimizer=optimizers.Adam(1e-2))
        if initial:  # a functional model is built at construction, from a generator of its own
            m.set_weights(initial)
        return m

    initial = []
    initial = make().get_weights()

    x, y = data(20)
    kw = dict(batch_size=6, epochs=4, verbose=0, seed=11)
    reference = make()
    reference.fit(x, y, **kw)
    with pytest.raises(RuntimeError):
        make().fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b"), Interrupt(epoch_int=2)], **kw)
    resumed = make()
    resumed.fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b")], **kw)
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
