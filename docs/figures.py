#!/usr/bin/env python
"""Rerun the experiments behind the documentation's tables of results, and rewrite the tables.

Each table that this script owns sits in README.md or docs/*.md between two
markers, with a line under it saying which command produced it and how::

    <!-- figures: mnist1d -->
    | model | plain | ... |
    ...
    <!-- /figures -->

A *set* is one experiment and the tables made from it. Running a set calls
the same code as the command named in the documentation, stores the results
with their provenance (the command, numba on or off, the versions, the wall
time) in ``docs/results/<set>.json`` and copies its plots to ``docs/images/``;
``--write-docs`` then rewrites the blocks of every set that has results.

Usage (from the repository root)::

    python docs/figures.py --list                      # the sets, their commands and run times
    python docs/figures.py mnist1d --write-docs        # rerun one set and rewrite its tables
    python docs/figures.py --write-docs                # only rewrite, from docs/results/*.json
    python docs/figures.py --check                     # exit 1 if a table differs from its results

Run it with one BLAS thread (``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1``), as
the experiments do by default. ``NORMLAB_DISABLE_NUMBA=1`` runs the NumPy
path; the line under each table says which path produced it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
IMAGES = ROOT / "docs" / "images"
DOCS = ("README.md", "docs/experiments.md", "docs/cnn.md")

BLOCK = re.compile(r"(<!-- figures: (?P<name>[\w./-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)

try:
    import normlab  # noqa: F401
except ImportError:  # a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))


# ------------------------------------------------------------------ renderers
def _pct(v: float, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f} %"


def _short(v: float, digits: int = 3) -> str:
    """0.874 -> '.874' (the style of the tables that compare many accuracies)."""
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("0.") else s


def render_mnist1d(res: dict, models=None) -> str:
    from normlab.experiments import mnist1d

    res = dict(res)
    if models is not None:
        res["results"] = {k: v for k, v in res["results"].items() if k in models}
        lines = mnist1d.table(res).splitlines()
        keep = [mnist1d.MODEL_NAMES[m] for m in models]
        return "\n".join(lines[:2] + [ln for ln in lines[2:] if any(f"| {k} |" in ln for k in keep)])
    return mnist1d.table(res)


def render_regularization(res: dict) -> str:
    alphas = res["config"]["alphas"]
    shown = [f"{a:.2f}".rstrip("0").rstrip(".") for a in alphas]  # 0.1, 0.32, 1, 3.16, 10
    head = "| data set | alpha " + " | ".join(shown) + " |"
    lines = [head, "| --- |" + " ---: |" * len(alphas)]
    for name, d in res["datasets"].items():
        sk = d.get("sklearn_test_accuracy")
        cells = [
            _short(a, 2) + (f" / {_short(s, 2)}" if sk is not None else "")
            for a, s in zip(d["test_accuracy"], sk or [None] * len(alphas))
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _bn_index(res: dict, step: int) -> int:
    return res["baseline"]["steps"].index(step)


def render_bn_steps(res: dict) -> str:
    """README: test accuracy at a few steps, without and with BN."""
    steps = [s for s in (1000, 2000, 5000, 10000, 20000, 30000, 40000, 50000) if s in res["baseline"]["steps"]]
    labels = [f"{s // 1000}k" for s in steps]
    lines = ["| step | " + " | ".join(labels) + " |", "|---|" + "---|" * len(steps)]
    for key, label in (("baseline", "without BN"), ("bn", "with BN")):
        cells = [_short(res[key]["accuracy"][_bn_index(res, s)]) for s in steps]
        lines.append(f"| test accuracy {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_bn_accuracy(res: dict) -> str:
    """docs/experiments.md: the accuracy table, with the evaluation where the moving averages dip most."""
    base, bn = res["baseline"], res["bn"]
    moving = bn.get("accuracy_moving_statistics", bn["accuracy"])
    steps = base["steps"]
    rows = [s for s in (0, 1000, 2000, 5000, 10000, 20000, 30000, 40000, 50000) if s in steps]
    dip = max(range(len(steps)), key=lambda i: bn["accuracy"][i] - moving[i])
    rows = sorted(set(rows) | {steps[dip], steps[-1]})
    lines = [
        "| step | without BN | with BN | difference | with BN, moving averages |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in rows:
        i = steps.index(s)
        a, b = base["accuracy"][i], bn["accuracy"][i]
        lines.append(f"| {s:,} | {a:.4f} | {b:.4f} | {b - a:+.4f} | {moving[i]:.4f} |")
    return "\n".join(lines)


def render_bn_percentiles(res: dict) -> str:
    s = res["summary"]
    trained = [st for st in res["baseline"]["percentile_steps"] if st > 0]  # as summarize() counts them
    first, last = f"{trained[0]:,}", f"{trained[-1]:,}"
    lines = [
        f"| | median at {first} steps | median at {last} | median range over training "
        f"| 15-85 band at {first} | band at {last} | band range |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (("baseline", "without BN"), ("bn", "with BN")):
        d = s[key]
        lines.append(
            f"| {label} | {d['median_first']:+.2f} | {d['median_last']:+.2f} | {d['median_drift']:.2f} | "
            f"{d['band_first']:.2f} | {d['band_last']:.2f} | {d['band_range'][0]:.2f} to {d['band_range'][1]:.2f} |"
        )
    return "\n".join(lines)


def render_bn_saturation(res: dict) -> str:
    s = res["summary"]
    steps = res["config"]["steps"]
    lines = [
        f"| hidden layer | saturated sigmoid outputs at {steps:,} steps, without BN | with BN |",
        "| --- | ---: | ---: |",
    ]
    for i, (name, v) in enumerate(s["baseline"]["saturated_last"].items()):
        w = list(s["bn"]["saturated_last"].values())[i]
        lines.append(f"| {i + 1} | {_pct(v)} | {_pct(w)} |")
    return "\n".join(lines)


def render_bn_lr(res: dict) -> str:
    lines = [
        "| SGD learning rate | steps | without BN, final | with BN, final "
        "| BN >= baseline, population statistics | BN >= baseline, moving averages |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    default = res.get("default_learning_rate")
    for r in res["runs"]:
        s = r["summary"]
        n = s["evaluations"]
        cells = [
            f"{r['learning_rate']:g}", f"{r['steps']:,}", f"{s['final_accuracy']['baseline']:.3f}",
            f"{s['final_accuracy']['bn']:.3f}", f"{s['bn_at_or_above']} / {n}", f"{s['bn_moving_at_or_above']} / {n}",
        ]
        if r["learning_rate"] == default:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_overfitting(res: dict) -> str:
    names = {
        "none": "none",
        "dropout": "dropout 0.5 after each hidden layer",
        "l2": "L2(1e-3) on every kernel",
        "early_stopping": "early stopping (patience 5, best weights restored)",
    }
    lines = ["| regularization | train acc | test acc | test loss | epochs |", "| --- | --- | --- | --- | --- |"]
    for k, r in res.items():
        lines.append(
            f"| {names.get(k, k)} | {r['train_accuracy']:.3f} | {r['test_accuracy']:.3f} | "
            f"{r['test_loss']:.3f} | {r['epochs']} |"
        )
    return "\n".join(lines)


NORMPROP_NAMES = {
    "plain": "plain ReLU",
    "batchnorm": "batch norm",
    "weightnorm": "weight normalization",
    "selu": "SELU",
    "normprop": "normalization propagation",
}


def render_normprop(res: dict) -> str:
    steps = res["steps"]
    shown = [s for s in (25, 100, 300, 1000) if s in steps and s != steps[-1]] + [steps[-1]]
    head = " | ".join(f"step {s}" for s in shown)
    lines = [f"| network | {head} | best | ms / step | time / BN's |",
             "| --- |" + " --- |" * (len(shown) + 3)]
    for k, acc in res["accuracy"].items():
        s = res["summary"][k]
        cells = " | ".join(_pct(acc[steps.index(t)]) for t in shown)
        lines.append(f"| {NORMPROP_NAMES.get(k, k)} | {cells} | {_pct(s['best_accuracy'])} | "
                     f"{s['median_ms_per_step']:.2f} | {s['cost_vs_batchnorm']:.2f} |")
    return "\n".join(lines)


def render_optimizers(res: dict) -> str:
    surfaces = list(res["results"])
    steps = res["config"]["steps"]
    head = " | ".join(f"{s}: lr, steps to f − f* < 1e-3 (or f − f* after {steps})" if s == surfaces[0] else
                      f"{s}: lr, steps (or f − f*)" for s in surfaces)
    lines = [f"| optimizer | {head} |", "| --- |" + " --- |" * len(surfaces)]
    for o in res["config"]["optimizers"]:
        cells = []
        for s in surfaces:
            r = res["results"][s][o]
            k = r["steps_to_tolerance"]
            cells.append(f"{r['learning_rate']:g}, " + (f"{k}" if k is not None else f"({r['final_gap']:.2g})"))
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_moving_stats(res: dict) -> str:
    momenta = res["config"]["momenta"]
    head = " | ".join(f"moving, {m:g}" for m in momenta)
    lines = [f"| steps | {head} | recomputed | momentum with momentum^steps = 1 % |",
             "| --- |" + " --- |" * (len(momenta) + 2)]
    for i, c in enumerate(res["checkpoints"]):
        cells = " | ".join(_pct(res["moving"][str(m)][i]) for m in momenta)
        lines.append(f"| {c} | {cells} | {_pct(res['recomputed'][i])} | {res['suggested_momentum'][i]:.3f} |")
    return "\n".join(lines)


# -------------------------------------------------------------------- runners
def run_mnist1d(out: Path, quick: bool) -> dict:
    from normlab.experiments import mnist1d

    kw = dict(steps=60, n_seeds=2, models=("logistic",)) if quick else {}
    res = mnist1d.run(out_dir=out, plots=not quick, print_fn=_log, **kw)
    return {k: res[k] for k in ("config", "results", "published")}


def run_regularization(out: Path, quick: bool) -> dict:
    from normlab.experiments import regularization

    kw = dict(steps=20, alphas=(0.1, 10.0), compare_sklearn=False) if quick else {}
    res = regularization.run(out_dir=out, plots=not quick, print_fn=_log, **kw)
    return {k: res[k] for k in ("config", "datasets")}


def run_bn_paper(out: Path, quick: bool) -> dict:
    from normlab.experiments import bn_paper

    kw = dict(dataset="digits", steps=200, eval_every=20, probe_size=100) if quick else {}
    res = bn_paper.run(out_dir=out, plots=not quick, print_fn=_log, **kw)
    return {k: res[k] for k in ("config", "baseline", "bn", "summary")}


#: the learning-rate sweep of docs/experiments.md: rate -> steps
LR_SWEEP = {0.01: 50_000, 0.02: 50_000, 0.05: 50_000, 0.1: 50_000, 0.25: 5_000, 0.5: 5_000, 1.0: 5_000}


def run_bn_lr(out: Path, quick: bool) -> dict:
    from normlab.experiments import bn_paper

    sweep = {0.05: 100, 0.5: 50} if quick else LR_SWEEP
    runs = []
    for lr, steps in sweep.items():
        kw = dict(dataset="digits", eval_every=10, probe_size=100) if quick else {}
        res = bn_paper.run(learning_rate=lr, steps=steps, out_dir=out / f"lr{lr:g}", plots=False, print_fn=_log, **kw)
        runs.append({"learning_rate": lr, "steps": steps, "summary": res["summary"]})
    return {"default_learning_rate": bn_paper.LEARNING_RATE, "runs": runs}


def run_overfitting(out: Path, quick: bool) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("overfitting_example", ROOT / "examples" / "overfitting.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kw = dict(epochs=2, n_train=128) if quick else {}
    return mod.run(print_fn=_log, **kw)


def run_normprop(out: Path, quick: bool) -> dict:
    from normlab.experiments import normprop

    kw = dict(steps=20, eval_every=10) if quick else {}
    res = normprop.run(out_dir=out, plots=not quick, print_fn=_log, **kw)
    return {k: res[k] for k in ("config", "steps", "accuracy", "summary")}


def run_optimizers(out: Path, quick: bool) -> dict:
    from normlab.experiments import optimizers

    kw = dict(steps=20, learning_rates=(0.01, 0.1)) if quick else {}
    res = optimizers.run(out_dir=out, plots=not quick, gif=not quick, print_fn=_log, **kw)
    slim = {s: {o: {k: v for k, v in r.items() if k not in ("path", "loss")} for o, r in d.items()}
            for s, d in res["results"].items()}
    return {"config": res["config"], "results": slim}


def run_moving_stats(out: Path, quick: bool) -> dict:
    from normlab.experiments import moving_stats

    args = ((2, 6),) if quick else ()
    res = moving_stats.run(*args, out_dir=out, plots=not quick, print_fn=_log)
    return {k: res[k] for k in ("config", "checkpoints", "moving", "recomputed", "same_training",
                                "suggested_momentum")}


class FigureSet(NamedTuple):
    command: str
    run: Callable[[Path, bool], dict]
    blocks: dict  # marker name -> renderer
    images: tuple
    cost: str
    #: the same results with and without numba (bit for bit), so a rerun on either path must match
    path_independent: bool = False


SETS: dict[str, FigureSet] = {
    "mnist1d": FigureSet(
        "normlab experiment mnist1d",
        run_mnist1d,
        {"mnist1d": render_mnist1d, "mnist1d/cnn": lambda r: render_mnist1d(r, models=("cnn",))},
        ("mnist1d.png",),
        "about 4 min",
    ),
    "regularization": FigureSet(
        "normlab experiment regularization",
        run_regularization,
        {"regularization": render_regularization},
        ("regularization.png",),
        "about 20 s",
        True,
    ),
    "bn-paper": FigureSet(
        "normlab experiment bn-paper",
        run_bn_paper,
        {
            "bn-paper/steps": render_bn_steps,
            "bn-paper/accuracy": render_bn_accuracy,
            "bn-paper/percentiles": render_bn_percentiles,
            "bn-paper/saturation": render_bn_saturation,
        },
        ("bn_paper_accuracy.png", "bn_paper_percentiles.png", "bn_paper_diagnostics.png"),
        "about 4 min, Fashion-MNIST",
    ),
    "bn-paper-lr": FigureSet(
        "normlab experiment bn-paper --lr RATE --steps STEPS, for each row",
        run_bn_lr,
        {"bn-paper-lr": render_bn_lr},
        (),
        "about 18 min, Fashion-MNIST",
    ),
    "overfitting": FigureSet(
        "python examples/overfitting.py",
        run_overfitting,
        {"overfitting": render_overfitting},
        (),
        "about 1 min, Fashion-MNIST",
    ),
    "normprop": FigureSet(
        "normlab experiment normprop",
        run_normprop,
        {"normprop": render_normprop},
        ("normprop.png",),
        "about 20 s",
    ),
    "optimizers": FigureSet(
        "normlab experiment optimizers",
        run_optimizers,
        {"optimizers": render_optimizers},
        ("optimizers_paths.png", "optimizers_loss.png", "optimizers_schedules.png", "optimizers_quadratic.gif"),
        "about 10 s",
    ),
    "moving-stats": FigureSet(
        "normlab experiment moving-stats",
        run_moving_stats,
        {"moving-stats": render_moving_stats},
        ("moving_stats.png",),
        "about 1 min",
    ),
}


# ------------------------------------------------------------- bookkeeping
def _log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def machine_kernels() -> dict:
    """The CPU-specific code a run's bits depend on: the BLAS's kernel set and numba's target CPU.

    OpenBLAS picks its kernels by CPU (``Haswell``, ``SkylakeX``, ...) and
    numba compiles for the host CPU; either sums in another order on another
    CPU, and a small experiment's trajectory (hence its table) follows.
    """
    out = {}
    try:
        import threadpoolctl

        # NumPy's own BLAS (other packages may load theirs; normlab's products go through NumPy's)
        out["blas"] = sorted(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
                             for i in threadpoolctl.threadpool_info()
                             if i.get("user_api") == "blas" and "numpy" in os.path.basename(os.path.dirname(i["filepath"])))
    except ImportError:  # pragma: no cover - comes with scikit-learn
        out["blas"] = None
    try:
        import llvmlite.binding as llvm

        out["cpu"] = llvm.get_host_cpu_name()
    except ImportError:
        out["cpu"] = None
    return out


def provenance(name: str, seconds: float) -> dict:
    import numpy

    from normlab.kernels import _backend

    versions = {"python": platform.python_version(), "numpy": numpy.__version__}
    if _backend.numba_enabled():
        import numba

        versions["numba"] = numba.__version__
    return {
        "set": name,
        "command": SETS[name].command,
        "script": f"python docs/figures.py {name} --write-docs",
        "numba": _backend.numba_enabled(),
        "versions": versions,
        "machine": machine_kernels(),
        "threads": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "BLAS default",
        # wall time on a machine shared with other jobs: see the load average beside it
        "seconds": round(seconds, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": datetime.date.today().isoformat(),
    }


def caption(meta: dict, path_independent: bool = False) -> str:
    path = (
        f"with numba {meta['versions']['numba']}" if meta["numba"] else "without numba (the NumPy path)"
    )
    if path_independent:
        path += f" (the same, bit for bit, {'without' if meta['numba'] else 'with'} it)"
    return (
        f"<sub>Made by `{meta['script']}` (the code of `{meta['command']}`), {path}, "
        f"NumPy {meta['versions']['numpy']}, on {meta['date']}.</sub>"
    )


def render_block(name: str, marker: str, data: dict) -> str:
    fs = SETS[name]
    return fs.blocks[marker](data["results"]) + "\n\n" + caption(data["meta"], fs.path_independent) + "\n"


def run_set(name: str, results_dir: Path, images_dir: Path | None, quick: bool = False) -> dict:
    fs = SETS[name]
    _log(f"== {name}: {fs.command} ({fs.cost})")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        results = fs.run(Path(tmp), quick)
        seconds = time.perf_counter() - t0
        if images_dir is not None and not quick:
            for img in fs.images:
                shutil.copyfile(Path(tmp) / img, images_dir / img)
    data = {"meta": provenance(name, seconds), "results": results}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def load_results(results_dir: Path) -> dict:
    return {
        p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json")) if p.stem in SETS
    }


def _owner(marker: str) -> str:
    for name, fs in SETS.items():
        if marker in fs.blocks:
            return name
    raise KeyError(f"figures.py: no set renders the block {marker!r}")


def rewrite(text: str, results: dict) -> str:
    """``text`` with every block whose set has results rendered anew (others left as they are)."""

    def sub(m):
        name = _owner(m.group("name"))
        if name not in results:
            return m.group(0)
        return m.group(1) + render_block(name, m.group("name"), results[name]) + m.group(4)

    return BLOCK.sub(sub, text)


def markers(text: str) -> list[str]:
    return [m.group("name") for m in BLOCK.finditer(text)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("sets", nargs="*", metavar="SET", help=f"sets to rerun: {', '.join(SETS)}")
    p.add_argument("--write-docs", action="store_true", help="rewrite the tables from docs/results/*.json")
    p.add_argument("--check", action="store_true", help="exit 1 if a table differs from its results")
    p.add_argument("--list", action="store_true", help="list the sets")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the results are kept (default docs/results)")
    p.add_argument("--root", type=Path, default=ROOT, help="the tree whose Markdown files are rewritten")
    p.add_argument("--quick", action="store_true", help="a tiny configuration of each set (for tests; no plots)")
    args = p.parse_args(argv)
    unknown = [s for s in args.sets if s not in SETS]
    if unknown:
        p.error(f"unknown set {unknown[0]!r}; choose among {', '.join(SETS)}")
    if args.list:
        for name, fs in SETS.items():
            print(f"{name:<15} {fs.cost:<28} {fs.command}  -> blocks {', '.join(fs.blocks)}")
        return 0
    images = None if args.quick else IMAGES
    for name in args.sets:
        run_set(name, args.results, images, quick=args.quick)
    results = load_results(args.results)
    stale = []
    for doc in DOCS:
        path = args.root / doc
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, results)
        if new != text:
            stale.append(doc)
            if args.write_docs:
                path.write_text(new, encoding="utf-8")
                _log(f"rewrote the tables of {doc}")
    if args.check and stale:
        _log(f"tables differ from docs/results in: {', '.join(stale)} (python docs/figures.py --write-docs)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
