"""Layer and group normalization alone, forward + backward: normlab (numba and NumPy paths) vs PyTorch eager.

normlab: ``layer(x, training=True)`` then ``layer.backward(dy)`` (the public
layer API: it validates its input and accumulates ``dgamma``/``dbeta`` into
``layer.grads``), once with the numba kernels and once with
``normlab.kernels._backend.use_numba(False)``; and, on the numba path, the
same pair as a model's training step runs it (``layer._train_forward(x)``,
``layer._train_backward(dy)``: results in the layer's per-shape workspaces,
the input's shape checked once). torch: ``F.layer_norm(x, (M,),
weight, bias, eps=1e-3)`` (statistics over the last axis) or
``F.group_norm(x, G, weight, bias, eps=1e-3)``, then
``torch.autograd.grad(y, (x, weight, bias), dy)``. Group norm runs in each
library's native layout (normlab channels-last ``(N, H, W, C)``, torch
``(N, C, H, W)``); ``G = C`` is instance normalization. Unit normalization
(``UnitNormalization()``, no parameters) against
``F.normalize(x, p=2, dim=-1, eps=1e-6)``, the same function (full run only).
``--compile`` adds ``torch_compile``: the same torch function compiled by
``torch.compile`` (inductor, its backward with it). float32, one thread
(``--threads N``: normlab's limit, BLAS and torch), all timed in the same
rounds::

    PYTHONPATH=src python benchmarks/bench_layernorm.py [--quick] [--threads 2] [--compile] [--json out.json]

The ratios are ``torch time / normlab time`` (> 1: normlab faster) and
``NumPy path / numba path``. The bound column is 5 passes over ``x``-sized
float32 arrays (forward: read ``x``, write ``y``; backward: read ``dy`` and
``x``, write ``dx``) at the measured bandwidth: the rows are re-read from
cache, so these kernels can approach it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._timing import FULL, QUICK, measure_bandwidth, pinned_threads, time_interleaved, torch  # noqa: E402

SHAPES = ((60, 100), (1024, 1024), (8192, 512), (65536, 64))
#: (normlab channels-last shape, groups)
GROUP_CASES = (((64, 32, 32, 64), 32), ((64, 32, 32, 64), 64), ((256, 16, 16, 32), 8))
UNIT_SHAPES = ((60, 100), (1024, 1024), (65536, 64))
PASSES = 5


def make_cases(shape, seed: int = 0, groups: int | None = None, unit: bool = False, compile: bool = False) -> dict:
    """The callables for one shape: layer norm, group norm with ``groups`` groups, or unit norm."""
    from normlab.kernels import _backend
    from normlab.layers import GroupNormalization, LayerNormalization, UnitNormalization

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    cases = {}
    for name, use in (("normlab_numba", True), ("normlab_numpy", False)):
        if use and not _backend.NUMBA_AVAILABLE:
            continue
        if unit:
            layer = UnitNormalization()
        else:
            layer = LayerNormalization(epsilon=1e-3) if groups is None else GroupNormalization(groups, epsilon=1e-3)
        layer(x)

        def step(layer=layer, use=use):
            previous = _backend.use_numba(use)
            try:
                layer(x, training=True)
                return layer.backward(dy)
            finally:
                _backend.use_numba(previous)

        cases[name] = step
        if use:
            def train_step(layer=layer):
                previous = _backend.use_numba(True)
                try:
                    layer._train_forward(x)
                    return layer._train_backward(dy)
                finally:
                    _backend.use_numba(previous)

            cases["normlab_step"] = train_step
    if torch is not None:
        to_native = (lambda a: a) if groups is None else (lambda a: np.ascontiguousarray(np.moveaxis(a, -1, 1)))
        tx = torch.from_numpy(to_native(x)).requires_grad_(True)
        tw = torch.ones(shape[-1], requires_grad=True)
        tb = torch.zeros(shape[-1], requires_grad=True)
        tdy = torch.from_numpy(to_native(dy))

        def forward(tx, tw, tb):
            if unit:
                return torch.nn.functional.normalize(tx, p=2.0, dim=-1, eps=1e-6)
            if groups is None:
                return torch.nn.functional.layer_norm(tx, (shape[-1],), tw, tb, eps=1e-3)
            return torch.nn.functional.group_norm(tx, groups, tw, tb, eps=1e-3)

        def torch_step(forward=forward):
            return torch.autograd.grad(forward(tx, tw, tb), (tx,) if unit else (tx, tw, tb), tdy)

        cases["torch"] = torch_step
        if compile and hasattr(torch, "compile"):
            compiled = torch.compile(forward)
            cases["torch_compile"] = lambda: torch_step(compiled)
    return cases


def bench_layernorm(shapes=SHAPES, cfg=FULL, group_cases=GROUP_CASES, unit_shapes=UNIT_SHAPES,
                    compile: bool = False) -> dict:
    bw = measure_bandwidth()
    rows = []
    runs = [(s, None, False) for s in shapes] + [(s, g, False) for s, g in group_cases]
    for shape, groups, unit in runs + [(s, None, True) for s in unit_shapes]:
        t = time_interleaved(make_cases(shape, groups=groups, unit=unit, compile=compile), cfg)
        med = {k: v["median_s"] for k, v in t.items()}
        nb, npy, tt = med.get("normlab_numba"), med.get("normlab_numpy"), med.get("torch")
        st = med.get("normlab_step")
        bound = PASSES * 4 * int(np.prod(shape)) / bw["bandwidth_Bps"]
        rows.append({
            "layer": "unit" if unit else "layer" if groups is None else ("instance" if groups == shape[-1] else "group"),
            "groups": groups, "shape": list(shape), **{f"{k}_s": v for k, v in med.items()},
            "torch_over_numba": tt / nb if tt and nb else None,
            "torch_compile_over_numba": med["torch_compile"] / nb if "torch_compile" in med and nb else None,
            "torch_over_step": tt / st if tt and st else None,
            "torch_over_numpy": tt / npy if tt and npy else None,
            "numpy_over_numba": npy / nb if npy and nb else None,
            "bound_s": bound, "numba_over_bound": nb / bound if nb else None,
        })
    return {"bandwidth": bw, "rows": rows}


def _fmt_t(s):
    return "-" if s is None else (f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms")


def _fmt_r(r):
    return "-" if r is None else f"{r:.2f}x"


def markdown(res: dict) -> str:
    lines = ["| layer | shape | normlab numba | numba in a step | normlab NumPy | torch eager | torch.compile "
             "| torch / numba | torch.compile / numba "
             "| torch / step | torch / NumPy | NumPy / numba | numba / bound (5 passes) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['layer']}{'' if r['groups'] is None else ' G=' + str(r['groups'])} | {tuple(r['shape'])} "
            f"| {_fmt_t(r.get('normlab_numba_s'))} | {_fmt_t(r.get('normlab_step_s'))} | {_fmt_t(r.get('normlab_numpy_s'))} "
            f"| {_fmt_t(r.get('torch_s'))} | {_fmt_t(r.get('torch_compile_s'))} | {_fmt_r(r['torch_over_numba'])} "
            f"| {_fmt_r(r.get('torch_compile_over_numba'))} | {_fmt_r(r['torch_over_step'])} "
            f"| {_fmt_r(r['torch_over_numpy'])} "
            f"| {_fmt_r(r['numpy_over_numba'])} | {_fmt_r(r['numba_over_bound'])} |"
        )
    lines.append(f"\nbandwidth {res['bandwidth']['bandwidth_Bps'] / 1e9:.1f} GB/s")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few seconds, noisy numbers")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="add torch.compile of the torch function")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    with pinned_threads(args.threads):
        if args.quick:
            res = bench_layernorm(SHAPES[:2], QUICK, (((4, 8, 8, 16), 4),), (), compile=args.compile)
        else:
            res = bench_layernorm(compile=args.compile)
    res["threads"] = args.threads
    print(markdown(res))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
