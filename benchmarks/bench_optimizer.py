"""One optimizer step over the BN network's parameters: normlab vs torch.optim.

The parameters are those of the benchmark network (784-100-100-100-10 with
batch norm: kernels without bias, gamma and beta, the output layer's kernel
and bias; about 100k float32 values in 11 arrays). Each library applies one
step with fixed gradients. normlab is timed twice: on the 11 arrays
(``optimizer.apply`` on plain arrays, which copies them in and out of the
optimizer's buffers) and on the arrays bound to the optimizer
(``optimizer.bind`` once, then ``optimizer.step()``: what ``fit`` does).
ratio = torch_time / normlab_time (> 1: normlab is faster), with the bound
path.

    PYTHONPATH=src python benchmarks/bench_optimizer.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

if __package__ in (None, ""):
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, _root)
    sys.path.insert(1, os.path.join(_root, "src"))
    __package__ = "benchmarks"

from . import _timing
from ._timing import FULL, QUICK, pinned_threads, time_interleaved

SHAPES = [(784, 100), (100,), (100,), (100, 100), (100,), (100,), (100, 100), (100,), (100,), (100, 10), (10,)]

CASES = {
    "SGD": ({"learning_rate": 0.01}, lambda p: ("SGD", {"lr": 0.01})),
    "SGD momentum": ({"learning_rate": 0.01, "momentum": 0.9}, lambda p: ("SGD", {"lr": 0.01, "momentum": 0.9})),
    "Adam": ({"learning_rate": 1e-3}, lambda p: ("Adam", {"lr": 1e-3, "eps": 1e-7})),
    "RMSprop": ({"learning_rate": 1e-3}, lambda p: ("RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7})),
}


def bench_optimizers(cfg=FULL, use_torch=True, seed=0) -> list[dict]:
    from normlab import optimizers

    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [rng.standard_normal(s).astype(np.float32) * 1e-3 for s in SHAPES]
    rows = []
    for name, (nl_kwargs, torch_spec) in CASES.items():
        opt = getattr(optimizers, name.split()[0])(**nl_kwargs)
        nl_params = [p.copy() for p in params]
        flat_opt = getattr(optimizers, name.split()[0])(**nl_kwargs)
        flat_opt.bind(params, grads)
        fns = {
            "normlab": flat_opt.step,
            "normlab_arrays": lambda opt=opt, ps=nl_params: opt.apply(grads, ps),
        }
        if use_torch and _timing.torch_available():
            torch = _timing.torch
            tps = [torch.tensor(p, requires_grad=True) for p in params]
            for t, g in zip(tps, grads):
                t.grad = torch.tensor(g)
            cls, kw = torch_spec(tps)
            topt = getattr(torch.optim, cls)(tps, **kw)
            fns["torch"] = topt.step
        t = time_interleaved(fns, cfg)
        row = {
            "optimizer": name,
            "params": int(sum(np.prod(s) for s in SHAPES)),
            "normlab_s": t["normlab"]["median_s"],
            "normlab_arrays_s": t["normlab_arrays"]["median_s"],
        }
        if "torch" in t:
            row["torch_s"] = t["torch"]["median_s"]
            row["ratio"] = row["torch_s"] / row["normlab_s"]
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    with pinned_threads(a.threads):
        rows = bench_optimizers(QUICK if a.quick else FULL)
    print(f"optimizer step over {rows[0]['params']} parameters in {len(SHAPES)} arrays, {a.threads} thread(s)")
    print(f"{'optimizer':<14}{'normlab bound us':>16}{'normlab 11 arrays us':>22}{'torch us':>10}{'ratio':>8}")
    for r in rows:
        t = f"{r['torch_s'] * 1e6:>10.1f}{r['ratio']:>8.2f}" if "torch_s" in r else f"{'-':>10}{'-':>8}"
        print(f"{r['optimizer']:<14}{r['normlab_s'] * 1e6:>16.1f}{r['normlab_arrays_s'] * 1e6:>22.1f}{t}")
    return rows


if __name__ == "__main__":
    main()
