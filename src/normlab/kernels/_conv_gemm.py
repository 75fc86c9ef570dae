"""The im2col GEMM convolution (the exact path, any strides and dilation); see :mod:`normlab.kernels.conv`.

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

Threads: the images are split over normlab's threads (:mod:`._threads`), each part
with BLAS on one thread. Each output row of a GEMM is computed the same way however
the rows are cut into tiles (checked: ``tests/kernels/test_conv_threads.py``), so
``y`` and ``dx`` have the same bits at any thread count; ``dW`` keeps the one-thread
tiles and adds their partial products in tile order, whichever thread made them.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _threads

__all__ = ["TILE_BYTES", "correlate", "input_grad", "kernel_grad", "pad", "param_grads"]

#: patch bytes per tile (fits the L2 cache of current CPUs next to the kernel)
TILE_BYTES = 1 << 20


def pad(x: np.ndarray, pads) -> np.ndarray:
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


def _threads_for(n: int, madds: int) -> int:
    """Threads for a product of ``madds`` multiply-adds over ``n`` images (one for small ones)."""
    if n < 2 or madds < _threads.MIN_PARALLEL_FLOPS:
        return 1
    return min(_threads.get_num_threads(), n)


def correlate(xp, kernel, bias, strides, dilation, out_size) -> np.ndarray:
    """``y = im2col(xp) @ W2 (+ bias)`` of shape ``(N, Ho, Wo, F)``, tile by tile, the images
    split over threads.

    With unit row stride the row taps need no copy (``_correlate_rows``).
    """
    n = xp.shape[0]
    (ho, wo), (kh, kw, c, f) = out_size, kernel.shape
    y = np.empty((n, ho, wo, f), dtype=np.result_type(xp.dtype, kernel.dtype))
    one = _correlate_rows if strides[0] == 1 else _correlate_strided
    threads = _threads_for(n, n * ho * wo * kh * kw * c * f)

    def part(n0, n1):
        one(xp[n0:n1], kernel, bias, strides, dilation, out_size, y[n0:n1])

    with _threads.blas_single(threads):
        _threads.run_parts(part, n, threads)
    return y


def _correlate_strided(xp, kernel, bias, strides, dilation, out_size, y) -> None:
    """Full patches per tile, one GEMM (row strides over one)."""
    n = xp.shape[0]
    (ho, wo), (kh, kw, c, f) = out_size, kernel.shape
    k = kh * kw * c
    w2 = kernel.reshape(k, f)
    view = _windows(xp, (kh, kw), strides, dilation, out_size)
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


def _row_tiles(n, ho, wo, kc, itemsize, halo):
    # several images per tile only when they are small (their seams cost wasted rows)
    return _tiles(n, ho, wo * kc, itemsize, halo, whole_images=ho * wo < 256)


def _correlate_rows(xp, kernel, bias, strides, dilation, out_size, y) -> None:
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
    view = _strips(xp, kw, strides[1], dw, wo)
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


def param_grads(dy, xp, geom, kshape):
    """``dW2 = P^T dY`` (tile by tile, patches rebuilt) and ``db = sum_rows dY``."""
    f = kshape[3]
    dy2 = dy.reshape(-1, f)
    # BLAS gemv: much faster than a reduction over the long axis
    db = np.ones(dy2.shape[0], dtype=dy.dtype) @ dy2
    return kernel_grad(dy, xp, geom, kshape), db


def kernel_grad(dy, xp, geom, kshape):
    """``dW2 = P^T dY``, the tiles' products added in tile order (split over threads by tiles)."""
    kh, kw, c, f = kshape
    n = xp.shape[0]
    (ho, wo), (dh, dw_) = geom.out_size, geom.dilation
    if geom.strides[0] == 1:  # width strips: kh products per tile (see _correlate_rows)
        kc, halo, taps = kw * c, (kh - 1) * dh, kh
        view = _strips(xp, kw, geom.strides[1], dw_, wo)
        tiles = _row_tiles(n, ho, wo, kc, xp.itemsize, halo)
    else:  # full patches: one product per tile
        kc, halo, taps = kh * kw * c, 0, 1
        view = _windows(xp, geom.kernel, geom.strides, geom.dilation, geom.out_size)
        tiles = _tiles(n, ho, wo * kc, xp.itemsize)
    dy3 = dy.reshape(n, ho * wo, f)
    max_rows = max((n1 - n0) * (p1 - p0 + halo) for n0, n1, p0, p1 in tiles) * wo
    threads = _threads_for(len(tiles), n * ho * wo * kh * kw * c * f)
    ranges = _threads.split(len(tiles), threads)
    dw = np.zeros((taps, kc, f), dtype=dy.dtype)
    # tiles after the first thread's range keep their products apart, added in order below
    first = ranges[0][1]
    later = np.empty((len(tiles) - first, taps, kc, f), dtype=dy.dtype)

    def part(t_lo, t_hi):
        buf = np.empty(max_rows * kc, dtype=xp.dtype)
        grid = np.zeros((max_rows, f), dtype=dy.dtype) if halo else None
        prod = np.empty((kc, f), dtype=dy.dtype)
        for t in range(t_lo, t_hi):
            n0, n1, p0, p1 = tiles[t]
            nb, hb = n1 - n0, p1 - p0 + halo
            strips = buf[: nb * hb * wo * kc]
            if geom.strides[0] == 1:
                np.copyto(strips.reshape(nb, hb, wo, kw, c), view[n0:n1, p0 : p0 + hb])
            else:
                np.copyto(strips.reshape(nb, hb, wo, kh, kw, c), view[n0:n1, p0:p1])
            a = strips.reshape(nb * hb * wo, kc)
            m = (nb * hb - halo) * wo
            if nb == 1 or not halo:
                g = dy3[n0:n1, p0 * wo : p1 * wo].reshape(-1, f)
            else:  # dY on the block's row grid, zero on the rows between images
                g4 = grid[: nb * hb * wo].reshape(nb, hb, wo, f)
                g4[:, : p1 - p0] = dy[n0:n1]
                g4[:, p1 - p0 :] = 0
                g = grid[:m]
            for i in range(taps):
                r = i * dh * wo
                if t < first:
                    np.matmul(a[r : r + m].T, g, out=prod)
                    dw[i] += prod
                else:
                    np.matmul(a[r : r + m].T, g, out=later[t - first, i])

    with _threads.blas_single(threads):
        _threads.run_parts(part, len(tiles), threads)
    for t in range(len(later)):
        dw += later[t]
    return dw.reshape(kshape)


def input_grad(dy, kernel, geom, xp_shape):
    kh, kw, _, _ = kernel.shape
    (pt, pb), (pl, pr) = geom.pads
    (dh, dw_), (h, w) = geom.dilation, geom.in_size
    back = ((kh - 1) * dh - pt, (kh - 1) * dh - pb), ((kw - 1) * dw_ - pl, (kw - 1) * dw_ - pr)
    if geom.strides == (1, 1) and min(min(b) for b in back) >= 0:
        # full correlation of the padded dY with the flipped, transposed kernel
        dyp = pad(dy, back)
        wf = np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))
        return correlate(dyp, wf, None, (1, 1), geom.dilation, (h, w))
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
