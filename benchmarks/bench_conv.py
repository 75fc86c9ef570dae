"""Conv2D alone, forward + backward (dx, dkernel, dbias): normlab's algorithms vs PyTorch.

Default case (the first issue about convolutions): a batch of 64 images of
32 x 32 pixels, 32 channels in and 32 filters out, 3 x 3 kernel, stride 1,
"same" padding, float32. ``--sweep`` times instead the three convolutions of
``examples/fashion_mnist_cnn.py`` at batch 128 (1 -> 32 channels at 28 x 28,
32 -> 64 and 64 -> 64 at 14 x 14).

normlab: ``layer(x, training=True)`` then ``layer.backward(dy)`` (the public
layer API: it validates its input and accumulates ``dkernel``/``dbias`` into
``layer.grads``); channels-last ``(N, H, W, C)``, kernel ``(kh, kw, C, F)``.
``--algorithms auto,gemm,winograd,direct`` times one layer per algorithm
(the same weights): ``normlab`` is the default (``"auto"``), ``normlab gemm``
the exact im2col path, ``normlab winograd`` F(2x2, 3x3), ``normlab direct``
the loops without a patch matrix.

torch: ``F.conv2d(x, w, b, padding=1)`` then
``torch.autograd.grad(y, (x, w, b), dy)`` (fresh gradients, so no ``.grad``
accumulation is timed). Variants (``--torch-variants``):

* ``torch NCHW``: contiguous ``(N, C, H, W)``, PyTorch's default layout;
* ``torch NHWC``: the same tensors in ``torch.channels_last`` memory format
  (the layout normlab works in; oneDNN is usually fastest there);
* ``torch.compile``: the convolution through ``torch.compile`` (channels-last
  tensors), where inductor works.

GEMM floor: the step's FLOPs (forward and both gradients) at NumPy's float32
GEMM rate on a 2048^3 product at the same thread count: the time a perfect
im2col schedule would take. Winograd can go below it (2.25x fewer multiplications).

Threads (``--threads 1,2``: each in turn): NumPy's BLAS through threadpoolctl
(normlab's own kernels follow BLAS's limit), ``torch.set_num_threads``
(:func:`benchmarks._timing.pinned_threads`); candidates interleaved round by
round, medians of the repeats (:func:`benchmarks._timing.time_interleaved`,
wall clock). The last column is ``time / normlab's default``. Before timing,
the three gradients of every normlab algorithm are compared with torch's.

Second clock: on a shared machine the wall-clock times swing with the other
processes' load (by 2x or more, not equally for every candidate). With one
thread every candidate runs entirely in the calling thread (OpenBLAS and
torch's intra-op pool both run inline), so the thread's CPU time
(``time.thread_time``) of single interleaved calls measures the work without
the waiting; the ``thread CPU time`` line reports its medians.

Usage::

    PYTHONPATH=src python benchmarks/bench_conv.py            # full (about a minute)
    PYTHONPATH=src python benchmarks/bench_conv.py --quick
    PYTHONPATH=src python benchmarks/bench_conv.py --sweep --threads 1,2 --algorithms auto,gemm,winograd,direct \\
        --torch-variants "torch NCHW,torch NHWC,torch.compile"
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


ALGORITHMS = ("auto", "gemm", "winograd", "direct")
TORCH_VARIANTS = ("torch NCHW", "torch NHWC", "torch.compile")
#: the convolutions of examples/fashion_mnist_cnn.py at batch 128 (N, H, W, C, filters), for --sweep
FASHION_SHAPES = ((128, 28, 28, 1, 32), (128, 14, 14, 32, 64), (128, 14, 14, 64, 64))


def _data(shape, filters, kernel, seed, algorithm="auto"):
    from normlab.layers.conv import Conv2D

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    layer = Conv2D(filters, kernel, padding="same", bias_initializer="random_normal", algorithm=algorithm)
    y = layer(x, training=True)  # build
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    return layer, x, dy


def _normlab_case(layer, x, dy, need_dx: bool = True):
    def step():
        layer(x, training=True)
        return layer._train_backward(dy, need_dx)  # what a model's step runs

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


def _torch_case(layer, x, dy, channels_last: bool, compiled: bool = False, need_dx: bool = True):
    F = torch.nn.functional
    xt, wt, bt, dyt = _torch_tensors(layer, x, dy, channels_last)
    xt.requires_grad_(need_dx)
    pad = layer.kernel_size[0] // 2  # odd kernel, stride 1: "same" is symmetric
    inputs = (xt, wt, bt) if need_dx else (wt, bt)
    conv = torch.compile(lambda a, w, b: F.conv2d(a, w, b, padding=pad)) if compiled else (
        lambda a, w, b: F.conv2d(a, w, b, padding=pad))

    def step():
        y = conv(xt, wt, bt)
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


def make_cases(shape=SHAPE, filters=FILTERS, kernel=KERNEL, *, use_torch: bool = True, seed: int = 0,
               algorithms=("auto",), torch_variants=("torch NCHW", "torch NHWC"), need_dx: bool = True):
    """``(cases, (layer, x, dy), info)``: ``normlab <algorithm>`` for each algorithm that applies
    (the same weights), and the torch variants that work here. ``need_dx=False``: no input
    gradient on either side (a network's first layer)."""
    from normlab.kernels.conv import resolve_algorithm

    layer, x, dy = _data(shape, filters, kernel, seed)
    info = {"auto": resolve_algorithm("auto", (kernel, kernel), (1, 1), (1, 1), shape[3], filters)}
    cases = {}
    for algo in algorithms:
        if algo == "winograd" and kernel != 3:
            continue
        other, _, _ = _data(shape, filters, kernel, seed, algorithm=algo)
        other.params["kernel"][...] = layer.params["kernel"]
        other.params["bias"][...] = layer.params["bias"]
        name = "normlab" if algo == "auto" else f"normlab {algo}"
        cases[name] = _normlab_case(other, x, dy, need_dx)
        if use_torch and torch is not None:
            info[f"max_rel_diff {name}"] = check_agreement(other, x, dy)
    if use_torch and torch is not None:
        for variant in torch_variants:
            try:
                step = _torch_case(layer, x, dy, channels_last=variant != "torch NCHW",
                                   compiled=variant == "torch.compile", need_dx=need_dx)
                step()
            except Exception as exc:  # torch.compile needs a working inductor (C++ compiler)
                info[f"{variant} failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                continue
            cases[variant] = step
    return cases, (layer, x, dy), info


def sgemm_rate(repeats: int = 7, threads: int = 1) -> float:
    """NumPy's float32 GEMM rate (GFLOP/s, median) on a 2048 x 2048 x 2048 product at the pinned threads
    (with one thread on the thread's CPU time, which a loaded machine does not inflate)."""
    import time

    clock = time.thread_time if threads == 1 else time.perf_counter

    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, a, out=c)
    ts = []
    for _ in range(repeats):
        t0 = clock()
        np.matmul(a, a, out=c)
        ts.append(clock() - t0)
    return 2 * 2048**3 / float(np.median(ts)) / 1e9


def bench_conv(
    shape=SHAPE,
    filters=FILTERS,
    kernel=KERNEL,
    cfg: TimingConfig = FULL,
    *,
    use_torch: bool = True,
    seed: int = 0,
    cpu_clock: bool = True,
    algorithms=("auto",),
    torch_variants=("torch NCHW", "torch NHWC"),
    need_dx: bool = True,
) -> dict:
    """Time the cases; returns medians (seconds per forward+backward), ratios to normlab's
    default ("auto") and the GEMM floor (the step's FLOPs at NumPy's sgemm rate).

    ``cpu_clock``: also time single calls with the thread's CPU time (meaningful with one
    thread only, see the module docstring).
    """
    cases, (layer, x, dy), info = make_cases(shape, filters, kernel, use_torch=use_torch, seed=seed,
                                             algorithms=algorithms, torch_variants=torch_variants, need_dx=need_dx)
    row = {"shape": list(shape), "filters": filters, "kernel": kernel, "padding": "same", "info": info,
           "need_dx": need_dx}
    t = time_interleaved(cases, cfg)
    row["timings"] = t
    first = next(iter(t))
    row["normlab_s"] = t[first]["median_s"]
    for name in t:
        row[f"{name}_s"] = t[name]["median_s"]
        row[f"ratio vs {name}"] = row["normlab_s"] / t[name]["median_s"]
    n, h, w, c = shape
    # fwd + dW (+ dx) (stride 1, same)
    row["gflop"] = (3 if need_dx else 2) * 2 * n * h * w * c * filters * kernel * kernel / 1e9
    row["sgemm_gflops"] = sgemm_rate(threads=1 if cpu_clock else 2)
    row["floor_s"] = row["gflop"] / row["sgemm_gflops"]
    if not cpu_clock:
        return row
    cpu = thread_cpu_times(cases, repeats=max(5, 2 * cfg.repeats + 1))
    row["cpu_per_call_s"] = cpu
    row["cpu_normlab_s"] = float(np.median(cpu[first]))
    for name in cpu:
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
    first = next(iter(t))
    n, h, w, c = row["shape"]
    lines = [
        (
            f"Conv2D forward+backward{'' if row.get('need_dx', True) else ' (no input gradient)'}, "
            f"input {tuple(row['shape'])} NHWC float32, {row['filters']} filters "
            f"{row['kernel']}x{row['kernel']} 'same', {threads} thread(s); {row['gflop']:.2f} GFLOP per step; "
            f"auto = {row['info']['auto']}"
        ),
        f"  {'':17s}  {'median':>9s}  {'min':>9s}  {'GFLOP/s':>8s}  time / {first}",
    ]
    for name, v in t.items():
        lines.append(
            f"  {name:17s}  {v['median_s'] * 1e3:6.2f} ms  {v['min_s'] * 1e3:6.2f} ms  "
            f"{row['gflop'] / v['median_s']:8.0f}  {v['median_s'] / t[first]['median_s']:.2f}"
        )
    lines.append(f"  {'GEMM floor':17s}  {row['floor_s'] * 1e3:6.2f} ms  (sgemm {row['sgemm_gflops']:.0f} GFLOP/s, "
                 "2048^3, same threads" + (", thread CPU time)" if "cpu_normlab_s" in row else ")"))
    if "cpu_normlab_s" in row:
        lines.append(f"  thread CPU time, medians of {len(row['cpu_per_call_s'][first])} single calls: " + ", ".join(
            f"{name} {row[f'cpu_{name}_s'] * 1e3:.2f} ms" for name in row["cpu_per_call_s"]))
    for k, v in row["info"].items():
        if k.startswith("max_rel_diff"):
            lines.append(f"  agreement with torch, {k[13:]} (max |diff| / max |ref|): "
                         + ", ".join(f"{g} {e:.1e}" for g, e in v.items()))
        elif k.endswith("failed"):
            lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def main(argv=None) -> list:
    p = argparse.ArgumentParser(prog="benchmarks/bench_conv.py", description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1", help="thread counts, e.g. 1,2 (each in turn; default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run (numbers are noisy)")
    p.add_argument("--repeats", type=int)
    p.add_argument("--shape", default=",".join(map(str, SHAPE)), help="N,H,W,C (default 64,32,32,32)")
    p.add_argument("--filters", type=int, default=FILTERS)
    p.add_argument("--kernel", type=int, default=KERNEL, help="odd kernel size (default 3)")
    p.add_argument("--sweep", action="store_true",
                   help="the three convolutions of the Fashion-MNIST CNN at batch 128 instead of --shape")
    p.add_argument("--algorithms", default="auto",
                   help=f"normlab algorithms to time, comma-separated, from {', '.join(ALGORITHMS)} (default auto)")
    p.add_argument("--torch-variants", default="torch NCHW,torch NHWC",
                   help=f"comma-separated subset of {', '.join(TORCH_VARIANTS)}")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-input-grad", action="store_true",
                   help="no input gradient on either side (a network's first layer: the sweep's first shape always)")
    args = p.parse_args(argv)
    if args.kernel % 2 != 1:
        raise SystemExit("--kernel must be odd (symmetric 'same' padding on the torch side)")
    base = QUICK if args.quick else FULL
    cfg = TimingConfig(repeats=args.repeats or base.repeats, target_s=base.target_s, warmup=base.warmup,
                       max_number=base.max_number, collect=base.collect)
    shapes = [s[:4] + (s[4],) for s in FASHION_SHAPES] if args.sweep else [
        tuple(int(v) for v in args.shape.split(",")) + (args.filters,)]
    algos = tuple(a for a in args.algorithms.split(",") if a)
    variants = tuple(v for v in args.torch_variants.split(",") if v)
    info = machine_info()
    print(f"{info['cpu']}, numpy {info['numpy']} ({', '.join(info.get('blas', []))}), torch {info['torch']}")
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        for s in shapes:
            with pinned_threads(threads):
                first = args.sweep and s == FASHION_SHAPES[0]
                row = bench_conv(s[:4], s[4], args.kernel, cfg, use_torch=not args.no_torch, cpu_clock=threads == 1,
                                 algorithms=algos, torch_variants=variants,
                                 need_dx=not (args.no_input_grad or first))
            row["threads"] = threads
            print(format_row(row, threads), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
