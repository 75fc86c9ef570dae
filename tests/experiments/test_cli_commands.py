"""normlab train / experiment / bench: --help everywhere, configs, errors."""

import json
import sys
from pathlib import Path

import pytest

from normlab.cli import bench as bench_cli
from normlab.cli.main import main
from normlab.cli.train import ConfigError, load_config, validate_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SUBCOMMANDS = [
    [],
    ["demo"],
    ["train"],
    ["experiment"],
    ["experiment", "bn-paper"],
    ["experiment", "regularization"],
    ["experiment", "mnist1d"],
    ["experiment", "normprop"],
    ["experiment", "optimizers"],
    ["experiment", "moving-stats"],
    ["bench"],
    ["warmup"],
]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c) or "normlab")
def test_help_everywhere(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(cmd + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: normlab")


def test_experiment_without_name_prints_help(capsys):
    assert main(["experiment"]) == 2
    assert "bn-paper" in capsys.readouterr().out


def test_unknown_option_is_an_error():
    with pytest.raises(SystemExit) as e:
        main(["demo", "--no-such-option"])
    assert e.value.code == 2


TINY = """
[data]
dataset = "digits"

[[layers]]
type = "Dense"
units = 16
use_bias = false

[[layers]]
type = "BatchNormalization"

[[layers]]
type = "Activation"
activation = "relu"

[[layers]]
type = "Dense"
units = 10
activation = "softmax"

[optimizer]
name = "adam"
learning_rate = 0.01

[training]
epochs = 2
batch_size = 64
validation_split = 0.1
seed = 3

[[callbacks]]
type = "EarlyStopping"
patience = 1

[output]
model = "{model}"
history = "{history}"
"""


def test_train_from_config(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("normlab.optimizers")
    import numpy as np

    import normlab
    from normlab.datasets import load_digits

    model_path, hist_path = tmp_path / "out" / "m.npz", tmp_path / "h.json"
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.format(model=model_path.as_posix(), history=hist_path.as_posix()))
    assert main(["train", "--config", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test: loss:" in out and "accuracy:" in out
    assert model_path.is_file()
    model = normlab.load_model(model_path)
    (_, _), (x_test, y_test) = load_digits()
    pred = model.predict(x_test)
    assert pred.shape == (len(x_test), 10)
    hist = json.loads(hist_path.read_text())
    assert len(hist["history"]["loss"]) == 2 and "val_loss" in hist["history"]
    acc = float(np.mean(pred.argmax(1) == y_test))
    assert acc == pytest.approx(hist["test"]["accuracy"], abs=1e-6)


def test_example_config_is_valid():
    cfg = load_config(EXAMPLES / "digits_bn.toml")
    assert cfg["data"]["dataset"] == "digits"
    assert [c.__name__ for c, _ in cfg["layers"]][:3] == ["Dense", "BatchNormalization", "Activation"]


def _raw(**changes):
    raw = {
        "data": {"dataset": "digits"},
        "layers": [{"type": "Dense", "units": 10, "activation": "softmax"}],
        "optimizer": {"name": "adam"},
    }
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    "raw, match",
    [
        (_raw(model={}), r"unknown key 'model'"),
        (_raw(layers=[{"type": "Dense", "unit": 10}]), r"\[\[layers\]\] #1 \(Dense\): unknown key 'unit'"),
        (_raw(layers=[{"type": "Dens", "units": 10}]), r"unknown layer type 'Dens'"),
        (_raw(layers=[{"units": 10}]), r"has no 'type'"),
        (_raw(layers=[]), r"\[\[layers\]\] is empty"),
        (_raw(data={"dataset": "cifar10"}), r"unknown dataset 'cifar10'"),
        (_raw(data={"dataset": "digits", "shuffle": True}), r"\[data\]: unknown key 'shuffle'"),
        (_raw(training={"epochs": 0}), r"'epochs' must be an integer >= 1"),
        (_raw(training={"epoch": 3}), r"\[training\]: unknown key 'epoch'"),
        (_raw(training={"validation_split": 1.5}), r"validation_split"),
        (_raw(callbacks=[{"type": "EarlyStoping"}]), r"unknown callback type 'EarlyStoping'"),
        (_raw(callbacks=[{"type": "EarlyStopping", "patiense": 2}]), r"unknown key 'patiense'"),
        (_raw(output={"model": 3}), r"'model' must be a path string"),
        (_raw(optimizer={"learning_rate": 0.1}), r"\[optimizer\] needs 'name'"),
        ({"layers": []}, r"missing section \[data\]"),
    ],
)
def test_bad_configs(raw, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(raw, source="bad.toml")


def test_bad_config_files_exit_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\ndataset = 'digits'\n")
    # a mistake in the config is a usage error (2), like one on the command line
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad.write_text('[data]\ndataset = "digits"\n[[layers]]\ntype = "Dense"\nunits = -3\n')
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normlab train: ") and "[[layers]] #1 (Dense)" in err and "units" in err
    assert "Traceback" not in err


def _relative_config(tmp_path, **training):
    folder = tmp_path / "configs"
    folder.mkdir()
    text = TINY.format(model="m.npz", history="runs/h.json")
    for key, value in training.items():
        text = text.replace(f"\n{key} = ", f"\n{key} = {value}\n# was: ")
    cfg = folder / "tiny.toml"
    cfg.write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return cfg, elsewhere


def test_train_outputs_go_next_to_the_config(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    cfg, elsewhere = _relative_config(tmp_path)
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--config", str(cfg), "--quiet"]) == 0
    assert (cfg.parent / "m.npz").is_file() and (cfg.parent / "runs" / "h.json").is_file()
    assert list(elsewhere.iterdir()) == []
    out = capsys.readouterr().out
    assert f"saved the model to {cfg.parent / 'm.npz'}" in out


def test_train_outputs_go_to_the_output_folder(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    cfg, elsewhere = _relative_config(tmp_path)
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--config", str(cfg), "--quiet", "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "m.npz").is_file() and (tmp_path / "out" / "runs" / "h.json").is_file()
    assert not (cfg.parent / "m.npz").exists()


def test_train_output_naming_a_model_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", "x.toml", "--output", str(tmp_path / "model.npz")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: normlab train") and "argument --output: a folder now" in err


def test_train_batch_size_larger_than_the_training_set_is_an_error(tmp_path, capsys):
    pytest.importorskip("sklearn")
    cfg, _ = _relative_config(tmp_path, batch_size=100000)
    assert main(["train", "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    # digits: 1437 training images, 143 of them held out by validation_split = 0.1
    assert "[training] batch_size 100000 is more than the 1294 training samples of digits" in err
    assert "use at most 1294" in err
    assert not (cfg.parent / "m.npz").exists()


def test_train_off_a_terminal_prints_epoch_lines_without_carriage_returns(tmp_path, capsys):
    pytest.importorskip("sklearn")
    cfg, _ = _relative_config(tmp_path)
    assert main(["train", "--config", str(cfg)]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    epochs = [l for l in captured.out.splitlines() if l.startswith("Epoch ")]
    hist = json.loads((cfg.parent / "runs" / "h.json").read_text())["history"]
    assert len(epochs) == len(hist["loss"]) == 2
    for line, val_loss in zip(epochs, hist["val_loss"]):
        assert f"val_loss: {val_loss:.4g}" in line


def test_bench_forwards_options(monkeypatch, tmp_path):
    calls = []

    class FakeRunner:
        @staticmethod
        def main(argv):
            calls.append(argv)

    monkeypatch.setattr(bench_cli, "find_benchmarks", lambda path=None: tmp_path)
    monkeypatch.setattr(bench_cli, "import_runner", lambda root: FakeRunner)
    assert main(["bench", "--quick", "--threads", "2", "--no-torch", "--batches", "60", "128"]) == 0
    assert calls == [["--quick", "--threads", "2", "--no-torch", "--batches", "60", "128"]]


def test_bench_without_suite(monkeypatch, capsys):
    monkeypatch.setattr(bench_cli, "find_benchmarks", lambda path=None: None)
    assert main(["bench"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("normlab bench: ") and "benchmarks/run.py" in err and "--path" in err


def test_bench_finds_the_repository_suite():
    root = bench_cli.find_benchmarks()
    if root is None:
        pytest.skip("not running from a source checkout")
    assert (root / "benchmarks" / "run.py").is_file()


def test_experiment_cli_tiny(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("normlab.optimizers")
    out = tmp_path / "res"
    assert main(["experiment", "bn-paper", "--dataset", "digits", "--steps", "8", "--eval-every", "4",
                 "--out", str(out), "--no-plots"]) == 0
    assert (out / "bn_paper.json").is_file() and (out / "bn_paper.md").is_file()
    assert "BN >= baseline" in capsys.readouterr().out


def test_experiment_batch_size_larger_than_the_data_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment", "mnist1d", "--models", "logistic", "--steps", "1", "--seeds", "1", "--no-plots",
              "--batch-size", "100000", "--out", str(tmp_path / "res")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: normlab experiment mnist1d")
    assert "argument --batch-size: 100000 is more than the 4000 training samples" in err
    assert not (tmp_path / "res").exists()


def test_experiment_without_matplotlib_says_so_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["experiment", "regularization", "--steps", "1", "--out", str(tmp_path / "res")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing trained
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("normlab experiment regularization: ")
    assert 'pip install "normlab[plot]"' in lines[0] and "--no-plots" in lines[0]
