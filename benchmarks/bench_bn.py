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

Peers (``peers``, where installed): ``torch_cl``, torch on the same NCHW
tensor stored channels-last (``memory_format=torch.channels_last``, 4-D
shapes only); ``torch_compile``, the batch-norm forward compiled by
``torch.compile`` (inductor; its backward compiled with it) and the same
``autograd.grad``; ``jax_jit``, forward and ``vjp`` in one jitted function
on the channels-last array. ``fastest_peer`` is the fastest of the torch
variants and jax that ran, ``ratio_fastest`` its time over normlab's.

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

from ._peers import jax_module
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


def _torch_case(shape, rng, variant="eager"):
    F = torch.nn.functional
    tshape = torch_shape(shape)
    c = tshape[1]
    x = torch.from_numpy(_data(rng, tshape, 4.0, -1.5))
    dy = torch.from_numpy(_data(rng, tshape, 1.0, -0.5))
    if variant == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        dy = dy.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.ones(c, requires_grad=True)
    b = torch.zeros(c, requires_grad=True)
    rm, rv = torch.zeros(c), torch.ones(c)
    inputs = (x, w, b)

    def bn(x, w, b):
        return F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.01, eps=1e-3)

    if variant == "compile":
        bn = torch.compile(bn)

    def step():
        return torch.autograd.grad(bn(x, w, b), inputs, dy)

    step()  # torch.compile compiles here
    return step


def _jax_case(shape, rng):
    jax = jax_module()
    jnp = jax.numpy
    c = shape[-1]
    axes = tuple(range(len(shape) - 1))
    x = jnp.asarray(_data(rng, shape, 4.0, -1.5))
    dy = jnp.asarray(_data(rng, shape, 1.0, -0.5))
    g, b = jnp.ones(c, jnp.float32), jnp.zeros(c, jnp.float32)

    def bn(x, g, b):
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        return (x - mean) * jax.lax.rsqrt(var + 1e-3) * g + b, (mean, var)

    @jax.jit
    def step_fn(x, g, b, dy):
        # the statistics come out as the layer's would (for the moving averages)
        y, vjp, stats = jax.vjp(bn, x, g, b, has_aux=True)
        return y, stats, vjp(dy)

    def step():
        return jax.block_until_ready(step_fn(x, g, b, dy))

    step()
    return step


def make_cases(shape, *, use_torch: bool = True, seed: int = 0, peers=()) -> dict:
    """normlab and torch eager, and the ``peers`` asked for: ``"channels_last"``, ``"compile"``, ``"jax"``."""
    rng = np.random.default_rng(seed)
    cases = {"normlab": _normlab_case(shape, rng)}
    if use_torch and torch is not None:
        cases["torch"] = _torch_case(shape, rng)
        if "channels_last" in peers and len(shape) == 4:
            cases["torch_cl"] = _torch_case(shape, rng, "channels_last")
        if "compile" in peers and hasattr(torch, "compile"):
            cases["torch_compile"] = _torch_case(shape, rng, "compile")
    if "jax" in peers and jax_module() is not None:
        cases["jax_jit"] = _jax_case(shape, rng)
    return cases


def bench_bn(
    shapes: Sequence[Sequence[int]] = SHAPES,
    cfg: TimingConfig = FULL,
    *,
    use_torch: bool = True,
    bandwidth_Bps: float | None = None,
    seed: int = 0,
    peers=(),
) -> list[dict]:
    """One row per shape: medians (seconds per forward+backward), ratio and roofline."""
    rows = []
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        t = time_interleaved(make_cases(shape, use_torch=use_torch, seed=seed, peers=peers), cfg)
        nl = t["normlab"]["median_s"]
        peer_s = {k: t[k]["median_s"] for k in ("torch", "torch_cl", "torch_compile", "jax_jit") if k in t}
        fastest = min(peer_s, key=peer_s.get) if peer_s else None
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
            "torch_cl_s": peer_s.get("torch_cl"),
            "torch_compile_s": peer_s.get("torch_compile"),
            "jax_jit_s": peer_s.get("jax_jit"),
            "fastest_peer": fastest,
            "ratio_fastest": peer_s[fastest] / nl if fastest else None,
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
