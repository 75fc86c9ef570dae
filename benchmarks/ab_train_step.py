"""A/B timing of the BN-paper network's training step: a git revision against the working tree.

Two benchmark runs minutes apart on a shared machine can differ by more than
the change being measured. Here both versions run in one process, round by
round: the package as it was at ``--rev`` is extracted with ``git archive``
and imported under another name (``normlab_rev``, its absolute imports
rewritten), and each round times ``model._train_step`` of both, as a
Sequential model and as the same functional ``Model``, in CPU time
(``time.process_time``: the time our process ran, not the time it waited for
a core). Reported: each case's median over rounds and the median of the
per-round ratios (steadier than the ratio of medians).

::

    PYTHONPATH=src python benchmarks/ab_train_step.py --rev 775ad2e --batch 60 --rounds 31
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    # one BLAS thread, set before NumPy loads its BLAS (read only then): set later, as this
    # script once did, it left OpenBLAS on every core and the CPU times counted its workers
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def load_revision(rev: str, name: str = "normlab_rev"):
    """``src/normlab`` as it was at ``rev``, importable as ``name`` next to the current package."""
    root = Path(__file__).resolve().parents[1]
    blob = subprocess.run(["git", "archive", rev, "src/normlab"], cwd=root, check=True, capture_output=True).stdout
    dest = Path(tempfile.mkdtemp())
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    pkg = dest / "src" / "normlab"
    target = dest / name
    pkg.rename(target)
    for path in target.rglob("*.py"):
        text = path.read_text()
        new = re.sub(r"\b(from|import) normlab\b", rf"\1 {name}", text)
        if new != text:
            path.write_text(new)
    sys.path.insert(0, str(dest))
    return importlib.import_module(name)


def build(nl, batch: int, functional: bool):
    """The BN-paper network (784-100-100-100-10, BN + sigmoid, SGD 0.01) and its step on a prepared batch."""
    layers_mod = importlib.import_module(nl.__name__ + ".layers")
    opt_mod = importlib.import_module(nl.__name__ + ".optimizers")

    def layers():
        out = []
        for _ in range(3):
            out += [layers_mod.Dense(100, use_bias=False), layers_mod.BatchNormalization(),
                    layers_mod.Activation("sigmoid")]
        return out + [layers_mod.Dense(10, activation="softmax")]

    model = nl.Sequential(layers())
    model.build((None, 784), seed=0)
    if functional:
        h = inp = nl.Input((784,))
        for layer in layers():
            h = layer(h)
        graph = nl.Model(inp, h)
        if not graph.built:  # (older versions build a functional model on its first batch)
            graph.build()
        graph.set_weights(model.get_weights())
        model = graph
    model.compile(optimizer=opt_mod.SGD(0.01), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model.train_on_batch(x, y)
    xp, yp = model._prepare_xy(x, y, "ab")
    model._prepare_training()
    for _ in range(20):
        model._train_step(xp, yp)
    return lambda: model._train_step(xp, yp)


def per_step(step, iters: int) -> float:
    t0 = time.process_time()
    for _ in range(iters):
        step()
    return (time.process_time() - t0) / iters


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", required=True, help="the git revision to compare with (e.g. 775ad2e)")
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--rounds", type=int, default=21)
    args = p.parse_args(argv)
    import normlab

    old = load_revision(args.rev)
    cases = {
        f"{args.rev} Sequential": build(old, args.batch, False),
        "work tree Sequential": build(normlab, args.batch, False),
        f"{args.rev} functional": build(old, args.batch, True),
        "work tree functional": build(normlab, args.batch, True),
    }
    iters = max(3, int(0.15 / per_step(cases["work tree Sequential"], 5)))
    times = {k: [] for k in cases}
    for _ in range(args.rounds):
        for k, step in cases.items():
            times[k].append(per_step(step, iters))
    keys = list(cases)
    for k in keys:
        print(f"batch {args.batch}: {k:28s} {np.median(times[k]) * 1e6:9.1f} us (CPU time, median of {args.rounds})")

    def ratio(a, b):
        return float(np.median(np.array(times[a]) / np.array(times[b])))

    res = {
        "work tree / rev, Sequential": ratio(keys[1], keys[0]),
        "work tree / rev, functional": ratio(keys[3], keys[2]),
        "functional / Sequential, work tree": ratio(keys[3], keys[1]),
    }
    for k, v in res.items():
        print(f"{k}: {v:.3f} (median of per-round ratios)")
    return res


if __name__ == "__main__":
    main()
