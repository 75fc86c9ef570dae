"""ProgbarLogger and verbose="auto": a bar only on a terminal, full epoch lines everywhere."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import normlab
from normlab import optimizers
from normlab.callbacks import ProgbarLogger
from normlab.callbacks.progbar import interactive, resolve_verbose
from normlab.layers import BatchNormalization, Dense


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((3, 5)) * 3)[y] + rng.standard_normal((n, 5))
    return x.astype(np.float32), y


def model():
    m = normlab.Sequential([Dense(8, use_bias=False), BatchNormalization(), Dense(3, activation="softmax")])
    m.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def fit_with(logger, epochs=3):
    x, y = data()
    return model().fit(x, y, batch_size=16, epochs=epochs, verbose=0, validation_split=0.25, seed=0,
                       callbacks=[logger])


def test_interactive():
    assert interactive(FakeTerminal())
    assert not interactive(io.StringIO())
    assert not interactive(object())  # no isatty at all
    closed = io.StringIO()
    closed.close()
    assert not interactive(closed)  # isatty raises ValueError


def test_verbose_1_off_a_terminal_writes_one_full_line_per_epoch():
    out = io.StringIO()
    hist = fit_with(ProgbarLogger(1, file=out))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [l.split(" - ")[0] for l in lines] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    for line, loss, val_loss in zip(lines, hist.history["loss"], hist.history["val_loss"]):
        assert f"loss: {loss:.4g}" in line and f"val_loss: {val_loss:.4g}" in line
        assert "val_accuracy: " in line and "learning_rate: " in line


def test_verbose_1_on_a_terminal_draws_a_bar_and_ends_each_epoch_with_the_full_line(monkeypatch):
    # a narrow terminal: tqdm cuts its own line to 40 columns, the epoch's line must not be cut
    monkeypatch.setenv("COLUMNS", "40")
    term = FakeTerminal()
    hist = fit_with(ProgbarLogger(1, file=term), epochs=2)
    text = term.getvalue()
    assert "\r" in text and "Epoch 1/2:" in text  # the bar
    # the last thing of each epoch is its full line, on a line of its own
    finals = [seg.split("\r")[-1] for seg in text.split("\n") if seg.strip()]
    assert len(finals) == 2
    for epoch, line in enumerate(finals):
        assert line.startswith(f"Epoch {epoch + 1}/2 - ")
        assert f"val_loss: {hist.history['val_loss'][epoch]:.4g}" in line
        assert len(line) > 40


def test_verbose_2_writes_lines_to_stdout(capsys):
    fit_with(ProgbarLogger(2), epochs=2)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert [l.split(" - ")[0] for l in captured.out.splitlines()] == ["Epoch 1/2", "Epoch 2/2"]


def test_progbar_logger_rejects_bad_verbose():
    with pytest.raises(ValueError, match="ProgbarLogger: 'verbose' must be 1 or 2, got 0"):
        ProgbarLogger(0)


def test_resolve_verbose(monkeypatch):
    monkeypatch.setattr(sys, "stdout", FakeTerminal())
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert resolve_verbose("auto", "f") == 1
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # stdout redirected to a file
    assert resolve_verbose("auto", "f") == 2
    assert [resolve_verbose(v, "f") for v in (0, 1, 2)] == [0, 1, 2]
    for bad in (3, -1, "yes", None):
        with pytest.raises(ValueError, match=r"Sequential\.fit: 'verbose' must be 'auto', 0, 1 or 2"):
            resolve_verbose(bad, "Sequential.fit")


def test_fit_auto_off_a_terminal_is_one_line_per_epoch(capsys):
    x, y = data()
    model().fit(x, y, batch_size=16, epochs=2, seed=0)  # verbose="auto", the default
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    assert [l.split(" - ")[0] for l in captured.out.splitlines()] == ["Epoch 1/2", "Epoch 2/2"]


def test_evaluate_and_predict_check_verbose(capsys):
    x, y = data()
    m = model()
    m.fit(x, y, epochs=1, verbose=0, seed=0)
    res = m.evaluate(x, y, verbose="auto", return_dict=True)
    assert f"loss: {res['loss']:.4f}" in capsys.readouterr().out
    assert m.predict(x, verbose="auto").shape == (len(x), 3)
    with pytest.raises(ValueError, match=r"Sequential\.evaluate: 'verbose'"):
        m.evaluate(x, y, verbose=5)
    with pytest.raises(ValueError, match=r"Sequential\.predict: 'verbose'"):
        m.predict(x, verbose="loud")


def test_fit_redirected_to_a_file_has_no_carriage_returns(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np, normlab
        from normlab.layers import Dense
        rng = np.random.default_rng(0)
        x = rng.standard_normal((400, 6)).astype("float32"); y = (x[:, 0] > 0).astype("int64")
        m = normlab.Sequential([Dense(16, activation="relu"), Dense(2, activation="softmax")])
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=26, batch_size=8, validation_split=0.2, seed=0)
        """
    )
    log = tmp_path / "log.txt"
    env = dict(os.environ, NORMLAB_DISABLE_NUMBA="1", COLUMNS="80")
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", script], stdout=f, stderr=subprocess.STDOUT, env=env, check=True)
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 26 and all(l.startswith(f"Epoch {i + 1}/26 - ") for i, l in enumerate(lines))
    assert all("val_accuracy: " in l for l in lines)
