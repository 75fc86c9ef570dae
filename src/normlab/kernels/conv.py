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

Implementation (timings: the benchmark case, 64 x 32 x 32 x 32 -> 32
filters 3 x 3 "same", float32, one thread; ``benchmarks/bench_conv.py``).
The patch matrix is never built whole (it is ``kh kw`` times the input,
75 MB there, and one GEMM over it runs at ~65 GFLOP/s where 1 MiB tiles
reach ~85): the batch is cut into tiles of about ``TILE_BYTES`` (whole
images, or bands of rows of one large image) whose buffer stays in cache.

* Unit row stride (the common case, and ``dx`` below): the tile buffer holds
  only width strips ``S[n, h, q, (j, c)] = xp[n, h, q sw + j dw, c]``
  (``kw C`` columns, a third of the patches for 3 x 3). Row ``i`` of taps is
  then a contiguous row range of ``S`` shifted by ``i dh`` image rows, so
  ``Y = sum_i S_i W[i]`` and ``dW[i] = S_i^T dY`` are ``kh`` GEMMs each with
  no further copy. Forward ~15 ms instead of ~21 ms with full patches.
* Larger row strides: full patches per tile, one GEMM.

The backward pass rebuilds each tile's buffer instead of keeping ``P``; only
the padded input is cached. For ``dx`` with unit strides the correlation form
(the forward kernel on ``dY``) takes about a third of the time of
``dY W2^T`` plus the strided scatter-add (col2im), which remains the path
for larger strides.

1-D convolutions (``x`` of shape ``(N, L, C)``, kernel ``(k, C, F)``) are the
2-D ones with ``H = kh = 1``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
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
    "same_padding",
]

#: patch bytes per tile (fits the L2 cache of current CPUs next to the kernel)
TILE_BYTES = 1 << 20


class ConvGeometry(NamedTuple):
    """Sizes of one 2-D convolution (each field a pair: rows, columns)."""

    in_size: tuple
    kernel: tuple
    strides: tuple
    dilation: tuple
    pads: tuple  # ((pt, pb), (pl, pr))
    out_size: tuple


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs: the padded input and the geometry."""

    xp: np.ndarray
    geom: ConvGeometry


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


def _pad(x: np.ndarray, pads) -> np.ndarray:
    """Zero-pad axes 1 and 2 of ``x`` (a contiguous copy; ``x`` itself if no padding and contiguous)."""
    (pt, pb), (pl, pr) = pads
    if pt == pb == pl == pr == 0:
        return np.ascontiguousarray(x)
    n, h, w, c = x.shape
    xp = np.empty((n, h + pt + pb, w + pl + pr, c), dtype=x.dtype)
    # zero only the border, write the interior once
    xp[:, :pt] = 0
    xp[:, pt + h :] = 0
    xp[:, pt : pt + h, :pl] = 0
    xp[:, pt : pt + h, pl + w :] = 0
    xp[:, pt : pt + h, pl : pl + w] = x
    return xp


def _windows(xp: np.ndarray, kernel, strides, dilation, out_size) -> np.ndarray:
    """Read-only view ``V[n, p, q, i, j, c] = xp[n, p sh + i dh, q sw + j dw, c]``."""
    s_n, s_h, s_w, s_c = xp.strides
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, strides, dilation, out_size
    return as_strided(
        xp,
        shape=(xp.shape[0], ho, wo, kh, kw, xp.shape[3]),
        strides=(s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c),
        writeable=False,
    )


def _tiles(n: int, ho: int, row_elems: int, itemsize: int, halo: int = 0, *, whole_images: bool = True):
    """Tiles ``(n0, n1, p0, p1)`` (images ``n0:n1``, output rows ``p0:p1``) of about ``TILE_BYTES``.

    ``row_elems`` is the number of buffered elements per output row (patches:
    ``Wo kh kw C``; strips: ``Wo kw C``, with ``halo`` extra rows per tile). A
    tile is several whole images (if ``whole_images``) or a band of rows of one image.
    """
    rows = max(1, TILE_BYTES // max(1, row_elems * itemsize) - halo)
    if rows < ho:
        return [(i, i + 1, p0, min(p0 + rows, ho)) for i in range(n) for p0 in range(0, ho, rows)]
    nb = max(1, (rows + halo) // (ho + halo)) if whole_images else 1
    return [(n0, min(n0 + nb, n), 0, ho) for n0 in range(0, n, nb)]


def _strips(xp: np.ndarray, kw: int, sw: int, dw: int, wo: int) -> np.ndarray:
    """Read-only view ``S[n, h, q, j, c] = xp[n, h, q sw + j dw, c]`` (im2col along the width only)."""
    s_n, s_h, s_w, s_c = xp.strides
    return as_strided(
        xp,
        shape=(xp.shape[0], xp.shape[1], wo, kw, xp.shape[3]),
        strides=(s_n, s_h, s_w * sw, s_w * dw, s_c),
        writeable=False,
    )


def _correlate(xp, kernel, bias, strides, dilation, out_size) -> np.ndarray:
    """``y = im2col(xp) @ W2 (+ bias)`` of shape ``(N, Ho, Wo, F)``, tile by tile.

    With unit row stride the row taps need no copy (``_correlate_rows``).
    """
    if strides[0] == 1:
        return _correlate_rows(xp, kernel, bias, strides[1], dilation, out_size)
    n = xp.shape[0]
    (ho, wo), (kh, kw, c, f) = out_size, kernel.shape
    k = kh * kw * c
    w2 = kernel.reshape(k, f)
    view = _windows(xp, (kh, kw), strides, dilation, out_size)
    y = np.empty((n, ho, wo, f), dtype=np.result_type(xp.dtype, kernel.dtype))
    y2 = y.reshape(-1, f)
    tiles = _tiles(n, ho, wo * k, xp.itemsize)
    buf = np.empty(max((n1 - n0) * (p1 - p0) for n0, n1, p0, p1 in tiles) * wo * k, dtype=xp.dtype)
    for n0, n1, p0, p1 in tiles:
        rows = (n1 - n0) * (p1 - p0) * wo
        patches = buf[: rows * k]
        np.copyto(patches.reshape(n1 - n0, p1 - p0, wo, kh, kw, c), view[n0:n1, p0:p1])
        r0 = (n0 * ho + p0) * wo
        out = y2[r0 : r0 + rows]
        np.matmul(patches.reshape(rows, k), w2, out=out)
        if bias is not None:
            out += bias
    return y


def _row_tiles(n, ho, wo, kc, itemsize, halo):
    # several images per tile only when they are small (their seams cost wasted rows)
    return _tiles(n, ho, wo * kc, itemsize, halo, whole_images=ho * wo < 256)


def _correlate_rows(xp, kernel, bias, sw, dilation, out_size) -> np.ndarray:
    """Unit row stride: copy width strips ``S`` (``kw C`` columns) once per tile; each row
    of taps ``i`` is then a contiguous row range of the strips, offset by ``i dh`` image
    rows, and ``Y = sum_i S_i W[i]`` is ``kh`` GEMMs with no further copy.

    A tile of several images is computed as one block, the rows that straddle two
    images included (``(kh - 1) dh`` per image, discarded).
    """
    n = xp.shape[0]
    (ho, wo), (kh, kw, c, f) = out_size, kernel.shape
    dh, dw = dilation
    kc, halo = kw * c, (kh - 1) * dh
    wi = kernel.reshape(kh, kc, f)
    view = _strips(xp, kw, sw, dw, wo)
    y = np.empty((n, ho, wo, f), dtype=np.result_type(xp.dtype, kernel.dtype))
    y3 = y.reshape(n, ho * wo, f)
    tiles = _row_tiles(n, ho, wo, kc, xp.itemsize, halo)
    max_rows = max((n1 - n0) * (p1 - p0 + halo) for n0, n1, p0, p1 in tiles) * wo
    buf = np.empty(max_rows * kc, dtype=xp.dtype)
    block = np.empty((max_rows, f), dtype=y.dtype)
    tmp = np.empty((max_rows, f), dtype=y.dtype)
    for n0, n1, p0, p1 in tiles:
        nb, hb = n1 - n0, p1 - p0 + halo
        strips = buf[: nb * hb * wo * kc]
        np.copyto(strips.reshape(nb, hb, wo, kw, c), view[n0:n1, p0 : p0 + hb])
        a = strips.reshape(nb * hb * wo, kc)
        m = (nb * hb - halo) * wo
        out = y3[n0, p0 * wo : p1 * wo] if nb == 1 else block[:m]
        np.matmul(a[:m], wi[0], out=out)
        for i in range(1, kh):
            r = i * dh * wo
            np.matmul(a[r : r + m], wi[i], out=tmp[:m])
            out += tmp[:m]
        if nb > 1:  # keep each image's first Ho rows
            y[n0:n1] = block[: nb * hb * wo].reshape(nb, hb, wo, f)[:, : p1 - p0]
        if bias is not None:
            y[n0:n1, p0:p1] += bias
    return y


# ----------------------------------------------------------------- 2-D
def conv2d_forward(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    *,
    strides=(1, 1),
    padding="valid",
    dilation=(1, 1),
) -> tuple[np.ndarray, ConvCache]:
    """Return ``(y, cache)``: ``y = conv(x, kernel) + bias`` of shape ``(N, Ho, Wo, F)``."""
    kh, kw, c, _ = kernel.shape
    if x.ndim != 4 or x.shape[3] != c:
        raise ValueError(f"conv2d_forward: x must be (N, H, W, {c}), got shape {x.shape}.")
    cache = conv2d_cache(x, (kh, kw), strides=strides, padding=padding, dilation=dilation)
    g = cache.geom
    y = _correlate(cache.xp, kernel, bias, g.strides, g.dilation, g.out_size)
    return y, cache


def conv2d_cache(
    x: np.ndarray, kernel_size, *, strides=(1, 1), padding="valid", dilation=(1, 1), axis_names=("height", "width")
) -> ConvCache:
    """The cache of :func:`conv2d_forward` without the forward pass (pad ``x``, resolve the sizes)."""
    geom = conv_geometry(x.shape[1:3], kernel_size, strides, dilation, padding, axis_names=axis_names)
    return ConvCache(_pad(x, geom.pads), geom)


def conv2d_backward(
    dy: np.ndarray,
    cache: ConvCache,
    kernel: np.ndarray,
    *,
    need_dx: bool = True,
    need_param_grads: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Return ``(dx, dkernel, dbias)``; an entry not asked for is ``None``."""
    xp, geom = cache
    dx = _conv2d_dx(dy, kernel, geom, xp.shape) if need_dx else None
    if not need_param_grads:
        return dx, None, None
    dw, db = _conv2d_param_grads(dy, xp, geom, kernel.shape)
    return dx, dw, db


def _conv2d_param_grads(dy, xp, geom, kshape):
    """``dW2 = P^T dY`` (tile by tile, patches rebuilt) and ``db = sum_rows dY``."""
    kh, kw, c, f = kshape
    dy2 = dy.reshape(-1, f)
    # BLAS gemv: much faster than a reduction over the long axis
    db = np.ones(dy2.shape[0], dtype=dy.dtype) @ dy2
    if geom.strides[0] == 1:
        return _param_grads_rows(dy, xp, geom, kshape), db
    n = xp.shape[0]
    (ho, wo), k = geom.out_size, kh * kw * c
    view = _windows(xp, geom.kernel, geom.strides, geom.dilation, geom.out_size)
    tiles = _tiles(n, ho, wo * k, xp.itemsize)
    buf = np.empty(max((n1 - n0) * (p1 - p0) for n0, n1, p0, p1 in tiles) * wo * k, dtype=xp.dtype)
    dw = np.zeros((k, f), dtype=dy.dtype)
    part = np.empty((k, f), dtype=dy.dtype)
    for n0, n1, p0, p1 in tiles:
        rows = (n1 - n0) * (p1 - p0) * wo
        patches = buf[: rows * k]
        np.copyto(patches.reshape(n1 - n0, p1 - p0, wo, kh, kw, c), view[n0:n1, p0:p1])
        r0 = (n0 * ho + p0) * wo
        np.matmul(patches.reshape(rows, k).T, dy2[r0 : r0 + rows], out=part)
        dw += part
    return dw.reshape(kshape), db


def _param_grads_rows(dy, xp, geom, kshape):
    """Unit row stride: ``dW[i] = sum_tiles S_i^T dY`` over the width strips (see
    ``_correlate_rows``); the rows straddling two images meet zero rows of ``dY``."""
    kh, kw, c, f = kshape
    n = xp.shape[0]
    (ho, wo), (dh, dw_), sw = geom.out_size, geom.dilation, geom.strides[1]
    kc, halo = kw * c, (kh - 1) * dh
    view = _strips(xp, kw, sw, dw_, wo)
    dy3 = dy.reshape(n, ho * wo, f)
    tiles = _row_tiles(n, ho, wo, kc, xp.itemsize, halo)
    max_rows = max((n1 - n0) * (p1 - p0 + halo) for n0, n1, p0, p1 in tiles) * wo
    buf = np.empty(max_rows * kc, dtype=xp.dtype)
    grid = np.zeros((max_rows, f), dtype=dy.dtype)
    dw = np.zeros((kh, kc, f), dtype=dy.dtype)
    part = np.empty((kc, f), dtype=dy.dtype)
    for n0, n1, p0, p1 in tiles:
        nb, hb = n1 - n0, p1 - p0 + halo
        strips = buf[: nb * hb * wo * kc]
        np.copyto(strips.reshape(nb, hb, wo, kw, c), view[n0:n1, p0 : p0 + hb])
        a = strips.reshape(nb * hb * wo, kc)
        m = (nb * hb - halo) * wo
        if nb == 1:
            g = dy3[n0, p0 * wo : p1 * wo]
        else:  # dY on the block's row grid, zero on the rows between images
            g4 = grid[: nb * hb * wo].reshape(nb, hb, wo, f)
            g4[:, : p1 - p0] = dy[n0:n1]
            g4[:, p1 - p0 :] = 0
            g = grid[:m]
        for i in range(kh):
            r = i * dh * wo
            np.matmul(a[r : r + m].T, g, out=part)
            dw[i] += part
    return dw.reshape(kshape)


def _conv2d_dx(dy, kernel, geom, xp_shape):
    kh, kw, _, _ = kernel.shape
    (pt, pb), (pl, pr) = geom.pads
    (dh, dw_), (h, w) = geom.dilation, geom.in_size
    back = ((kh - 1) * dh - pt, (kh - 1) * dh - pb), ((kw - 1) * dw_ - pl, (kw - 1) * dw_ - pr)
    if geom.strides == (1, 1) and min(min(b) for b in back) >= 0:
        # full correlation of the padded dY with the flipped, transposed kernel
        dyp = _pad(dy, back)
        wf = np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))
        return _correlate(dyp, wf, None, (1, 1), geom.dilation, (h, w))
    return _col2im_dx(dy, kernel, geom, xp_shape)


def _col2im_dx(dy, kernel, geom, xp_shape):
    """``dP = dY W2^T`` then scatter-add each tap's slice into ``dxp`` (tile by tile)."""
    kh, kw, c, f = kernel.shape
    n = dy.shape[0]
    (ho, wo), (sh, sw), (dh, dw_) = geom.out_size, geom.strides, geom.dilation
    (pt, _), (pl, _) = geom.pads
    h, w = geom.in_size
    k = kh * kw * c
    w2t = kernel.reshape(k, f).T
    dy2 = dy.reshape(-1, f)
    dxp = np.zeros(xp_shape, dtype=dy.dtype)
    tiles = list(_tiles(n, ho, wo * k, dy.itemsize))
    max_rows = max((n1 - n0) * (p1 - p0) for n0, n1, p0, p1 in tiles) * wo
    buf = np.empty(max_rows * k, dtype=dy.dtype)
    for n0, n1, p0, p1 in tiles:
        rows = (n1 - n0) * (p1 - p0) * wo
        r0 = (n0 * ho + p0) * wo
        dp = buf[: rows * k].reshape(rows, k)
        np.matmul(dy2[r0 : r0 + rows], w2t, out=dp)
        dp6 = dp.reshape(n1 - n0, p1 - p0, wo, kh, kw, c)
        for i in range(kh):
            r = p0 * sh + i * dh
            rows_sl = slice(r, r + (p1 - p0 - 1) * sh + 1, sh)
            for j in range(kw):
                cols_sl = slice(j * dw_, j * dw_ + (wo - 1) * sw + 1, sw)
                dxp[n0:n1, rows_sl, cols_sl] += dp6[:, :, :, i, j]
    return np.ascontiguousarray(dxp[:, pt : pt + h, pl : pl + w])


# ----------------------------------------------------------------- 1-D
def conv1d_forward(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    *,
    strides: int = 1,
    padding="valid",
    dilation: int = 1,
) -> tuple[np.ndarray, ConvCache]:
    """1-D convolution of ``x`` ``(N, L, C)`` with ``kernel`` ``(k, C, F)``: ``(y, cache)``.

    ``padding``: "valid", "same", "causal" or one explicit ``(before, after)`` pair.
    """
    k, c, _ = kernel.shape
    if x.ndim != 3 or x.shape[2] != c:
        raise ValueError(f"conv1d_forward: x must be (N, L, {c}), got shape {x.shape}.")
    cache = conv1d_cache(x, k, strides=strides, padding=padding, dilation=dilation)
    g = cache.geom
    y = _correlate(cache.xp, kernel[None], bias, g.strides, g.dilation, g.out_size)
    return y[:, 0], cache


def conv1d_cache(x: np.ndarray, kernel_size: int, *, strides: int = 1, padding="valid", dilation: int = 1):
    """The cache of :func:`conv1d_forward` without the forward pass."""
    if not isinstance(padding, str):
        padding = ((0, 0), tuple(padding))
    return conv2d_cache(
        x[:, None], (1, int(kernel_size)), strides=(1, int(strides)), padding=padding,
        dilation=(1, int(dilation)), axis_names=("", "steps"),
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

    s = vec(gamma, 1.0) / np.sqrt(vec(var, None) + float(eps))
    new_kernel = (kernel.astype(np.float64) * s).astype(kernel.dtype)
    new_bias = ((vec(bias, 0.0) - vec(mean, 0.0)) * s + vec(beta, 0.0)).astype(kernel.dtype)
    return new_kernel, new_bias
