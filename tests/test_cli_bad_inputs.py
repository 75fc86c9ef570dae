"""A catalogue of user mistakes on the command line: each gives one line, an exit status, and changes nothing.

Every row runs ``normlab ...`` (in process, through ``main(argv)``; a few
through ``python -m normlab``) in a folder holding a valid config, a model
file from an earlier run and a history file. Each row asserts

* the exit status: 2 for what was typed (an option, the config file or its
  contents), 1 for what the command met (data files, outputs that cannot be
  written);
* exactly one line on stderr (argparse's errors: its usage, then one error
  line), naming the file, the key or option, and what was expected;
* no traceback anywhere;
* nothing written or changed: the folder holds the same files with the same
  bytes and times (the earlier model file untouched), and no training ran.

Ctrl-C and ``--resume`` are tested at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from normlab.cli.main import main

pytest.importorskip("sklearn")  # the configs train on scikit-learn's digits



def _permissions_bind() -> bool:
    """Whether file modes stop this process (not so for root, unless it dropped CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_text()
        except PermissionError:
            return True
        finally:
            probe.chmod(0o644)
        return False


needs_non_root = pytest.mark.skipif(not _permissions_bind(), reason="file modes do not bind this user (root)")

BASE = {
    "data": {"dataset": "digits"},
    "layers": [
        {"type": "Dense", "units": 8, "activation": "relu"},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ],
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "training": {"epochs": 1, "batch_size": 64, "seed": 0},
    "output": {"model": "model.npz", "history": "history.json"},
}


# ------------------------------------------------------------------ helpers
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(cfg: dict) -> str:
    """A small TOML writer for the configs of these tests (tables, arrays of tables, scalars, lists)."""
    lines = []
    for name, value in cfg.items():
        if isinstance(value, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
            for entry in value:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
        else:
            lines.insert(0, f"{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def changed(section, key, value=None, *, delete=False, index=0):
    """BASE with ``[section] key = value`` (in the ``index``-th entry of an array of tables)."""

    def make():
        cfg = json.loads(json.dumps(BASE))
        target = cfg.setdefault(section, [{}] if section == "callbacks" else {})
        if isinstance(target, list):
            target = target[index]
        if delete:
            target.pop(key)
        else:
            target[key] = value
        return cfg

    return make


def with_(**sections):
    def make():
        cfg = json.loads(json.dumps(BASE))
        for k, v in sections.items():
            if v is None:
                cfg.pop(k)
            else:
                cfg[k] = v
        return cfg

    return make


def snapshot(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (p.is_dir(), st.st_mode, st.st_mtime_ns,
                                          None if p.is_dir() or not os.access(p, os.R_OK) else p.read_bytes())
    return out


IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_folder(folder: Path, content) -> Path:
    folder.mkdir(exist_ok=True)
    for name in IDX:
        (folder / name).write_bytes(content(name))
    return folder


def _html(name):
    return b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n"


def _truncated(name):
    # the header of the full MNIST file, and only a few of its bytes
    dims = (60000, 28, 28) if name.startswith("train-images") else (10000, 28, 28) if name.startswith("t10k-i") else (
        (60000,) if name.startswith("train") else (10000,))
    return bytes([0, 0, 8, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes() + bytes(100)


def _swapped(name):
    # a labels file where the images should be: magic 00 00 08 01
    return bytes([0, 0, 8, 1]) + np.asarray([3], dtype=">u4").tobytes() + bytes(3)


def _checkpoint_files(tmp: Path, meta=None, npz=b"PK not a model") -> None:
    """Resume files for ``tmp/run.toml``: ``meta`` (text) or a valid JSON for this config, and ``npz`` (bytes)."""
    from normlab.cli import train

    if meta is None:
        fingerprint = train._fingerprint(train.load_config(tmp / "run.toml"))
        meta = json.dumps({"format": "normlab-train-resume", "format_version": 1, "config_fingerprint": fingerprint,
                           "epoch": 1, "iterations": 23, "stopped": False, "history": {"epoch": [0], "history": {}}})
    (tmp / "model.resume.json").write_text(meta)
    (tmp / "model.resume.npz").write_bytes(npz)


class Case:
    """One row: how to set the folder up, the command, and what must come out."""

    def __init__(self, id, argv, status, *fragments, config=None, raw=None, setup=None, skip=None, argparse=False):
        self.id, self.argv, self.status, self.fragments = id, argv, status, fragments
        self.config, self.raw, self.setup, self.skip, self.argparse = config, raw, setup, skip, argparse

    def __repr__(self):
        return self.id


T = ["train", "--config", "{cfg}", "--quiet"]
CASES = [
    # --- [data]
    Case("data.dataset-type", T, 2, "run.toml", "[data] 'dataset' must be a string", config=changed("data", "dataset", 3)),
    Case("data.dataset-unknown", T, 2, "run.toml", "unknown dataset 'cifar10'", "choose one of digits",
         config=changed("data", "dataset", "cifar10")),
    Case("data.dataset-missing", T, 2, "[data] needs 'dataset'", config=changed("data", "dataset", delete=True)),
    Case("data.flatten-type", T, 2, "[data] 'flatten' must be true or false, got 'yes'",
         config=changed("data", "flatten", "yes")),
    Case("data.path-type", T, 2, "[data] 'path' must be a folder name", config=lambda: {
        **BASE, "data": {"dataset": "mnist", "path": 5}}),
    Case("data.path-unused", T, 2, "[data] 'path' is for the IDX data sets", config=changed("data", "path", "x")),
    Case("data.unknown-key", T, 2, "[data]: unknown key 'shuffle'", config=changed("data", "shuffle", True)),
    Case("data.not-a-table", T, 2, "[data] must be a table", config=with_(data="digits")),
    # --- [[layers]]
    Case("layers.type-type", T, 2, "[[layers]] #1: 'type' must be a string", config=changed("layers", "type", 3)),
    Case("layers.type-unknown", T, 2, "[[layers]] #1: unknown layer type 'Dens'", "Known layer types",
         config=changed("layers", "type", "Dens")),
    Case("layers.type-missing", T, 2, "[[layers]] #1 has no 'type'", config=changed("layers", "type", delete=True)),
    Case("layers.unknown-key", T, 2, "[[layers]] #1 (Dense): unknown key 'unit'", config=changed("layers", "unit", 3)),
    Case("layers.units-type", T, 2, "[[layers]] #1 (Dense)", "'units'", "'abc'", config=changed("layers", "units", "abc")),
    Case("layers.units-range", T, 2, "[[layers]] #1 (Dense)", "'units'", "-3", config=changed("layers", "units", -3)),
    Case("layers.activation-unknown", T, 2, "[[layers]] #2 (Dense)", "bogus",
         config=changed("layers", "activation", "bogus", index=1)),
    Case("layers.units-huge", T, 2, "[[layers]] do not fit the digits inputs of shape (64,)", "Unable to allocate",
         config=changed("layers", "units", 10**12)),
    Case("layers.conv-on-rows", T, 2, "[[layers]] do not fit the digits inputs of shape (64,)", "Conv2D", "rank 4",
         config=with_(layers=[{"type": "Conv2D", "filters": 2, "kernel_size": 3}, BASE["layers"][-1]])),
    Case("layers.too-few-classes", T, 2, "[[layers]] and [training] do not fit the digits data",
         "labels must be in [0, 5) for 5 output units", config=changed("layers", "units", 5, index=1)),
    Case("training.loss-for-other-targets", T, 2, "[[layers]] and [training] do not fit the digits data", "'y'",
         config=changed("training", "loss", "binary_crossentropy")),
    Case("layers.empty", T, 2, "[[layers]] is empty", config=with_(layers=[])),
    Case("layers.not-tables", T, 2, "[[layers]] must be an array of tables", config=with_(layers=3)),
    Case("layers.missing", T, 2, "missing section [layers]", config=with_(layers=None)),
    # --- [optimizer]
    Case("optimizer.name-type", T, 2, "[optimizer] 'name' must be a string", config=changed("optimizer", "name", 3)),
    Case("optimizer.name-unknown", T, 2, "[optimizer] Unknown optimizer 'adamm'. Known names:", "adam",
         config=changed("optimizer", "name", "adamm")),
    Case("optimizer.name-missing", T, 2, "[optimizer] needs 'name'", config=changed("optimizer", "name", delete=True)),
    Case("optimizer.lr-type", T, 2, "[optimizer]", "'learning_rate'", "'fast'",
         config=changed("optimizer", "learning_rate", "fast")),
    Case("optimizer.lr-range", T, 2, "[optimizer]", "'learning_rate'", "-1",
         config=changed("optimizer", "learning_rate", -1)),
    Case("optimizer.unknown-key", T, 2, "[optimizer] (Adam): unknown key 'lr'; allowed:", "learning_rate",
         config=changed("optimizer", "lr", 0.1)),
    # --- [training]
    Case("training.epochs-type", T, 2, "[training] 'epochs' must be an integer >= 1, got 'ten'",
         config=changed("training", "epochs", "ten")),
    Case("training.epochs-range", T, 2, "[training] 'epochs' must be an integer >= 1, got 0",
         config=changed("training", "epochs", 0)),
    Case("training.batch_size-type", T, 2, "[training] 'batch_size' must be an integer >= 1, got 2.5",
         config=changed("training", "batch_size", 2.5)),
    Case("training.batch_size-range", T, 2, "[training] batch_size 100000 is more than the 1437 training samples",
         config=changed("training", "batch_size", 100000)),
    Case("training.validation_split-type", T, 2, "[training] 'validation_split' must be a number in [0, 1), got '0.1'",
         config=changed("training", "validation_split", "0.1")),
    Case("training.validation_split-range", T, 2, "'validation_split' must be a number in [0, 1), got 1.5",
         config=changed("training", "validation_split", 1.5)),
    Case("training.seed-type", T, 2, "run.toml: [training] 'seed' must be an integer in [0, 2**32), got 'abc'",
         config=changed("training", "seed", "abc")),
    Case("training.seed-range", T, 2, "[training] 'seed' must be an integer in [0, 2**32), got -1",
         config=changed("training", "seed", -1)),
    Case("training.shuffle-type", T, 2, "[training] 'shuffle' must be true or false, got 1",
         config=changed("training", "shuffle", 1)),
    Case("training.loss-type", T, 2, "[training] 'loss' must be a string", config=changed("training", "loss", 3)),
    Case("training.loss-unknown", T, 2, "[training]", "bogus_loss", config=changed("training", "loss", "bogus_loss")),
    Case("training.metrics-type", T, 2, "[training] 'metrics' must be a list of metric names",
         config=changed("training", "metrics", "accuracy")),
    Case("training.metrics-unknown", T, 2, "[training]", "bogus_metric",
         config=changed("training", "metrics", ["bogus_metric"])),
    Case("training.distribute-unknown", T, 2, "[training] 'distribute' must be 'DataParallel'",
         config=changed("training", "distribute", "Horovod")),
    Case("training.unknown-key", T, 2, "[training]: unknown key 'epoch'", config=changed("training", "epoch", 3)),
    # --- [[callbacks]]
    Case("callbacks.type-unknown", T, 2, "[[callbacks]] #1: unknown callback type 'EarlyStoping'. Known callback "
         "types: ", " EarlyStopping,", config=changed("callbacks", "type", "EarlyStoping")),
    Case("callbacks.unknown-key", T, 2, "[[callbacks]] #1 (EarlyStopping): unknown key 'patiense'",
         config=with_(callbacks=[{"type": "EarlyStopping", "patiense": 2}])),
    Case("callbacks.patience-type", T, 2, "[[callbacks]] #1 (EarlyStopping)", "'patience'", "'x'",
         config=with_(callbacks=[{"type": "EarlyStopping", "patience": "x"}])),
    Case("callbacks.monitor-without-validation", T, 2, "[[callbacks]] #1 (EarlyStopping): 'monitor' is 'val_loss'",
         "validation_split", config=with_(callbacks=[{"type": "EarlyStopping"}])),
    Case("callbacks.monitor-unknown", T, 2, "'monitor' is 'acc'", "they have: accuracy",
         config=with_(callbacks=[{"type": "ReduceLROnPlateau", "monitor": "acc"}])),
    Case("callbacks.checkpoint-malformed", T, 2, "[[callbacks]] #1 (ModelCheckpoint): 'filepath' ",
         "ck/{epoch.npz' is not a valid format template",
         config=with_(callbacks=[{"type": "ModelCheckpoint", "filepath": "ck/{epoch.npz", "monitor": "loss"}])),
    Case("callbacks.checkpoint-unknown-key", T, 2, "[[callbacks]] #1 (ModelCheckpoint): 'filepath' uses {bogus}",
         config=with_(callbacks=[{"type": "ModelCheckpoint", "filepath": "ck/{bogus}.npz", "monitor": "loss"}])),
    Case("callbacks.csv-separator", T, 2, "[[callbacks]] #1 (CSVLogger)", "'separator'",
         config=with_(callbacks=[{"type": "CSVLogger", "filename": "log.csv", "separator": ";;"}])),
    # --- [output] and the top level
    Case("output.model-type", T, 2, "[output] 'model' must be a path string, got 3", config=changed("output", "model", 3)),
    Case("output.model-empty", T, 2, "[output] 'model' must be a path string, got ''", config=changed("output", "model", "")),
    Case("output.same-file", T, 2, "[output] 'history' and 'model' are the same file",
         config=changed("output", "history", "model.npz")),
    Case("output.unknown-key", T, 2, "[output]: unknown key 'modle'", config=changed("output", "modle", "m.npz")),
    Case("output.is-the-config", T, 2, "the model file ([output] model) would overwrite the config file itself",
         config=changed("output", "model", "run.toml")),
    Case("top.unknown-section", T, 2, "(top level): unknown key 'model'", config=with_(model={"units": 3})),
    Case("top.missing-data", T, 2, "missing section [data]", config=with_(data=None)),
    # --- the file itself
    Case("toml.syntax", T, 2, "run.toml: not valid TOML", "line 1", raw=b"[data\ndataset = 'digits'\n"),
    Case("toml.duplicate-key", T, 2, "run.toml: not valid TOML", raw=b"[data]\ndataset = 'digits'\ndataset = 'mnist'\n"),
    Case("toml.non-utf8", T, 2, "run.toml: not UTF-8 text (byte 0xff on line 2)",
         raw=b"[data]\ndataset = '\xff\xfedigits'\n"),
    Case("toml.nested-arrays", T, 2, "run.toml: not valid TOML here: arrays or inline tables nested too deeply",
         raw=b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n"),
    Case("toml.nested-tables", T, 2, "nested too deeply", raw=b"x = " + b"{a = " * 5000 + b"1" + b"}" * 5000 + b"\n"),
    Case("toml.empty", T, 2, "run.toml: missing section [data]", raw=b""),
    Case("config.missing", ["train", "--config", "{tmp}/nope.toml"], 2, "nope.toml: no such file"),
    Case("config.directory", ["train", "--config", "{tmp}"], 2, "is a folder; --config takes a TOML file"),
    Case("config.unreadable", T, 2, "run.toml: cannot be read (permission denied)",
         setup=lambda tmp: os.chmod(tmp / "run.toml", 0), skip=needs_non_root),
    # --- data files (exit 1: the config is fine, the files are not)
    Case("idx.html", T, 1, "train-images-idx3-ubyte: is not an IDX file", "HTML",
         config=lambda: {**BASE, "data": {"dataset": "mnist", "path": "{tmp}/idx"}},
         setup=lambda tmp: idx_folder(tmp / "idx", _html)),
    Case("idx.truncated", T, 1, "train-images-idx3-ubyte: is truncated",
         config=lambda: {**BASE, "data": {"dataset": "mnist", "path": "{tmp}/idx"}},
         setup=lambda tmp: idx_folder(tmp / "idx", _truncated)),
    Case("idx.wrong-magic", T, 1, "train-images-idx3-ubyte: is an IDX file with 1 dimension(s)", "swapped",
         config=lambda: {**BASE, "data": {"dataset": "fashion-mnist", "path": "{tmp}/idx"}},
         setup=lambda tmp: idx_folder(tmp / "idx", _swapped)),
    Case("idx.missing", T, 1, "Could not find the MNIST IDX files", "Searched:",
         config=lambda: {**BASE, "data": {"dataset": "mnist", "path": "{tmp}/empty"}},
         setup=lambda tmp: (tmp / "empty").mkdir()),
    # --- outputs (exit 1, before any training: the earlier model is untouched)
    Case("out.model-under-a-file", T, 1, "afile/model.npz: cannot create the model file ([output] model) or its "
         "folder", "afile is a file", config=changed("output", "model", "afile/model.npz"),
         setup=lambda tmp: (tmp / "afile").write_text("x")),
    Case("out.model-is-a-folder", T, 1, "the model file ([output] model) is a folder",
         config=changed("output", "model", "sub"), setup=lambda tmp: (tmp / "sub").mkdir()),
    Case("out.history-is-a-folder", T, 1, "the history file ([output] history) is a folder",
         config=changed("output", "history", "sub"), setup=lambda tmp: (tmp / "sub").mkdir()),
    Case("out.model-read-only", T, 1, "model.npz: the model file ([output] model) cannot be written",
         setup=lambda tmp: os.chmod(tmp / "model.npz", 0o444), skip=needs_non_root),
    Case("out.folder-read-only", T, 1, "no permission to write in", config=changed("output", "model", "ro/m.npz"),
         setup=lambda tmp: ((tmp / "ro").mkdir(), os.chmod(tmp / "ro", 0o555)), skip=needs_non_root),
    Case("out.output-dir-is-a-file", T + ["--output", "{tmp}/afile"], 1, "afile is a file",
         setup=lambda tmp: (tmp / "afile").write_text("x")),
    Case("out.checkpoint-folder-under-a-file", T, 1, "folder of [[callbacks]] #1 (ModelCheckpoint)", "afile is a file",
         config=with_(callbacks=[{"type": "ModelCheckpoint", "filepath": "afile/ck/m-{epoch}.npz", "monitor": "loss"}]),
         setup=lambda tmp: (tmp / "afile").write_text("x")),
    Case("out.checkpoint-file-is-a-folder", T, 1, "file of [[callbacks]] #1 (ModelCheckpoint) is a folder",
         config=with_(callbacks=[{"type": "ModelCheckpoint", "filepath": "sub", "monitor": "loss"}]),
         setup=lambda tmp: (tmp / "sub").mkdir()),
    Case("out.csv-log-is-a-folder", T, 1, "file of [[callbacks]] #1 (CSVLogger) is a folder",
         config=with_(callbacks=[{"type": "CSVLogger", "filename": "sub"}]), setup=lambda tmp: (tmp / "sub").mkdir()),
    Case("out.leftover-checkpoint", T, 2, "model.resume.npz: a checkpoint of an unfinished run (interrupted or failed) is there", "--resume",
         setup=lambda tmp: (tmp / "model.resume.npz").write_bytes(b"old")),
    Case("out.resume-without-checkpoint", T + ["--resume"], 2, "--resume: no checkpoint to resume from"),
    Case("out.resume-garbled-checkpoint", T + ["--resume"], 1, "model.resume.json: not a readable checkpoint",
         "delete it and", setup=lambda tmp: _checkpoint_files(tmp, meta="{not json")),
    Case("out.resume-foreign-model-file", T + ["--resume"], 1, "model.resume.npz: not a", "Delete it and",
         setup=lambda tmp: _checkpoint_files(tmp, npz=b"<html>a page, not a model</html>")),
    # --- options of every command (argparse: usage, then one error line)
    Case("train.no-config", ["train"], 2, "the following arguments are required: --config", argparse=True),
    Case("train.epochs-zero", T + ["--epochs", "0"], 2, "argument --epochs: must be >= 1, got 0", argparse=True),
    Case("train.epochs-text", T + ["--epochs", "ten"], 2, "argument --epochs: expected an integer, got 'ten'",
         argparse=True),
    Case("train.output-a-model-file", T + ["--output", "{tmp}/m.npz"], 2, "argument --output: a folder now",
         argparse=True),
    Case("demo.steps", ["demo", "--steps", "0"], 2, "argument --steps: must be >= 1, got 0", argparse=True),
    Case("demo.lr-nan", ["demo", "--lr", "nan"], 2, "argument --lr: must be a finite number, got 'nan'", argparse=True),
    Case("demo.lr-negative", ["demo", "--lr", "-1"], 2, "argument --lr: must be > 0, got -1.0", argparse=True),
    Case("demo.optimizer", ["demo", "--optimizer", "adamm"], 2, "argument --optimizer: invalid choice: 'adamm'",
         argparse=True),
    Case("demo.seed", ["demo", "--seed", "-1"], 2, "argument --seed: must be >= 0, got -1", argparse=True),
    Case("demo.threads", ["demo", "--threads", "-1"], 2, "argument --threads: must be >= 0, got -1", argparse=True),
    Case("demo.batch-size", ["demo", "--batch-size", "100000"], 2, "argument --batch-size: 100000 is more than",
         argparse=True),
    Case("experiment.unknown", ["experiment", "bogus"], 2, "argument EXPERIMENT: invalid choice: 'bogus'",
         argparse=True),
    Case("experiment.unit", ["experiment", "bn-paper", "--unit", "100"], 2, "argument --unit: must be < 100",
         argparse=True),
    Case("experiment.dataset", ["experiment", "bn-paper", "--dataset", "cifar"], 2,
         "argument --dataset: invalid choice: 'cifar'", argparse=True),
    Case("experiment.models", ["experiment", "mnist1d", "--models", "rnn"], 2, "argument --models: invalid choice",
         argparse=True),
    Case("experiment.seeds", ["experiment", "mnist1d", "--seeds", "0"], 2, "argument --seeds: must be >= 1",
         argparse=True),
    Case("experiment.lr", ["experiment", "regularization", "--lr", "0"], 2, "argument --lr: must be > 0", argparse=True),
    Case("experiment.out-is-a-file", ["experiment", "regularization", "--no-plots", "--out", "{tmp}/afile"], 1,
         "afile: the output folder (--out) is a file, not a folder", setup=lambda tmp: (tmp / "afile").write_text("x")),
    Case("experiment.data-path-html", ["experiment", "bn-paper", "--dataset", "mnist", "--data-path", "{tmp}/idx",
                                       "--no-plots", "--out", "{tmp}/res"], 1,
         "train-images-idx3-ubyte: is not an IDX file", "HTML", setup=lambda tmp: idx_folder(tmp / "idx", _html)),
    Case("experiment.data-path-missing", ["experiment", "bn-paper", "--dataset", "mnist", "--data-path", "{tmp}/none",
                                          "--no-plots", "--out", "{tmp}/res"], 1, "Could not find the MNIST IDX files",
         "--data-path"),
    Case("bench.threads", ["bench", "--threads", "0"], 2, "argument --threads: must be >= 1, got 0", argparse=True),
    Case("bench.only", ["bench", "--only", "gpu"], 2, "argument --only: invalid choice: 'gpu'", argparse=True),
    Case("bench.path", ["bench", "--path", "{tmp}/none"], 1, "--path", "none: no benchmarks/run.py there"),
    Case("bench.json-under-a-file", ["bench", "--json", "{tmp}/afile/r.json"], 1, "afile is a file",
         setup=lambda tmp: (tmp / "afile").write_text("x")),
    Case("normlab.unknown-command", ["trian"], 2, "argument COMMAND: invalid choice: 'trian'", argparse=True),
]


def _prepare(case: Case, tmp: Path) -> list[str]:
    """Write the folder: config, an earlier model and history; then the row's own setup."""
    # an earlier run's outputs, which no failed run may touch
    (tmp / "model.npz").write_bytes(b"an earlier model")
    (tmp / "history.json").write_text("{}\n")
    cfg = tmp / "run.toml"
    if case.raw is not None:
        cfg.write_bytes(case.raw)
    else:
        config = (case.config or (lambda: BASE))()
        cfg.write_text(to_toml(config).replace("{tmp}", tmp.as_posix()))
    if case.setup is not None:
        case.setup(tmp)
    return [a.format(cfg=cfg, tmp=tmp.as_posix()) for a in case.argv]


def _params():
    out = []
    for c in CASES:
        marks = [c.skip] if c.skip is not None else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


@pytest.mark.parametrize("case", _params())
def test_a_mistake_gives_one_line_an_exit_status_and_changes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "no-data"))  # the IDX files only where a row puts them
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras"))  # nor a Keras cache of mnist.npz
    monkeypatch.chdir(tmp_path)
    argv = _prepare(case, tmp_path)
    before = snapshot(tmp_path)
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    finally:
        for p in tmp_path.rglob("*"):  # let the fixture clean up what a row made unreadable
            if not p.is_symlink():
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
    out, err = capsys.readouterr()
    assert status == case.status, err
    assert "Traceback" not in out + err
    assert out == ""  # nothing started: no header line, no training
    lines = err.splitlines()
    if case.argparse:
        assert lines[0].startswith("usage: normlab"), err
        assert ": error: " in lines[-1] and not lines[-1].startswith(" ")
    else:
        assert len(lines) == 1, err
        assert lines[0].startswith("normlab "), err
    for fragment in case.fragments:
        assert fragment in lines[-1], f"{fragment!r} not in {lines[-1]!r}"
    after = snapshot(tmp_path)
    assert after.keys() == before.keys(), "a file was written or removed"
    for name in before:
        if name in ("run.toml",) or os.path.isdir(tmp_path / name):
            continue
        assert after[name][2:] == before[name][2:], f"{name} changed"
    assert (tmp_path / "model.npz").read_bytes() == b"an earlier model"


def test_the_catalogue_is_large_and_covers_every_config_key():
    from normlab.cli import _config as train

    assert len(CASES) >= 40
    ids = " ".join(c.id for c in CASES)
    keys = [f"data.{k}" for k in train.DATA_KEYS] + [f"training.{k}" for k in train.TRAINING_DEFAULTS] + [
        f"output.{k}" for k in train.OUTPUT_DEFAULTS if k != "history"] + ["optimizer.name", "layers.type"]
    for key in keys:
        assert f"{key}-" in ids, f"no row for {key}"
    for command in ("train", "demo", "experiment", "bench"):
        assert any(c.argv[0] == command for c in CASES)


# ------------------------------------------------- through the real entry point
def run_cli(args, cwd, **kwargs):
    env = dict(os.environ, NORMLAB_DISABLE_NUMBA="1", NORMLAB_DATA=str(cwd / "no-data"),
               KERAS_HOME=str(cwd / "no-keras"))
    return subprocess.run([sys.executable, "-m", "normlab", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, **kwargs)


@pytest.mark.parametrize("case_id", ["training.seed-type", "toml.non-utf8", "out.model-is-a-folder", "demo.seed"])
def test_the_entry_point_agrees(case_id, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    argv = _prepare(case, tmp_path)
    before = snapshot(tmp_path)
    r = run_cli(argv, tmp_path, timeout=120)
    assert r.returncode == case.status, r.stderr
    assert "Traceback" not in r.stdout + r.stderr and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == (len(lines) if case.argparse else 1), r.stderr
    for fragment in case.fragments:
        assert fragment in lines[-1]
    assert snapshot(tmp_path) == before


def test_callback_files_are_placed_like_the_outputs(tmp_path, monkeypatch, capsys):
    import csv

    cfg = json.loads(json.dumps(BASE))
    cfg["training"]["epochs"] = 2
    # no validation: ModelCheckpoint's default monitor (val_loss) is not read without save_best_only
    cfg["callbacks"] = [{"type": "ModelCheckpoint", "filepath": "ck/m-{epoch}-{loss:.2f}.npz"},
                        {"type": "CSVLogger", "filename": "logs/run.csv"}]
    folder, elsewhere = tmp_path / "cfg", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    (folder / "run.toml").write_text(to_toml(cfg))
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--config", str(folder / "run.toml"), "--quiet"]) == 0
    assert len(list((folder / "ck").glob("m-*.npz"))) == 2
    rows = list(csv.reader(open(folder / "logs" / "run.csv")))
    assert rows[0][0] == "epoch" and len(rows) == 3
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in folder.iterdir()) == ["ck", "history.json", "logs", "model.npz", "run.toml"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the run diverges on purpose
@pytest.mark.parametrize("every_epoch", [False, True], ids=["final-save", "epoch-checkpoint"])
def test_a_diverged_run_is_not_saved_and_says_so(tmp_path, capsys, monkeypatch, every_epoch):
    from normlab.cli import train

    # the NaN weights meet either the checkpoint at an epoch's end or the final save
    monkeypatch.setattr(train._Checkpoint, "max_overhead", float("inf") if every_epoch else 1e-12)
    cfg = json.loads(json.dumps(BASE))
    cfg["layers"][0]["units"] = 64
    cfg["optimizer"] = {"name": "sgd", "learning_rate": 1e30, "on_nonfinite": "proceed"}
    cfg["training"].update(epochs=2, batch_size=32)
    (tmp_path / "run.toml").write_text(to_toml(cfg))
    assert main(["train", "--config", str(tmp_path / "run.toml"), "--quiet"]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    if every_epoch:
        assert lines[0].startswith(f"normlab train: {tmp_path / 'run.toml'}: training stopped: save_model: ")
    else:
        assert lines[0].startswith(f"normlab train: {tmp_path / 'model.npz'}: the model was not saved: save_model: ")
    assert "NaN or inf" in lines[0] and "The checkpoint model.resume.npz (epoch 0) is kept" in lines[0]
    assert not (tmp_path / "model.npz").exists() and (tmp_path / "model.resume.npz").exists()


# ------------------------------------------------------------ Ctrl-C, --resume
def _config(tmp: Path, epochs: int, **training) -> Path:
    cfg = json.loads(json.dumps(BASE))
    cfg["layers"].insert(1, {"type": "Dropout", "rate": 0.2})  # a generator that must resume too
    cfg["training"].update(epochs=epochs, batch_size=128, validation_split=0.1, **training)
    path = tmp / "run.toml"
    path.write_text(to_toml(cfg))
    return path


def _interrupt_at_step(monkeypatch, n: int):
    from normlab.cli import train
    from normlab.models.base import BaseModel

    monkeypatch.setattr(train, "warm_up", lambda work, prog, always=False: None)  # count only the real run's steps
    monkeypatch.setattr(train._Checkpoint, "max_overhead", float("inf"))  # a checkpoint at every epoch's end
    original, calls = BaseModel._train_step, [0]

    def step(self, x, y, w=None):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return original(self, x, y, w)

    monkeypatch.setattr(BaseModel, "_train_step", step)


def test_ctrl_c_keeps_a_checkpoint_and_resume_gives_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    import normlab

    # digits: 1437 - 143 held out = 1294 samples, 11 steps of 128 per epoch; stop in the third epoch
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    assert main(["train", "--config", str(_config(whole, 4)), "--quiet"]) == 0
    capsys.readouterr()

    cfg = _config(parts, 4)
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 2 * 11 + 5)
        assert main(["train", "--config", str(cfg), "--quiet"]) == 130
    out, err = capsys.readouterr()
    lines = [l for l in err.splitlines() if l]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0] == (f"normlab train: interrupted; the model as of epoch 2 of 4 is in {parts / 'model.resume.npz'}: "
                        f"go on with normlab train --config {cfg} --resume")
    assert not (parts / "model.npz").exists() and not (parts / "history.json").exists()
    meta = json.loads((parts / "model.resume.json").read_text())
    assert meta["epoch"] == 2 and meta["iterations"] == 22 and meta["history"]["epoch"] == [0, 1]

    # the same run again without --resume is refused, the checkpoint kept
    assert main(["train", "--config", str(cfg), "--quiet"]) == 2
    assert "a checkpoint of an unfinished run (interrupted or failed) is there" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--quiet", "--resume"]) == 0
    assert "resuming at epoch 3 (2 to go)" in capsys.readouterr().out
    assert not (parts / "model.resume.npz").exists() and not (parts / "model.resume.json").exists()

    a, b = normlab.load_model(whole / "model.npz"), normlab.load_model(parts / "model.npz")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert a.optimizer.iterations == b.optimizer.iterations == 44
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (whole, parts))
    assert ha == hb  # the epochs before the interruption are in the history too, and the test scores agree


def test_resume_refuses_a_changed_config(tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path, 3)
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 15)
        assert main(["train", "--config", str(cfg), "--quiet"]) == 130
    capsys.readouterr()
    _config(tmp_path, 3, seed=1)
    assert main(["train", "--config", str(cfg), "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "run.toml has changed since the checkpoint" in err
    # more epochs is not a change of the run: it goes on
    _config(tmp_path, 5)
    assert main(["train", "--config", str(cfg), "--quiet", "--resume"]) == 0
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["epoch"] == [0, 1, 2, 3, 4]


def test_ctrl_c_before_training_writes_nothing(tmp_path, monkeypatch, capsys):
    from normlab.cli import train

    cfg = _config(tmp_path, 2)

    def interrupted(data):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "load_data", interrupted)
    assert main(["train", "--config", str(cfg), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "normlab train: interrupted before training started; nothing was written."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


def test_sigint_to_a_training_process(tmp_path):
    # far more epochs than can finish before the signal
    cfg = _config(tmp_path, 100_000)
    env = dict(os.environ, NORMLAB_DISABLE_NUMBA="1")
    # the child starts with SIGINT at its default action, as from a terminal: a test run in a
    # shell's background job (or in a pytest-xdist worker) inherits SIGINT ignored, and Python
    # keeps an ignored SIGINT ignored (then the signal is lost and training runs on)
    p = subprocess.Popen([sys.executable, "-m", "normlab", "train", "--config", str(cfg)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        for line in p.stdout:  # one line per epoch off a terminal
            if line.startswith("Epoch 2/") or time.monotonic() > deadline:
                break
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("normlab train: interrupted; the model ")
    assert lines[0].endswith(f"normlab train --config {cfg} --resume")
    meta = json.loads((tmp_path / "model.resume.json").read_text())
    # the checkpoint of an epoch's end (written when it costs at most 5 % of the training time)
    assert (f"as of epoch {meta['epoch']} of 100000 " if meta["epoch"] else "before its first epoch") in lines[0]
    epochs_done = 2 + sum(1 for l in out.splitlines() if l.startswith("Epoch "))  # 2: the lines read above
    assert 0 <= meta["epoch"] <= epochs_done and meta["history"]["epoch"] == list(range(meta["epoch"]))
    assert not (tmp_path / "model.npz").exists()
    # the resumed run, cut short with --epochs: nothing left to train, the model is evaluated and saved
    r = run_cli(["train", "--config", str(cfg), "--quiet", "--resume", "--epochs", "1"], tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "model.npz").is_file() and not (tmp_path / "model.resume.npz").exists()
