import csv
import re

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.callbacks import CSVLogger, EarlyStopping, LambdaCallback, TerminateOnNaN, train_on_all_data
from normlab.layers import Dense


def data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((3, 4)) * 3)[y] + rng.standard_normal((n, 4))
    return x.astype(np.float32), y


def build(lr=0.1, **opt_kwargs):
    m = normlab.Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")])
    m.compile(optimizer=optimizers.SGD(learning_rate=lr, **opt_kwargs), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the run diverges on purpose
def test_terminate_on_nan_stops_at_the_first_bad_batch():
    x, y = data()
    m = build(lr=1e6, on_nonfinite="proceed")  # diverges
    seen = []
    hist = m.fit(x, y, batch_size=8, epochs=5, verbose=0, seed=0,
                 callbacks=[TerminateOnNaN(), LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(logs["loss"]))])
    assert not np.isfinite(seen[-1]) and all(np.isfinite(seen[:-1]))
    assert len(hist.history["loss"]) == 1


def test_csv_logger_writes_and_appends(tmp_path):
    x, y = data()
    path = tmp_path / "log.csv"
    build().fit(x, y, epochs=2, verbose=0, seed=0, callbacks=[CSVLogger(str(path))])
    rows = list(csv.reader(open(path)))
    assert rows[0][0] == "epoch" and "loss" in rows[0] and "accuracy" in rows[0]
    assert [r[0] for r in rows[1:]] == ["0", "1"]
    build().fit(x, y, epochs=1, verbose=0, seed=0, callbacks=[CSVLogger(str(path), append=True)])
    rows = list(csv.reader(open(path)))
    assert len(rows) == 4 and rows[0][0] == "epoch" and rows[3][0] == "0"


def test_lambda_callback_hooks_and_errors():
    x, y = data()
    calls = []
    cb = LambdaCallback(on_train_begin=lambda logs: calls.append("begin"), on_epoch_end=lambda e, logs: calls.append(e))
    build().fit(x, y, epochs=2, verbose=0, seed=0, callbacks=[cb])
    assert calls == ["begin", 0, 1]
    with pytest.raises(ValueError, match="unknown hook"):
        LambdaCallback(on_batch_done=print)
    with pytest.raises(ValueError, match="'on_epoch_end' parameter of LambdaCallback must be"):
        LambdaCallback(on_epoch_end=3)


def test_early_stopping_restores_best_weights_in_a_real_fit():
    x, y = data()
    m = build(lr=0.5)
    snapshots = []
    es = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    hist = m.fit(x, y, epochs=30, verbose=0, seed=0, validation_split=0.25, callbacks=[
        es, LambdaCallback(on_epoch_end=lambda e, logs: snapshots.append(m.get_weights()))])
    best = int(np.argmin(hist.history["val_loss"]))
    assert best == es.best_epoch
    for a, b in zip(m.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(a, b)


def test_train_on_all_data_retrain_and_continue():
    x, y = data(120)
    xt, yt, xv, yv = x[:90], y[:90], x[90:], y[90:]
    m = build()
    es = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    m.fit(xt, yt, batch_size=16, epochs=40, validation_data=(xv, yv), verbose=0, seed=0, callbacks=[es])
    assert es.best_step == (es.best_epoch + 1) * 6  # 90 samples / 16 per batch = 6 steps per epoch

    steps = []
    fresh, info = train_on_all_data(
        "retrain", x_train=xt, y_train=yt, x_val=xv, y_val=yv, early_stopping=es,
        build_fn=lambda: _counting(build(), steps), batch_size=16, seed=0,
    )
    assert info["steps"] == es.best_step and len(steps) == es.best_step

    before = m.evaluate(xt, yt, batch_size=16, return_dict=True)["loss"]
    model, info = train_on_all_data(
        "continue", x_train=xt, y_train=yt, x_val=xv, y_val=yv, early_stopping=es, model=m, batch_size=16, seed=0, max_epochs=50,
    )
    assert info["val_loss"] <= info["target_loss"] or info["epochs"] == 50
    assert model is m and info["target_loss"] == pytest.approx(before)
    with pytest.raises(ValueError, match="'strategy'"):
        train_on_all_data("sometimes", x_train=xt, y_train=yt, x_val=xv, y_val=yv, early_stopping=es)
    with pytest.raises(ValueError, match="needs build_fn"):
        train_on_all_data("retrain", x_train=xt, y_train=yt, x_val=xv, y_val=yv, early_stopping=es)


def _counting(model, steps):
    orig = model._train_step

    def step(xb, yb, wb=None):
        steps.append(len(xb))
        return orig(xb, yb, wb)

    model._train_step = step
    return model


# ------------------------------------------------------------ ModelCheckpoint
def _weights(m):
    return [w.copy() for w in m.get_weights()]


@pytest.mark.parametrize(
    "template, match",
    [
        ("ckpt-{epoch", r"ModelCheckpoint: 'filepath' 'ckpt-\{epoch' is not a valid format template"),
        ("ckpt-{epoch:02d}}", r"not a valid format template"),
        ("ckpt-{}.npz", r"positional field \{\}"),
        ("ckpt-{0}.npz", r"positional field \{0\}"),
    ],
)
def test_model_checkpoint_refuses_a_malformed_template_at_construction(template, match):
    from normlab.callbacks import ModelCheckpoint

    with pytest.raises(ValueError, match=match):
        ModelCheckpoint(template)


@pytest.mark.parametrize(
    "template, bad",
    [
        ("m-{bogus}.npz", "{bogus}"),
        ("m-{epoch:02d}-{val_acuracy:.2f}.npz", "{val_acuracy}"),
        ("m-{batch}.npz", "{batch} (it saves at epoch ends"),
        ("m-{loss:.{digits}f}.npz", "{digits}"),
    ],
)
def test_model_checkpoint_refuses_an_unknown_key_before_the_first_step(tmp_path, template, bad):
    from normlab.callbacks import ModelCheckpoint

    x, y = data()
    m = build()
    m.build((None, 4), seed=0)
    before = _weights(m)
    cb = ModelCheckpoint(str(tmp_path / "ck" / template))
    with pytest.raises(ValueError, match="ModelCheckpoint: 'filepath' .* uses " + re.escape(bad)) as e:
        m.fit(x, y, epochs=2, verbose=0, seed=0, callbacks=[cb])
    assert "val_accuracy" in str(e.value) and "learning_rate" in str(e.value)  # the keys it could use
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)  # not one step was taken
    assert m.optimizer.iterations == 0
    assert not (tmp_path / "ck").exists()


def test_model_checkpoint_formats_keys_and_creates_its_folder_at_train_begin(tmp_path):
    from normlab.callbacks import ModelCheckpoint

    x, y = data()
    folder = tmp_path / "a" / "b"
    seen = []
    cb = ModelCheckpoint(str(folder / "m-{epoch:02d}-{val_loss:.3f}-{{x}}.npz"), monitor="val_loss")
    spy = LambdaCallback(on_train_begin=lambda logs: seen.append(folder.is_dir()))
    hist = build().fit(x, y, epochs=2, verbose=0, seed=0, validation_split=0.25, callbacks=[cb, spy])
    assert seen == [True]  # created before the first epoch, by on_train_begin
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"m-{e + 1:02d}-{v:.3f}-{{x}}.npz" for e, v in enumerate(hist.history["val_loss"])]
    assert cb.last_saved == str(folder / names[-1])
    assert normlab.load_model(cb.last_saved).count_params() == 67  # (4 * 8 + 8) + (8 * 3 + 3)


def test_model_checkpoint_templated_folders(tmp_path):
    from normlab.callbacks import ModelCheckpoint

    x, y = data()
    cb = ModelCheckpoint(str(tmp_path / "runs" / "e{epoch}" / "model.npz"))
    assert cb.fixed_folder() == str(tmp_path / "runs")
    build().fit(x, y, epochs=2, verbose=0, seed=0, callbacks=[cb])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["e1", "e2"]
    assert (tmp_path / "runs" / "e2" / "model.npz").is_file()


def test_model_checkpoint_validation_key_without_validation_names_the_key(tmp_path):
    from normlab.callbacks import ModelCheckpoint

    x, y = data()
    cb = ModelCheckpoint(str(tmp_path / "m-{val_loss:.2f}.npz"), monitor="loss")
    with pytest.raises(ValueError, match=r"uses \{val_loss\}, which is not in the logs of epoch 1; available: .*loss"):
        build().fit(x, y, epochs=1, verbose=0, seed=0, callbacks=[cb])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ CSVLogger
def _fit_logging(path, epochs=1, **kwargs):
    x, y = data()
    build().fit(x, y, epochs=epochs, verbose=0, seed=0, callbacks=[CSVLogger(str(path), **kwargs)])


def test_csv_logger_append_keeps_the_files_separator_and_column_order(tmp_path):
    path = tmp_path / "log.csv"
    # a file written by another tool: ";" separated, its own column order, no line end at the end
    path.write_text("epoch;loss;accuracy;learning_rate;global_norm\r\n0;1.5;0.25;0.1;2.0", newline="")
    _fit_logging(path, epochs=2, append=True)  # configured "," but the file's ";" wins
    rows = list(csv.reader(open(path, newline=""), delimiter=";"))
    assert rows[0] == ["epoch", "loss", "accuracy", "learning_rate", "global_norm"]
    assert rows[1] == ["0", "1.5", "0.25", "0.1", "2.0"]
    assert [r[0] for r in rows[2:]] == ["0", "1"] and all(len(r) == 5 for r in rows)
    for r in rows[2:]:
        loss, acc, lr = float(r[1]), float(r[2]), float(r[3])
        assert loss > 0 and 0 <= acc <= 1 and lr == pytest.approx(0.1)


def test_csv_logger_append_widens_the_header_for_a_new_key(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,1.5\n")
    x, y = data()
    build().fit(x, y, epochs=1, verbose=0, seed=0, validation_split=0.25,
                callbacks=[CSVLogger(str(path), append=True)])
    rows = list(csv.reader(open(path, newline="")))
    new = sorted(["accuracy", "global_norm", "learning_rate", "val_accuracy", "val_loss"])
    assert rows[0] == ["epoch", "loss"] + new
    assert rows[1] == ["0", "1.5"] + ["NA"] * len(new)
    assert len(rows) == 3 and len(rows[2]) == len(rows[0]) and "NA" not in rows[2]


def test_csv_logger_append_missing_column_is_na_and_empty_file_gets_a_header(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss,val_loss\n")
    _fit_logging(path, append=True)
    rows = list(csv.reader(open(path, newline="")))
    assert rows[0][:3] == ["epoch", "loss", "val_loss"] and rows[1][2] == "NA"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _fit_logging(empty, append=True, separator="\t")
    rows = list(csv.reader(open(empty, newline=""), delimiter="\t"))
    assert rows[0][0] == "epoch" and "loss" in rows[0] and len(rows) == 2


def test_csv_logger_refuses_to_append_to_a_file_that_is_not_a_log(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    with pytest.raises(ValueError, match=r"CSVLogger: .*notes.txt does not start with an 'epoch' column"):
        _fit_logging(path, append=True)
    assert path.read_text() == "my notes\n"


def test_csv_logger_separator_must_be_one_character(tmp_path):
    with pytest.raises(ValueError, match=r"The 'separator' parameter of CSVLogger must be a str of one character"):
        CSVLogger(str(tmp_path / "x.csv"), separator=";;")


def test_csv_logger_creates_its_folder(tmp_path):
    path = tmp_path / "logs" / "run.csv"
    _fit_logging(path)
    assert list(csv.reader(open(path)))[0][0] == "epoch"


@pytest.mark.parametrize("make", [
    lambda d: __import__("normlab").callbacks.ModelCheckpoint(str(d)),
    lambda d: CSVLogger(str(d)),
], ids=["ModelCheckpoint", "CSVLogger"])
def test_a_folder_for_a_file_is_refused_before_the_first_step(tmp_path, make):
    x, y = data()
    m = build()
    cb = make(tmp_path)
    with pytest.raises(IsADirectoryError, match=rf"{type(cb).__name__}: '(filepath|filename)' is a folder") as e:
        m.fit(x, y, epochs=1, verbose=0, seed=0, callbacks=[cb])
    assert e.value.filename == str(tmp_path)
    assert m.optimizer.iterations == 0


def test_model_checkpoint_config_round_trips_save_freq_and_weights_only(tmp_path):
    from normlab.callbacks import ModelCheckpoint

    cb = ModelCheckpoint(str(tmp_path / "w{epoch}-{batch}.npz"), monitor="loss", save_weights_only=True, save_freq=7)
    again = ModelCheckpoint.from_config(cb.get_config())
    assert again.get_config() == cb.get_config()
    assert (again.save_freq, again.save_weights_only) == (7, True)
    assert ModelCheckpoint(str(tmp_path / "m.npz")).get_config()["save_freq"] == "epoch"
