"""One optimizer step over the BN network's parameters: normlab vs torch.optim, or normlab vs an older normlab.

The parameters are those of the benchmark network (784-100-100-100-10 with
batch norm: kernels without bias, gamma and beta, the output layer's kernel
and bias; about 100k float32 values in 11 arrays). Each library applies one
step with fixed gradients. normlab is timed twice: on the 11 arrays
(``optimizer.apply`` on plain arrays, which copies them in and out of the
optimizer's buffers) and on the arrays bound to the optimizer
(``optimizer.bind`` once, then ``optimizer.step()``: what ``fit`` does).
ratio = torch_time / normlab_time (> 1: normlab is faster), with the bound
path. torch's clipping is ``torch.nn.utils.clip_grad_value_`` /
``clip_grad_norm_`` (per parameter for ``clipnorm``) before the step.

    PYTHONPATH=src python benchmarks/bench_optimizer.py [--quick] [--threads N]

``--against SRC`` compares the working tree's bound step with the normlab
source tree ``SRC`` (for example an older commit checked out with ``git
worktree add /tmp/old REV``) instead: the two run in alternating
subprocesses, round by round, each timing every case in CPU time
(``time.process_time``: steadier than wall time on a shared machine), and the
table gives the median over rounds. A tree from before ``bind`` is timed as
its models called it: ``_step`` on one flat buffer (per array with
``clipnorm``). ``NORMLAB_DISABLE_NUMBA=1`` times both NumPy paths::

    git worktree add /tmp/opt_old 020c35a
    PYTHONPATH=src python benchmarks/bench_optimizer.py --against /tmp/opt_old/src --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

if __package__ in (None, ""):
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, _root)
    if "--worker" not in sys.argv:  # a worker imports the normlab its PYTHONPATH names
        sys.path.insert(1, os.path.join(_root, "src"))
    __package__ = "benchmarks"

SHAPES = [(784, 100), (100,), (100,), (100, 100), (100,), (100,), (100, 100), (100,), (100,), (100, 10), (10,)]

# name: (normlab class, its arguments, torch class, its arguments, torch's clipping before the step)
CASES = {
    "SGD": ("SGD", {"learning_rate": 0.01}, "SGD", {"lr": 0.01}, None),
    "SGD momentum": ("SGD", {"learning_rate": 0.01, "momentum": 0.9}, "SGD", {"lr": 0.01, "momentum": 0.9}, None),
    "Adam": ("Adam", {"learning_rate": 1e-3}, "Adam", {"lr": 1e-3, "eps": 1e-7}, None),
    "RMSprop": ("RMSprop", {"learning_rate": 1e-3}, "RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}, None),
    "AdamW": ("AdamW", {"learning_rate": 1e-3}, "AdamW", {"lr": 1e-3, "eps": 1e-7, "weight_decay": 0.004}, None),
    "Adam clipvalue": ("Adam", {"learning_rate": 1e-3, "clipvalue": 0.5}, "Adam", {"lr": 1e-3, "eps": 1e-7},
                       ("value", 0.5)),
    "Adam clipnorm": ("Adam", {"learning_rate": 1e-3, "clipnorm": 1.0}, "Adam", {"lr": 1e-3, "eps": 1e-7},
                      ("norm", 1.0)),
    "Adam global_clipnorm": ("Adam", {"learning_rate": 1e-3, "global_clipnorm": 1.0}, "Adam",
                             {"lr": 1e-3, "eps": 1e-7}, ("global", 1.0)),
    "Nadam": ("Nadam", {"learning_rate": 1e-3}, "NAdam", {"lr": 1e-3, "eps": 1e-7, "momentum_decay": 1.0}, None),
}


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [rng.standard_normal(s).astype(np.float32) * 1e-2 for s in SHAPES]
    return params, grads


def bound_step(optimizers, cls: str, kwargs: dict, params, grads):
    """A callable making one step of a fresh optimizer on the BN network's arrays, as ``fit`` does."""
    opt = getattr(optimizers, cls)(**kwargs)
    if hasattr(opt, "bind"):
        opt.bind([p.copy() for p in params], grads)
        return opt.step
    # normlab before bind(): the model kept one flat buffer (per-array arrays with clipnorm) and called _step
    if kwargs.get("clipnorm") is not None:
        ps, gs = [p.copy() for p in params], grads
    else:
        ps, gs = [np.concatenate([p.ravel() for p in params])], [np.concatenate([g.ravel() for g in grads])]
    opt.apply(gs, ps)
    return lambda: opt._step(gs, ps)


def _torch_step(torch, params, grads, cls, kwargs, clip, compile=False):
    tps = [torch.tensor(p, requires_grad=True) for p in params]
    for t, g in zip(tps, grads):
        t.grad = torch.tensor(g)
    opt = getattr(torch.optim, cls)(tps, **kwargs)
    if compile:  # the pattern of PyTorch's "Compiling the optimizer" recipe
        step = torch.compile(opt.step, fullgraph=False)
        step()
        return step
    if clip is None:
        return opt.step
    how, c = clip
    utils = torch.nn.utils

    def step():
        if how == "value":
            utils.clip_grad_value_(tps, c)
        elif how == "global":
            utils.clip_grad_norm_(tps, c)
        else:
            for t in tps:
                utils.clip_grad_norm_([t], c)
        opt.step()

    return step


def bench_optimizers(cfg=None, use_torch=True, seed=0, compile=False) -> list[dict]:
    from normlab import optimizers

    from . import _timing

    cfg = cfg or _timing.FULL
    params, grads = _arrays(seed)
    rows = []
    for name, (cls, kwargs, tcls, tkwargs, clip) in CASES.items():
        opt = getattr(optimizers, cls)(**kwargs)
        nl_params = [p.copy() for p in params]
        fns = {
            "normlab": bound_step(optimizers, cls, kwargs, params, grads),
            "normlab_arrays": lambda opt=opt, ps=nl_params: opt.apply(grads, ps),
        }
        if use_torch and _timing.torch_available():
            fns["torch"] = _torch_step(_timing.torch, params, grads, tcls, tkwargs, clip)
            if compile and clip is None and hasattr(_timing.torch, "compile"):
                fns["torch_compile"] = _torch_step(_timing.torch, params, grads, tcls, tkwargs, clip, compile=True)
        t = _timing.time_interleaved(fns, cfg)
        row = {
            "optimizer": name,
            "params": int(sum(np.prod(s) for s in SHAPES)),
            "normlab_s": t["normlab"]["median_s"],
            "normlab_arrays_s": t["normlab_arrays"]["median_s"],
        }
        if "torch" in t:
            row["torch_s"] = t["torch"]["median_s"]
            row["ratio"] = row["torch_s"] / row["normlab_s"]
        if "torch_compile" in t:
            row["torch_compile_s"] = t["torch_compile"]["median_s"]
        rows.append(row)
    return rows


def worker(names: list[str], repeats: int, inner: int) -> dict:
    """CPU time per bound step of each case in this process (medians of ``repeats`` runs of ``inner`` steps)."""
    from normlab import optimizers

    params, grads = _arrays()
    import normlab

    out = {"__file__": normlab.__file__}
    for name in names:
        cls, kwargs = CASES[name][:2]
        step = bound_step(optimizers, cls, kwargs, params, grads)
        for _ in range(3 * inner):
            step()
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            for _ in range(inner):
                step()
            times.append((time.process_time() - t0) / inner)
        out[name] = statistics.median(times)
    return out


def against(src: str, rounds: int, names: list[str]) -> dict:
    """``{name: (median s in src, median s in the working tree)}``, the trees alternating round by round."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    trees = [("old", os.path.abspath(src)), ("new", here)]
    samples: dict = {"old": {}, "new": {}}
    for r in range(rounds):
        for label, tree in trees if r % 2 == 0 else trees[::-1]:
            env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                       MKL_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", ",".join(names)],
                                  env=env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"the {label} tree ({tree}) failed:\n{proc.stderr[-2000:]}")
            found = json.loads(proc.stdout.strip().splitlines()[-1])
            if not found.pop("__file__").startswith(tree):  # pragma: no cover - a stray install on the path
                raise SystemExit(f"the {label} worker did not import normlab from {tree}")
            for name, t in found.items():
                samples[label].setdefault(name, []).append(t)
    return {n: (statistics.median(samples["old"][n]), statistics.median(samples["new"][n])) for n in names}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="add torch.compile(opt.step) (cases without clipping)")
    p.add_argument("--against", metavar="SRC", help="compare with the normlab source tree SRC (see above)")
    p.add_argument("--rounds", type=int, default=7, help="--against: rounds of alternating subprocesses")
    p.add_argument("--cases", help="comma-separated case names (default: all)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker.split(","), 5 if a.quick else 21, 20)))
        return None
    names = a.cases.split(",") if a.cases else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    if a.against:
        res = against(a.against, 1 if a.quick else a.rounds, names)
        path = "NumPy" if os.environ.get("NORMLAB_DISABLE_NUMBA", "") in ("1", "true", "yes") else "default"
        print(f"bound optimizer step over 100010 parameters, CPU us per step ({path} path), "
              f"median of {1 if a.quick else a.rounds} alternating rounds")
        print(f"{'optimizer':<22}{a.against:>18}{'working tree':>14}{'new / old':>11}")
        for n, (old, new) in res.items():
            print(f"{n:<22}{old * 1e6:>18.1f}{new * 1e6:>14.1f}{new / old:>11.2f}")
        return res
    from ._timing import FULL, QUICK, pinned_threads

    with pinned_threads(a.threads):
        rows = [r for r in bench_optimizers(QUICK if a.quick else FULL, compile=a.compile) if r["optimizer"] in names]
    print(f"optimizer step over {rows[0]['params']} parameters in {len(SHAPES)} arrays, {a.threads} thread(s)")
    print(f"{'optimizer':<22}{'normlab bound us':>16}{'normlab 11 arrays us':>22}{'torch us':>10}{'ratio':>8}"
          f"{'torch.compile us':>18}")
    for r in rows:
        t = f"{r['torch_s'] * 1e6:>10.1f}{r['ratio']:>8.2f}" if "torch_s" in r else f"{'-':>10}{'-':>8}"
        tc = f"{r['torch_compile_s'] * 1e6:>18.1f}" if "torch_compile_s" in r else f"{'-':>18}"
        print(f"{r['optimizer']:<22}{r['normlab_s'] * 1e6:>16.1f}{r['normlab_arrays_s'] * 1e6:>22.1f}{t}{tc}")
    return rows


if __name__ == "__main__":
    main()
