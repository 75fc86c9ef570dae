import csv

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

    def step(xb, yb):
        steps.append(len(xb))
        return orig(xb, yb)

    model._train_step = step
    return model
