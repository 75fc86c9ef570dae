"""BatchNormalization alone, training-mode forward + backward: normlab vs PyTorch eager.

normlab: ``layer(x, training=True)`` then ``layer.backward(dy)`` (the public
layer API: it validates its input, updates the moving statistics and
accumulates ``dgamma``/``dbeta`` into ``layer.grads``).

torch: ``F.batch_norm(x, running_mean, running_var, weight, bias,
training=True, momentum=0.01, eps=1e-3)`` then
``torch.autograd.grad(y, (x, weight, bias), dy)`` (``x``, ``weight`` and
``bias`` require grad; ``autograd.grad`` returns fresh gradients, so no
``.grad`` accumulation pass is timed on either side).

Both float32. Each library gets its native layout: normlab is channels-last
(4-D ``(N, H, W, C)``, statistics over axes 0-2), torch is channels-first
contiguous ``(N, C, H, W)``.

Roofline. The lower bound on time is ``bytes / bandwidth`` with the bandwidth
of :func:`benchmarks._timing.measure_bandwidth` and two byte counts per
element of ``x`` (``s`` = itemsize, 4 for float32):

* ``min`` (5 passes, 5 s bytes/element): forward reads ``x`` once and
  writes ``y`` once; backward reads ``dy`` once and ``x`` (or a saved
  ``xhat``) once and writes ``dx`` once. Only reachable if the statistics
  and the per-feature sums come from a pass whose data is still in cache.
* ``stream`` (8 passes, 8 s bytes/element): two-pass kernels on data that
  does not fit in cache: forward reads ``x`` for the statistics, then reads
  ``x`` and writes ``y``; backward reads ``dy`` and ``x`` for
  ``dbeta``/``dgamma``, then reads ``dy`` and ``x`` and writes ``dx``.

Per-feature vectors are negligible and not counted. The bound uses DRAM
bandwidth: shapes that fit in cache (e.g. (60, 100)) can beat it, and their
time is dominated by per-call overhead anyway.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._timing import FULL, TimingConfig, time_interleaved, torch

__all__ = ["SHAPES", "PASSES_MIN", "PASSES_STREAM", "bn_bytes", "make_cases", "bench_bn"]

#: normlab (channels-last) shapes of the issue
SHAPES: tuple[tuple[int, ...], ...] = ((60, 100), (1024, 1024), (8192, 512), (64, 32, 32, 64))

PASSES_MIN = 5
PASSES_STREAM = 8

PASS_ASSUMPTIONS = (
    "min = 5 passes over x-sized float32 arrays (fwd: read x, write y; bwd: read dy, read x or xhat, "
    "write dx); stream = 8 passes (fwd: read x for stats, read x + write y; bwd: read dy + x for "
    "dbeta/dgamma, read dy + x + write dx); per-feature vectors not counted; DRAM bandwidth, so "
    "cache-resident shapes can beat the bound"
)


def torch_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """normlab channels-last shape -> torch channels-first shape."""
    shape = tuple(shape)
    if len(shape) <= 2:
        return shape
    return (shape[0], shape[-1]) + shape[1:-1]


def bn_bytes(shape: Sequence[int], itemsize: int = 4, passes: int = PASSES_MIN) -> int:
    return int(np.prod(shape)) * itemsize * passes


def _data(rng, shape, scale, offset):
    """Uniform float32 data in [offset, offset + scale) (cheaper to draw than normals; BN cost does not depend on it)."""
    a = rng.random(shape, dtype=np.float32)
    a *= scale
    a += offset
    return a


def _normlab_case(shape, rng):
    from normlab.layers import BatchNormalization

    x = _data(rng, shape, 4.0, -1.5)
    dy = _data(rng, shape, 1.0, -0.5)
    layer = BatchNormalization()
    layer(x, training=True)  # build
    layer.backward(dy)

    def step():
        layer(x, training=True)
        return layer.backward(dy)

    return step


def _torch_case(shape, rng):
    F = torch.nn.functional
    tshape = torch_shape(shape)
    c = tshape[1]
    x = torch.from_numpy(_data(rng, tshape, 4.0, -1.5)).requires_grad_(True)
    dy = torch.from_numpy(_data(rng, tshape, 1.0, -0.5))
    w = torch.ones(c, requires_grad=True)
    b = torch.zeros(c, requires_grad=True)
    rm, rv = torch.zeros(c), torch.ones(c)
    inputs = (x, w, b)

    def step():
        y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.01, eps=1e-3)
        return torch.autograd.grad(y, inputs, dy)

    return step


def make_cases(shape, *, use_torch: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cases = {"normlab": _normlab_case(shape, rng)}
    if use_torch and torch is not None:
        cases["torch"] = _torch_case(shape, rng)
    return cases


def bench_bn(
    shapes: Sequence[Sequence[int]] = SHAPES,
    cfg: TimingConfig = FULL,
    *,
    use_torch: bool = True,
    bandwidth_Bps: float | None = None,
    seed: int = 0,
) -> list[dict]:
    """One row per shape: medians (seconds per forward+backward), ratio and roofline."""
    rows = []
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        t = time_interleaved(make_cases(shape, use_torch=use_torch, seed=seed), cfg)
        nl = t["normlab"]["median_s"]
        row = {
            "shape": list(shape),
            "normlab_shape": list(shape),
            "normlab_layout": "channels-last" if len(shape) > 2 else "(N, C)",
            "torch_shape": list(torch_shape(shape)),
            "torch_layout": "NCHW contiguous" if len(shape) > 2 else "(N, C)",
            "elements": int(np.prod(shape)),
            "normlab_s": nl,
            "torch_s": t["torch"]["median_s"] if "torch" in t else None,
            "ratio": (t["torch"]["median_s"] / nl) if "torch" in t else None,
            "bytes_min": bn_bytes(shape, 4, PASSES_MIN),
            "bytes_stream": bn_bytes(shape, 4, PASSES_STREAM),
            "timings": t,
        }
        if bandwidth_Bps:
            row["bound_min_s"] = row["bytes_min"] / bandwidth_Bps
            row["bound_stream_s"] = row["bytes_stream"] / bandwidth_Bps
            row["normlab_over_bound_min"] = nl / row["bound_min_s"]
            row["normlab_over_bound_stream"] = nl / row["bound_stream_s"]
            if row["torch_s"] is not None:
                row["torch_over_bound_min"] = row["torch_s"] / row["bound_min_s"]
        rows.append(row)
    return rows
