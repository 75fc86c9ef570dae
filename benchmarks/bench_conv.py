"""Conv2D alone, forward + backward (dx, dkernel, dbias): normlab vs PyTorch eager.

Case of the issue: a batch of 64 images of 32 x 32 pixels, 32 channels in
and 32 filters out, 3 x 3 kernel, stride 1, "same" padding, float32.

normlab: ``layer(x, training=True)`` then ``layer.backward(dy)`` (the public
layer API: it validates its input and accumulates ``dkernel``/``dbias`` into
``layer.grads``); channels-last ``(N, H, W, C)``, kernel ``(kh, kw, C, F)``.

torch: ``F.conv2d(x, w, b, padding=1)`` then
``torch.autograd.grad(y, (x, w, b), dy)`` (fresh gradients, so no ``.grad``
accumulation is timed). Two torch layouts, both timed:

* ``torch NCHW``: contiguous ``(N, C, H, W)``, PyTorch's default layout;
* ``torch NHWC``: the same tensors in ``torch.channels_last`` memory format
  (the layout normlab works in; oneDNN is usually fastest there).

One thread each: NumPy's BLAS through threadpoolctl, ``torch.set_num_threads(1)``
(:func:`benchmarks._timing.pinned_threads`); candidates interleaved, medians
of the repeats (:func:`benchmarks._timing.time_interleaved`, wall clock).
The ratio printed is ``normlab_time / torch_time`` (< 1.5 is the target;
> 1 means normlab is slower). Before timing, the three gradients of both
libraries are compared (layouts converted explicitly).

Second clock: on a shared machine the wall-clock times swing with the other
processes' load (by 2x or more, not equally for both libraries). With one
thread every candidate runs entirely in the calling thread (OpenBLAS and
torch's intra-op pool both run inline), so the thread's CPU time
(``time.thread_time``) of single interleaved calls measures the work without
the waiting; ``cpu_*`` fields and the second table report its medians.

Usage::

    PYTHONPATH=src python benchmarks/bench_conv.py            # full (about a minute)
    PYTHONPATH=src python benchmarks/bench_conv.py --quick
    PYTHONPATH=src python benchmarks/bench_conv.py --shape 64,32,32,32 --filters 32 --kernel 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``normlab`` importable
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, _root)
    try:
        import normlab  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(_root, "src"))
    __package__ = "benchmarks"

import numpy as np

from ._timing import (
    FULL,
    QUICK,
    TimingConfig,
    machine_info,
    pinned_threads,
    time_interleaved,
    torch,
)

__all__ = ["FILTERS", "KERNEL", "SHAPE", "bench_conv", "main", "make_cases"]

SHAPE = (64, 32, 32, 32)  # (N, H, W, C), channels-last
FILTERS = 32
KERNEL = 3


def _data(shape, filters, kernel, seed):
    from normlab.layers.conv import Conv2D

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    layer = Conv2D(filters, kernel, padding="same", bias_initializer="random_normal")
    y = layer(x, training=True)  # build
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    return layer, x, dy


def _normlab_case(layer, x, dy):
    def step():
        layer(x, training=True)
        return layer.backward(dy)

    return step


def _torch_tensors(layer, x, dy, channels_last: bool):
    """Torch-owned copies (torch's allocator aligns them to 64 bytes, as for its own tensors)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def own(a, grad):
        t = torch.tensor(np.ascontiguousarray(a))
        if t.ndim == 4:
            t = t.contiguous(memory_format=fmt)
        return t.requires_grad_(grad)

    xt = own(x.transpose(0, 3, 1, 2), True)  # NHWC -> NCHW
    wt = own(layer.params["kernel"].transpose(3, 2, 0, 1), True)  # (kh, kw, C, F) -> (F, C, kh, kw)
    bt = own(layer.params["bias"], True)
    dyt = own(dy.transpose(0, 3, 1, 2), False)
    return xt, wt, bt, dyt


def _torch_case(layer, x, dy, channels_last: bool):
    F = torch.nn.functional
    xt, wt, bt, dyt = _torch_tensors(layer, x, dy, channels_last)
    pad = layer.kernel_size[0] // 2  # odd kernel, stride 1: "same" is symmetric
    inputs = (xt, wt, bt)

    def step():
        y = F.conv2d(xt, wt, bt, padding=pad)
        return torch.autograd.grad(y, inputs, dyt)

    return step


def check_agreement(layer, x, dy) -> dict:
    """Largest relative differences of dx, dkernel, dbias between normlab and torch."""
    layer.zero_grads()
    layer(x, training=True)
    dx = layer.backward(dy)
    gx, gw, gb = _torch_case(layer, x, dy, channels_last=False)()
    ref = {
        "dx": gx.numpy().transpose(0, 2, 3, 1),
        "dkernel": gw.numpy().transpose(2, 3, 1, 0),
        "dbias": gb.numpy(),
    }
    ours = {"dx": dx, "dkernel": layer.grads["kernel"], "dbias": layer.grads["bias"]}
    return {k: float(np.max(np.abs(ours[k] - ref[k])) / np.max(np.abs(ref[k]))) for k in ref}


def make_cases(shape=SHAPE, filters=FILTERS, kernel=KERNEL, *, use_torch: bool = True, seed: int = 0):
    layer, x, dy = _data(shape, filters, kernel, seed)
    cases = {"normlab": _normlab_case(layer, x, dy)}
    if use_torch and torch is not None:
        cases["torch NCHW"] = _torch_case(layer, x, dy, channels_last=False)
        cases["torch NHWC"] = _torch_case(layer, x, dy, channels_last=True)
    return cases, (layer, x, dy)


def bench_conv(
    shape=SHAPE,
    filters=FILTERS,
    kernel=KERNEL,
    cfg: TimingConfig = FULL,
    *,
    use_torch: bool = True,
    seed: int = 0,
    cpu_clock: bool = True,
) -> dict:
    """Time the cases; returns medians (seconds per forward+backward) and ratios normlab/torch.

    ``cpu_clock``: also time single calls with the thread's CPU time (meaningful with one
    thread only, see the module docstring).
    """
    cases, (layer, x, dy) = make_cases(shape, filters, kernel, use_torch=use_torch, seed=seed)
    row = {"shape": list(shape), "filters": filters, "kernel": kernel, "padding": "same"}
    if use_torch and torch is not None:
        row["max_rel_diff"] = check_agreement(layer, x, dy)
    t = time_interleaved(cases, cfg)
    row["timings"] = t
    row["normlab_s"] = t["normlab"]["median_s"]
    for name in ("torch NCHW", "torch NHWC"):
        if name in t:
            row[f"{name}_s"] = t[name]["median_s"]
            row[f"ratio vs {name}"] = row["normlab_s"] / t[name]["median_s"]
    n, h, w, c = shape
    row["gflop"] = 3 * 2 * n * h * w * c * filters * kernel * kernel / 1e9  # fwd + dx + dW (stride 1, same)
    if not cpu_clock:
        return row
    cpu = thread_cpu_times(cases, repeats=max(5, 2 * cfg.repeats + 1))
    row["cpu_per_call_s"] = cpu
    row["cpu_normlab_s"] = float(np.median(cpu["normlab"]))
    for name in ("torch NCHW", "torch NHWC"):
        if name in cpu:
            row[f"cpu_{name}_s"] = float(np.median(cpu[name]))
            row[f"cpu ratio vs {name}"] = row["cpu_normlab_s"] / row[f"cpu_{name}_s"]
    return row


def thread_cpu_times(cases: dict, repeats: int) -> dict:
    """CPU time of the calling thread for single calls, interleaved (order alternating)."""
    import time

    names = list(cases)
    for f in cases.values():
        f()
    out = {k: [] for k in names}
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = time.thread_time()
            cases[k]()
            out[k].append(time.thread_time() - t0)
    return out


def format_row(row: dict, threads: int) -> str:
    t = row["timings"]
    lines = [
        (
            f"Conv2D forward+backward, input {tuple(row['shape'])} NHWC float32, {row['filters']} filters "
            f"{row['kernel']}x{row['kernel']} 'same', {threads} thread(s); {row['gflop']:.2f} GFLOP per step"
        ),
        f"  {'':11s}  {'median':>9s}  {'min':>9s}   normlab/torch (median, min)",
        (
            f"  {'normlab':11s}  {t['normlab']['median_s'] * 1e3:6.2f} ms  {t['normlab']['min_s'] * 1e3:6.2f} ms"
            f"   ({row['gflop'] / row['normlab_s']:.0f} GFLOP/s at the median)"
        ),
    ]
    for name in ("torch NCHW", "torch NHWC"):
        if name in t:
            lines.append(
                f"  {name:11s}  {t[name]['median_s'] * 1e3:6.2f} ms  {t[name]['min_s'] * 1e3:6.2f} ms   "
                f"{row[f'ratio vs {name}']:.2f}, {t['normlab']['min_s'] / t[name]['min_s']:.2f}"
            )
    if "cpu_normlab_s" in row:
        lines.append(f"  thread CPU time, medians of {len(row['cpu_per_call_s']['normlab'])} single calls:")
        lines.append(f"  {'normlab':11s}  {row['cpu_normlab_s'] * 1e3:6.2f} ms")
        for name in ("torch NCHW", "torch NHWC"):
            if f"cpu_{name}_s" in row:
                lines.append(f"  {name:11s}  {row[f'cpu_{name}_s'] * 1e3:6.2f} ms   {row[f'cpu ratio vs {name}']:.2f}")
    if "max_rel_diff" in row:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in row["max_rel_diff"].items())
        lines.append(f"  agreement with torch (max |diff| / max |ref|): {diffs}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="benchmarks/bench_conv.py", description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run (numbers are noisy)")
    p.add_argument("--repeats", type=int)
    p.add_argument("--shape", default=",".join(map(str, SHAPE)), help="N,H,W,C (default 64,32,32,32)")
    p.add_argument("--filters", type=int, default=FILTERS)
    p.add_argument("--kernel", type=int, default=KERNEL, help="odd kernel size (default 3)")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    if args.kernel % 2 != 1:
        raise SystemExit("--kernel must be odd (symmetric 'same' padding on the torch side)")
    base = QUICK if args.quick else FULL
    cfg = TimingConfig(repeats=args.repeats or base.repeats, target_s=base.target_s, warmup=base.warmup,
                       max_number=base.max_number, collect=base.collect)
    shape = tuple(int(v) for v in args.shape.split(","))
    with pinned_threads(args.threads):
        row = bench_conv(shape, args.filters, args.kernel, cfg, use_torch=not args.no_torch,
                         cpu_clock=args.threads == 1)
    info = machine_info()
    print(f"{info['cpu']}, numpy {info['numpy']} ({', '.join(info.get('blas', []))}), torch {info['torch']}")
    print(format_row(row, args.threads))
    return row


if __name__ == "__main__":
    main()
