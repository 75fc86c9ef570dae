"""normlab train / experiment / bench: --help everywhere, configs, errors."""

import json
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
    ["bench"],
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


def test_bad_config_files_exit_with_a_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\ndataset = 'digits'\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(bad)])
    assert "not valid TOML" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(tmp_path / "missing.toml")])
    assert "no such file" in str(e.value.code)
    bad.write_text('[data]\ndataset = "digits"\n[[layers]]\ntype = "Dense"\nunits = -3\n')
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(bad)])
    assert "[[layers]] #1 (Dense)" in str(e.value.code) and "units" in str(e.value.code)


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


def test_bench_without_suite(monkeypatch):
    monkeypatch.setattr(bench_cli, "find_benchmarks", lambda path=None: None)
    with pytest.raises(SystemExit) as e:
        main(["bench"])
    assert "benchmarks/run.py" in str(e.value.code) and "--path" in str(e.value.code)


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
