"""Convolution on channels-last data (cross-correlation, as Keras, TF and PyTorch compute it).

2-D, with ``x`` of shape ``(N, H, W, C)``, ``kernel`` ``W`` of shape
``(kh, kw, C, F)`` (Keras layout), ``bias`` ``b`` of shape ``(F,)``, strides
``(sh, sw)``, dilation ``(dh, dw)`` and zero padding ``(pt, pb), (pl, pr)``::

    xp = x zero-padded                                  (N, Hp, Wp, C)
    y[n, p, q, f] = b[f] + sum_{i, j, c} xp[n, p sh + i dh, q sw + j dw, c] W[i, j, c, f]
    Ho = floor((Hp - (kh - 1) dh - 1) / sh) + 1           (likewise Wo)

im2col: with the patch matrix ``P[(n, p, q), (i, j, c)] = xp[n, p sh + i dh, q sw + j dw, c]``
(``N Ho Wo`` rows, ``kh kw C`` columns) and ``W2 = W.reshape(kh kw C, F)``::

    Y = P W2 + b                                         one GEMM

Backward, from ``dY`` (``N Ho Wo`` by ``F``)::

    db  = sum_rows dY
    dW2 = P^T dY
    dP  = dY W2^T,   dxp[n, p sh + i dh, q sw + j dw, c] += dP[(n, p, q), (i, j, c)]   (col2im)
    dx  = dxp without its padding

With unit strides the col2im scatter is itself a correlation: ``dx`` is the
"full" correlation of ``dY`` zero-padded by ``((kh-1) dh - pt, (kh-1) dh - pb)``
rows (likewise columns) with the flipped, transposed kernel
``W'[i, j, f, c] = W[kh-1-i, kw-1-j, c, f]``, i.e. the forward kernel again
(one GEMM, no scatter).

Padding (``padding=``): ``"valid"`` (none); ``"same"`` as TF/Keras, per axis::

    out = ceil(in / s),  total = max((out - 1) s + (k - 1) d + 1 - in, 0)
    before = total // 2,  after = total - before          (the extra one at the end)

``"causal"`` (1-D): ``before = (k - 1) d``, ``after = 0``; or explicit
``((pt, pb), (pl, pr))`` pairs.

Algorithms (``algorithm=``; every one computes the same function, the
gradients are each one's exact adjoint):

* ``"gemm"``: im2col in cache-sized tiles and BLAS (:mod:`._conv_gemm`); any
  strides and dilation; the exact path (the rounding of a plain dot product).
* ``"winograd"``: F(2x2, 3x3) (:mod:`._conv_winograd`), 3 x 3 kernels with unit
  strides and dilation, 2.25x fewer multiplications; its float32 error bound
  is stated there.
* ``"direct"``: loops over taps without a patch matrix (:mod:`._conv_direct`);
  the kernel and bias gradients in one pass over ``dY``.
* ``"auto"``: direct for few input channels, Winograd where it applies and is
  faster, else GEMM (:func:`resolve_algorithm`).

Grouped convolution (``groups``): input channels and filters are split into
``groups`` consecutive blocks and block ``g`` of filters sees block ``g`` of
inputs only; the kernel is ``(kh, kw, C / groups, F)`` as in Keras.

1-D convolutions (``x`` of shape ``(N, L, C)``, kernel ``(k, C, F)``) are the
2-D ones with ``H = kh = 1``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _backend
from . import _conv_direct as _direct
from . import _conv_gemm as _gemm
from . import _conv_winograd as _wino

__all__ = [
    "ALGORITHMS",
    "ConvCache",
    "ConvGeometry",
    "axis_padding",
    "conv1d_backward",
    "conv1d_cache",
    "conv1d_forward",
    "conv2d_backward",
    "conv2d_cache",
    "conv2d_forward",
    "conv_geometry",
    "conv_output_length",
    "fold_conv_bn_params",
    "resolve_algorithm",
    "same_padding",
]

#: the values of ``algorithm=``
ALGORITHMS = ("auto", "gemm", "winograd", "direct")
#: "auto" uses Winograd from this many input channels and filters per group (measured, one
#: thread, forward + backward, Winograd's time / GEMM's: 1.07 at 4 -> 16 and 1.18 at 16 -> 16
#: channels, 0.87 at 8 -> 32, 0.55 at 32 -> 64 and 64 -> 64; benchmarks/README.md, "Convolution")
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_FILTERS = 32
#: "auto" uses the direct loops up to this many input channels per group (numba on). Measured, one
#: thread, batch 128, 28 x 28 -> 32 filters 3 x 3 "same", thread CPU time, medians of 21 interleaved
#: calls on a loaded machine, direct's time / GEMM's: 1 channel forward 0.65, kernel + bias
#: gradients 0.63; 3 channels 1.45 and 1.41 (the first layer of an image network computes no
#: input gradient; direct's is GEMM's). One channel elsewhere: 8 x 224 x 224 -> 64 filters 3 x 3
#: 0.46 forward, 0.49 gradients; but 7 x 7 stride 2 1.9 / 1.7 and 1-D 4000 steps -> 32 filters of
#: 9 taps 1.26 / 1.13, hence the two limits below
DIRECT_MAX_CHANNELS = 1
#: ... and at most this many taps ``kh kw`` per channel
DIRECT_MAX_TAPS = 9
#: ... and output rows of at most this many bytes (``Wo F itemsize``: the row the taps sweep stays in L1/L2)
DIRECT_MAX_ROW_BYTES = 1 << 16


class ConvGeometry(NamedTuple):
    """Sizes of one 2-D convolution (each field a pair: rows, columns)."""

    in_size: tuple
    kernel: tuple
    strides: tuple
    dilation: tuple
    pads: tuple  # ((pt, pb), (pl, pr))
    out_size: tuple


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs: the padded input, the geometry, the algorithm chosen
    (never "auto") and the number of groups."""

    xp: np.ndarray  # the padded input (Winograd: the input itself)
    geom: ConvGeometry
    algorithm: str = "gemm"
    groups: int = 1


# ----------------------------------------------------------------- geometry
def conv_output_length(n: int, k: int, stride: int, dilation: int, pad: tuple) -> int:
    """``floor((n + before + after - (k - 1) d - 1) / s) + 1`` (may be <= 0: no output)."""
    span = (k - 1) * dilation + 1
    return (n + pad[0] + pad[1] - span) // stride + 1


def same_padding(n: int, k: int, stride: int, dilation: int) -> tuple:
    """TF/Keras "same" padding ``(before, after)`` of an axis of size ``n``."""
    out = -(-n // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - n, 0)
    return (total // 2, total - total // 2)


def _pair(v) -> tuple:
    """An int or a pair as a pair of Python ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    return tuple(int(a) for a in v)


def axis_padding(n: int, k: int, stride: int, dilation: int, padding) -> tuple:
    """``(before, after)`` of one spatial axis for ``padding`` "valid", "same" or "causal"."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        return same_padding(n, k, stride, dilation)
    if padding == "causal":
        return ((k - 1) * dilation, 0)
    raise ValueError(f"padding must be 'valid', 'same', 'causal' or explicit pairs, got {padding!r}.")


def conv_geometry(
    in_size, kernel, strides, dilation, padding, *, axis_names=("height", "width"), window="kernel"
) -> ConvGeometry:
    """Resolve ``padding`` and compute the output size of a 2-D convolution.

    ``padding``: "valid", "same", "causal" or explicit ``((pt, pb), (pl, pr))``.
    Sizes are ints or pairs. Raises ``ValueError`` naming the axis (``axis_names``) and the ``window``
    when an output size would be < 1 (a kernel larger than a "valid" input).
    """
    in_size, kernel, strides, dilation = (_pair(v) for v in (in_size, kernel, strides, dilation))
    if isinstance(padding, str):
        pads = tuple(axis_padding(*a, padding) for a in zip(in_size, kernel, strides, dilation))
    else:
        pads = tuple((int(a), int(b)) for a, b in padding)
    out = []
    for name, n, k, s, d, p in zip(axis_names, in_size, kernel, strides, dilation, pads):
        o = conv_output_length(n, k, s, d, p)
        if o < 1 or n < 1:
            span = f"{(k - 1) * d + 1} (size {k}, dilation {d})" if d != 1 else f"{k}"
            raise ValueError(
                f"the {name} axis has size {n} (padded: {n + p[0] + p[1]}) but the {window} spans "
                f"{span}; there is no output position."
            )
        out.append(o)
    return ConvGeometry(in_size, kernel, strides, dilation, pads, tuple(out))


# ------------------------------------------------------------ algorithms
def resolve_algorithm(algorithm: str, kernel_size, strides, dilation, channels: int, filters: int | None = None,
                      row_bytes: int | None = None) -> str:
    """The algorithm that runs: ``algorithm`` itself, or the choice of ``"auto"`` for this shape.

    ``channels`` and ``filters`` are per group. ``"auto"`` picks the direct loops for at
    most ``DIRECT_MAX_CHANNELS`` input channels, ``DIRECT_MAX_TAPS`` taps and output rows
    (``row_bytes``, ``Wo F itemsize``; None: not checked) of at most ``DIRECT_MAX_ROW_BYTES``,
    and Winograd for 3 x 3
    kernels with unit strides and dilation with at least ``WINOGRAD_MIN_CHANNELS``
    input channels and ``WINOGRAD_MIN_FILTERS`` filters (``filters=None``: not
    known, the channels must reach ``WINOGRAD_MIN_FILTERS`` too) when the numba
    kernels are on (the NumPy transforms cost more than the GEMM they save), and
    the GEMM path otherwise (both with the numba kernels on).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"conv: algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
    wino_ok = _wino.supported(kernel_size, strides, dilation)
    if algorithm == "auto":
        few = channels <= DIRECT_MAX_CHANNELS and kernel_size[0] * kernel_size[1] <= DIRECT_MAX_TAPS
        if few and (row_bytes is None or row_bytes <= DIRECT_MAX_ROW_BYTES) and _backend.numba_enabled():
            return "direct"
        big = channels >= WINOGRAD_MIN_CHANNELS and (channels if filters is None else filters) >= WINOGRAD_MIN_FILTERS
        return "winograd" if wino_ok and big and _backend.numba_enabled() else "gemm"
    if algorithm == "winograd" and not wino_ok:
        raise ValueError(
            "conv: algorithm='winograd' needs a 3 x 3 kernel with unit strides and dilation, got "
            f"kernel_size={tuple(kernel_size)}, strides={tuple(strides)}, dilation={tuple(dilation)}."
        )
    return algorithm


def _forward_one(xp, kernel, bias, geom, algorithm):
    if algorithm == "winograd":  # xp is x itself: the kernels pad as they read
        return _wino.forward(xp, kernel, bias, geom.pads, geom.out_size)
    if algorithm == "direct":
        return _direct.forward(xp, kernel, bias, geom.strides, geom.dilation, geom.out_size)
    return _gemm.correlate(xp, kernel, bias, geom.strides, geom.dilation, geom.out_size)


def _backward_one(dy, xp, kernel, geom, algorithm, need_dx, need_dw):
    """``(dx, dkernel, dbias)`` of one group (``dx`` without padding; ``dbias`` None where the
    algorithm does not make it on the way: the caller sums ``dy``)."""
    dx = dw = db = None
    if algorithm == "winograd":
        return _wino.backward(dy, xp, kernel, geom.pads, need_dx=need_dx, need_dw=need_dw)
    if need_dx:
        dx = _gemm.input_grad(dy, kernel, geom, xp.shape)
    if need_dw:
        if algorithm == "direct":
            dw, db = _direct.param_grads(xp, dy, kernel.shape, geom.strides, geom.dilation)
        else:
            dw = _gemm.kernel_grad(dy, xp, geom, kernel.shape)
    return dx, dw, db


def _group(a: np.ndarray, g: int, groups: int) -> np.ndarray:
    """Channels ``g`` of ``groups`` (the last axis) as a contiguous array (``a`` itself for one group)."""
    if groups == 1:
        return a
    k = a.shape[-1] // groups
    return np.ascontiguousarray(a[..., g * k : (g + 1) * k])


# ----------------------------------------------------------------- 2-D
def conv2d_forward(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    *,
    strides=(1, 1),
    padding="valid",
    dilation=(1, 1),
    groups: int = 1,
    algorithm: str = "auto",
) -> tuple[np.ndarray, ConvCache]:
    """Return ``(y, cache)``: ``y = conv(x, kernel) + bias`` of shape ``(N, Ho, Wo, F)``.

    ``groups``: the channels are split into ``groups`` consecutive blocks,
    ``kernel`` is ``(kh, kw, C / groups, F)`` and filters ``g F / groups`` to
    ``(g + 1) F / groups - 1`` see only input block ``g`` (Keras and PyTorch).
    ``algorithm``: ``"auto"``, ``"gemm"`` (exact im2col), ``"winograd"`` or
    ``"direct"`` (:func:`resolve_algorithm`); all give the same result to
    rounding (Winograd's bound: :mod:`normlab.kernels._conv_winograd`).
    """
    kh, kw, cg, f = kernel.shape
    if x.ndim != 4 or x.shape[3] != cg * groups:
        raise ValueError(f"conv2d_forward: x must be (N, H, W, {cg * groups}), got shape {x.shape}.")
    if f % groups:
        raise ValueError(f"conv2d_forward: {f} filters are not divisible by groups={groups}.")
    cache = conv2d_cache(x, (kh, kw), strides=strides, padding=padding, dilation=dilation, groups=groups,
                         algorithm=algorithm, filters=f)
    fg = f // groups
    if groups == 1:
        return _forward_one(cache.xp, kernel, bias, cache.geom, cache.algorithm), cache
    y = None
    for g in range(groups):
        b = None if bias is None else bias[g * fg : (g + 1) * fg]
        yg = _forward_one(_group(cache.xp, g, groups), _group(kernel, g, groups), b, cache.geom, cache.algorithm)
        if y is None:
            y = np.empty(yg.shape[:3] + (f,), dtype=yg.dtype)
        y[..., g * fg : (g + 1) * fg] = yg
    return y, cache


def conv2d_cache(
    x: np.ndarray,
    kernel_size,
    *,
    strides=(1, 1),
    padding="valid",
    dilation=(1, 1),
    axis_names=("height", "width"),
    groups: int = 1,
    algorithm: str = "auto",
    filters: int | None = None,
) -> ConvCache:
    """The cache of :func:`conv2d_forward` without the forward pass (resolve the sizes and the
    algorithm; pad ``x``, except for Winograd, whose kernels read ``x`` as if padded)."""
    geom = conv_geometry(x.shape[1:3], kernel_size, strides, dilation, padding, axis_names=axis_names)
    fg = None if filters is None else filters // groups
    row = None if fg is None else geom.out_size[1] * fg * x.itemsize
    algo = resolve_algorithm(algorithm, geom.kernel, geom.strides, geom.dilation, x.shape[3] // groups, fg, row)
    xp = np.ascontiguousarray(x) if algo == "winograd" else _gemm.pad(x, geom.pads)
    return ConvCache(xp, geom, algo, groups)


def conv2d_backward(
    dy: np.ndarray,
    cache: ConvCache,
    kernel: np.ndarray,
    *,
    need_dx: bool = True,
    need_param_grads: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Return ``(dx, dkernel, dbias)``; an entry not asked for is ``None``."""
    xp, geom, algo, groups = cache
    f = kernel.shape[3]

    def bias_grad(db):
        if db is not None or not need_param_grads:
            return db
        dy2 = dy.reshape(-1, f)  # BLAS gemv: much faster than a reduction over the long axis
        return np.ones(dy2.shape[0], dtype=dy.dtype) @ dy2

    if groups == 1:
        dx, dw, db = _backward_one(dy, xp, kernel, geom, algo, need_dx, need_param_grads)
        return dx, dw, bias_grad(db)
    n, cg, fg = dy.shape[0], kernel.shape[2], f // groups
    dx = np.empty((n,) + tuple(geom.in_size) + (cg * groups,), dtype=dy.dtype) if need_dx else None
    dw = np.empty(kernel.shape, dtype=dy.dtype) if need_param_grads else None
    db = np.empty(f, dtype=dy.dtype) if need_param_grads and algo in ("direct", "winograd") else None
    for g in range(groups):
        dxg, dwg, dbg = _backward_one(_group(dy, g, groups), _group(xp, g, groups), _group(kernel, g, groups),
                                      geom, algo, need_dx, need_param_grads)
        if need_dx:
            dx[..., g * cg : (g + 1) * cg] = dxg
        if need_param_grads:
            dw[..., g * fg : (g + 1) * fg] = dwg
            if db is not None:
                db[g * fg : (g + 1) * fg] = dbg
    return dx, dw, bias_grad(db)


# ----------------------------------------------------------------- 1-D
def conv1d_forward(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    *,
    strides: int = 1,
    padding="valid",
    dilation: int = 1,
    groups: int = 1,
    algorithm: str = "auto",
) -> tuple[np.ndarray, ConvCache]:
    """1-D convolution of ``x`` ``(N, L, C)`` with ``kernel`` ``(k, C / groups, F)``: ``(y, cache)``.

    ``padding``: "valid", "same", "causal" or one explicit ``(before, after)`` pair;
    ``groups`` and ``algorithm`` as :func:`conv2d_forward` (Winograd is 2-D only).
    """
    k, cg, f = kernel.shape
    if x.ndim != 3 or x.shape[2] != cg * groups:
        raise ValueError(f"conv1d_forward: x must be (N, L, {cg * groups}), got shape {x.shape}.")
    if not isinstance(padding, str):
        padding = ((0, 0), tuple(padding))
    y, cache = conv2d_forward(
        x[:, None], kernel[None], bias, strides=(1, int(strides)), padding=padding, dilation=(1, int(dilation)),
        groups=groups, algorithm=algorithm,
    )
    return y[:, 0], cache


def conv1d_cache(x: np.ndarray, kernel_size: int, *, strides: int = 1, padding="valid", dilation: int = 1,
                 groups: int = 1, algorithm: str = "auto", filters: int | None = None):
    """The cache of :func:`conv1d_forward` without the forward pass."""
    if not isinstance(padding, str):
        padding = ((0, 0), tuple(padding))
    return conv2d_cache(
        x[:, None], (1, int(kernel_size)), strides=(1, int(strides)), padding=padding,
        dilation=(1, int(dilation)), axis_names=("", "steps"), groups=groups, algorithm=algorithm, filters=filters,
    )


def conv1d_backward(dy, cache: ConvCache, kernel, *, need_dx: bool = True, need_param_grads: bool = True):
    """Return ``(dx, dkernel, dbias)`` of :func:`conv1d_forward`."""
    dx, dw, db = conv2d_backward(
        dy[:, None], cache, kernel[None], need_dx=need_dx, need_param_grads=need_param_grads
    )
    return (None if dx is None else dx[:, 0]), (None if dw is None else dw[0]), db


# ------------------------------------------------------------ batch-norm folding
def fold_conv_bn_params(kernel, bias, gamma, beta, mean, var, eps):
    """Fold an inference-mode batch norm over the output channels into the convolution.

    ``BN(conv(x, W) + b) = conv(x, W * s) + ((b - mean) * s + beta)`` with
    ``s = gamma / sqrt(var + eps)`` per output channel (the kernel's last
    axis). ``bias``, ``gamma``, ``beta`` may be ``None`` (0, 1, 0). The
    arithmetic is float64; the results have the kernel's dtype. Returns
    ``(kernel', bias')``. Works for any kernel whose last axis indexes the
    outputs (Dense, Conv1D, Conv2D).
    """
    kernel = np.asarray(kernel)
    f = kernel.shape[-1]

    def vec(v, default):
        if v is None and default is None:
            raise ValueError("fold_conv_bn_params: 'var' is required.")
        if v is None:
            return np.full(f, default, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.shape != (f,):
            raise ValueError(f"fold_conv_bn_params: expected {f} per-channel values, got shape {v.shape}.")
        return v

    den = np.sqrt(vec(var, None) + float(eps))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = vec(gamma, 1.0) / den
    s = np.where(den == 0, 0.0, s)  # epsilon=0 and a zero moving variance: the output is beta (kernels.batchnorm)
    new_kernel = (kernel.astype(np.float64) * s).astype(kernel.dtype)
    new_bias = ((vec(bias, 0.0) - vec(mean, 0.0)) * s + vec(beta, 0.0)).astype(kernel.dtype)
    return new_kernel, new_bias
