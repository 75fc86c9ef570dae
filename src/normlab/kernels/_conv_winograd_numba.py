"""Winograd F(2x2, 3x3) tile transforms (numba); the algebra is in :mod:`normlab.kernels._conv_winograd`.

Each kernel handles the tiles ``t0 <= t < t1`` of a chunk (tile ``t`` is
image ``n``, tile row ``i``, tile column ``j`` with ``t = (n th + i) tw + j``)
and reads or writes a buffer of shape ``(16, tiles, channels)``: entry
``a * 4 + b`` of the 4 x 4 transformed tile. The channel loop is innermost and
contiguous in every array, so LLVM vectorizes it; each kernel reads its input
once and writes its output once (the transforms are adds and subtracts, the
cost is the memory traffic).
"""

from __future__ import annotations

import numpy as np
from numba import njit


# Every transform is written as short loops over the channels, two loads and one store
# each: one loop with all 16 loads and stores is not vectorized (too many possible
# aliasings for LLVM to check) and ran 12x slower; helper functions over array views
# vectorize too but took numba 10 s longer to compile.


@njit(cache=True, nogil=True)
def input_transform(x, pt, pl, t0, t1, th, tw, u):
    """``u[4a + b, t - t0, c] = (B^T d B)[a, b]`` for the 4 x 4 tile ``d = xp[n, 2i:2i+4, 2j:2j+4, c]``
    of the zero-padded input ``xp`` (``pt`` rows above ``x``, ``pl`` columns left of it; read from
    ``x`` directly, zeros outside it: the padded copy is never made).

    ``B^T`` rows: ``(1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)``.

    The row combination ``e = B^T d`` is taken once per tile row, over the strip of ``2 tw + 2``
    padded columns its tiles read (``e[a, col] = (B^T xp[n, 2i:2i+4, col])[a]``): neighbouring
    tiles share two columns, so this does half the first stage's work of a per-tile transform
    and skips its gather copy. Each tile then combines four columns of the strip; every value
    is the same expression, in the same order, as the per-tile form.
    """
    h, w, nc = x.shape[1], x.shape[2], x.shape[3]
    cols = 2 * tw + 2
    e = np.empty((4, cols, nc), x.dtype)
    d = np.empty((4, nc), x.dtype)
    zero = x.dtype.type(0)
    strip = -1
    for t in range(t0, t1):
        k = t - t0
        if t // tw != strip:  # a new tile row (or the chunk's first): its strip
            strip = t // tw
            n = t // (th * tw)
            r = 2 * (strip % th) - pt
            inside = 0 <= r and r + 3 < h
            for pc in range(cols):
                col = pc - pl
                if col < 0 or col >= w:
                    for a in range(4):
                        for c in range(nc):
                            e[a, pc, c] = zero
                elif inside:
                    for c in range(nc):
                        e[0, pc, c] = x[n, r, col, c] - x[n, r + 2, col, c]
                    for c in range(nc):
                        e[1, pc, c] = x[n, r + 1, col, c] + x[n, r + 2, col, c]
                    for c in range(nc):
                        e[2, pc, c] = x[n, r + 2, col, c] - x[n, r + 1, col, c]
                    for c in range(nc):
                        e[3, pc, c] = x[n, r + 1, col, c] - x[n, r + 3, col, c]
                else:  # rows outside x read as zeros
                    for a in range(4):
                        if 0 <= r + a < h:
                            for c in range(nc):
                                d[a, c] = x[n, r + a, col, c]
                        else:
                            for c in range(nc):
                                d[a, c] = zero
                    for c in range(nc):
                        e[0, pc, c] = d[0, c] - d[2, c]
                    for c in range(nc):
                        e[1, pc, c] = d[1, c] + d[2, c]
                    for c in range(nc):
                        e[2, pc, c] = d[2, c] - d[1, c]
                    for c in range(nc):
                        e[3, pc, c] = d[1, c] - d[3, c]
        q = 2 * (t % tw)
        for a in range(4):  # u[a, :] = (e B)[a, :] on the tile's four columns
            for c in range(nc):
                u[4 * a, k, c] = e[a, q, c] - e[a, q + 2, c]
            for c in range(nc):
                u[4 * a + 1, k, c] = e[a, q + 1, c] + e[a, q + 2, c]
            for c in range(nc):
                u[4 * a + 2, k, c] = e[a, q + 2, c] - e[a, q + 1, c]
            for c in range(nc):
                u[4 * a + 3, k, c] = e[a, q + 1, c] - e[a, q + 3, c]


@njit(cache=True, nogil=True)
def output_transform(m, t0, t1, th, tw, y, bias):
    """``y[n, 2i:2i+2, 2j:2j+2, f] = A^T M A + bias``, clipped to ``y``'s rows and columns.

    ``A^T`` rows: ``(1, 1, 1, 0), (0, 1, -1, -1)``.

    In two stages of short loops over ``f`` (``z = A^T M`` into a buffer, then ``z A``): one loop
    reading all 16 entries and writing four pixels stayed scalar (too many aliasing checks for
    LLVM), and ran 2x slower. The sums are the same expressions in the same order.
    """
    ho, wo, nf = y.shape[1], y.shape[2], y.shape[3]
    z = np.empty((8, nf), y.dtype)
    for t in range(t0, t1):
        k = t - t0
        n = t // (th * tw)
        i = (t // tw) % th
        j = t % tw
        p, q = 2 * i, 2 * j
        for b in range(4):  # z[b] = (A^T M)[0, b], z[4 + b] = (A^T M)[1, b]
            for f in range(nf):
                z[b, f] = m[b, k, f] + m[4 + b, k, f] + m[8 + b, k, f]
            for f in range(nf):
                z[4 + b, f] = m[4 + b, k, f] - m[8 + b, k, f] - m[12 + b, k, f]
        yr = y[n, p, q]
        for f in range(nf):
            yr[f] = z[0, f] + z[1, f] + z[2, f] + bias[f]
        if q + 1 < wo:
            yr = y[n, p, q + 1]
            for f in range(nf):
                yr[f] = z[1, f] - z[2, f] - z[3, f] + bias[f]
        if p + 1 < ho:
            yr = y[n, p + 1, q]
            for f in range(nf):
                yr[f] = z[4, f] + z[5, f] + z[6, f] + bias[f]
            if q + 1 < wo:
                yr = y[n, p + 1, q + 1]
                for f in range(nf):
                    yr[f] = z[5, f] - z[6, f] - z[7, f] + bias[f]


@njit(cache=True, nogil=True)
def grad_transform(dy, t0, t1, th, tw, v, zero, db):
    """``v[4a + b, t - t0, f] = (A dY A^T)[a, b]`` of the 2 x 2 tile of ``dy`` (0 outside ``dy``),
    and ``db[f] += dy[n, p, q, f]`` over the tiles' pixels in tile order (the bias gradient on the
    way: no second pass over ``dy``; ``db`` of length 0: not asked).

    ``A`` rows: ``(1, 0), (1, 1), (1, -1), (0, -1)``; the adjoint of :func:`output_transform`.
    With ``e = A d`` (rows), ``v[4a + b] = (e A^T)[a, b]``; each of the 16 entries is written from
    the tile's pixels in one loop over ``f``, the same expression as the two stages (``e``, then
    ``e A^T``) in the same order, and the pixels are read from ``dy`` where the tile is inside it
    (copied, with zeros, only at the clipped edge).
    """
    ho, wo, nf = dy.shape[1], dy.shape[2], dy.shape[3]
    d = np.empty((2, 2, nf), dy.dtype)
    has_db = db.shape[0] > 0
    for t in range(t0, t1):
        k = t - t0
        n = t // (th * tw)
        p = 2 * ((t // tw) % th)
        q = 2 * (t % tw)
        if p + 1 < ho and q + 1 < wo:
            x00, x01, x10, x11 = dy[n, p, q], dy[n, p, q + 1], dy[n, p + 1, q], dy[n, p + 1, q + 1]
            if has_db:
                for f in range(nf):
                    db[f] += x00[f]
                for f in range(nf):
                    db[f] += x01[f]
                for f in range(nf):
                    db[f] += x10[f]
                for f in range(nf):
                    db[f] += x11[f]
        else:
            for a in range(2):
                for b in range(2):
                    if p + a < ho and q + b < wo:
                        for f in range(nf):
                            d[a, b, f] = dy[n, p + a, q + b, f]
                        if has_db:
                            for f in range(nf):
                                db[f] += d[a, b, f]
                    else:
                        for f in range(nf):
                            d[a, b, f] = zero
            x00, x01, x10, x11 = d[0, 0], d[0, 1], d[1, 0], d[1, 1]
        # e[0] = d0, e[1] = d0 + d1, e[2] = d0 - d1, e[3] = -d1 (columns 0 and 1 of each)
        for f in range(nf):
            v[0, k, f] = x00[f]
        for f in range(nf):
            v[1, k, f] = x00[f] + x01[f]
        for f in range(nf):
            v[2, k, f] = x00[f] - x01[f]
        for f in range(nf):
            v[3, k, f] = -x01[f]
        for f in range(nf):
            v[4, k, f] = x00[f] + x10[f]
        for f in range(nf):
            v[5, k, f] = (x00[f] + x10[f]) + (x01[f] + x11[f])
        for f in range(nf):
            v[6, k, f] = (x00[f] + x10[f]) - (x01[f] + x11[f])
        for f in range(nf):
            v[7, k, f] = -(x01[f] + x11[f])
        for f in range(nf):
            v[8, k, f] = x00[f] - x10[f]
        for f in range(nf):
            v[9, k, f] = (x00[f] - x10[f]) + (x01[f] - x11[f])
        for f in range(nf):
            v[10, k, f] = (x00[f] - x10[f]) - (x01[f] - x11[f])
        for f in range(nf):
            v[11, k, f] = -(x01[f] - x11[f])
        for f in range(nf):
            v[12, k, f] = -x10[f]
        for f in range(nf):
            v[13, k, f] = (-x10[f]) + (-x11[f])
        for f in range(nf):
            v[14, k, f] = (-x10[f]) - (-x11[f])
        for f in range(nf):
            v[15, k, f] = -(-x11[f])


@njit(cache=True, nogil=True)
def input_transform_adjoint(du, pt, pl, t0, t1, th, tw, dx):
    """``dxp[n, 2i:2i+4, 2j:2j+4, c] += B dU B^T`` (the adjoint of :func:`input_transform`),
    added to ``dx`` (``dxp`` without its padding: what falls on the padding is dropped).
    Neighbouring tiles overlap by two rows or columns and add up, in tile order.

    ``B`` rows: ``(1, 0, 0, 0), (0, 1, -1, 1), (-1, 1, 1, 0), (0, 0, 0, -1)``.
    """
    h, w, nc = dx.shape[1], dx.shape[2], dx.shape[3]
    e = np.empty((4, 4, nc), du.dtype)
    for t in range(t0, t1):
        k = t - t0
        n = t // (th * tw)
        r = 2 * ((t // tw) % th) - pt
        s = 2 * (t % tw) - pl
        for b in range(4):  # e[:, b] = B dU[:, b]
            for c in range(nc):
                e[0, b, c] = du[b, k, c]
            for c in range(nc):
                e[1, b, c] = (du[4 + b, k, c] - du[8 + b, k, c]) + du[12 + b, k, c]
            for c in range(nc):
                e[2, b, c] = (du[4 + b, k, c] + du[8 + b, k, c]) - du[b, k, c]
            for c in range(nc):
                e[3, b, c] = -du[12 + b, k, c]
        for rr in range(4):  # dx[r + rr, s:s+4] += (e B^T)[rr, :], each sum added where it lands
            if 0 <= r + rr < h:
                if 0 <= s < w:
                    o = dx[n, r + rr, s]
                    for c in range(nc):
                        o[c] += e[rr, 0, c]
                if 0 <= s + 1 < w:
                    o = dx[n, r + rr, s + 1]
                    for c in range(nc):
                        o[c] += (e[rr, 1, c] - e[rr, 2, c]) + e[rr, 3, c]
                if 0 <= s + 2 < w:
                    o = dx[n, r + rr, s + 2]
                    for c in range(nc):
                        o[c] += (e[rr, 1, c] + e[rr, 2, c]) - e[rr, 0, c]
                if 0 <= s + 3 < w:
                    o = dx[n, r + rr, s + 3]
                    for c in range(nc):
                        o[c] += -e[rr, 3, c]


@njit(cache=True, nogil=True)
def kernel_transform(g, wt):
    """``wt[4a + b, c, f] = (G g[:, :, c, f] G^T)[a, b]``, computed in float64 and rounded once.

    ``G`` rows: ``(1, 0, 0), (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1)``.
    """
    nc, nf = g.shape[2], g.shape[3]
    r = np.empty((4, 3), np.float64)
    for c in range(nc):
        for f in range(nf):
            for j in range(3):  # r[:, j] = G g[:, j]
                g0, g1, g2 = np.float64(g[0, j, c, f]), np.float64(g[1, j, c, f]), np.float64(g[2, j, c, f])
                r[0, j] = g0
                r[1, j] = 0.5 * (g0 + g1 + g2)
                r[2, j] = 0.5 * (g0 - g1 + g2)
                r[3, j] = g2
            for a in range(4):  # wt[a, :] = r[a, :] G^T
                wt[4 * a, c, f] = r[a, 0]
                wt[4 * a + 1, c, f] = 0.5 * (r[a, 0] + r[a, 1] + r[a, 2])
                wt[4 * a + 2, c, f] = 0.5 * (r[a, 0] - r[a, 1] + r[a, 2])
                wt[4 * a + 3, c, f] = r[a, 2]


@njit(cache=True, nogil=True)
def kernel_transform_adjoint(dwt, dg):
    """``dg[:, :, c, f] = G^T dWt[c, f] G`` (the adjoint of :func:`kernel_transform`), in float64."""
    nc, nf = dg.shape[2], dg.shape[3]
    r = np.empty((3, 4), np.float64)
    for c in range(nc):
        for f in range(nf):
            for b in range(4):  # r[:, b] = G^T dWt[:, b]
                d0 = np.float64(dwt[b, c, f])
                d1 = np.float64(dwt[4 + b, c, f])
                d2 = np.float64(dwt[8 + b, c, f])
                d3 = np.float64(dwt[12 + b, c, f])
                r[0, b] = d0 + 0.5 * (d1 + d2)
                r[1, b] = 0.5 * (d1 - d2)
                r[2, b] = 0.5 * (d1 + d2) + d3
            for i in range(3):  # dg[i, :] = r[i, :] G
                dg[i, 0, c, f] = r[i, 0] + 0.5 * (r[i, 1] + r[i, 2])
                dg[i, 1, c, f] = 0.5 * (r[i, 1] - r[i, 2])
                dg[i, 2, c, f] = 0.5 * (r[i, 1] + r[i, 2]) + r[i, 3]


# ------------------------------------------------------------- chunk steps
# A thread's chunk loop alternates these transforms with NumPy's batched products. Each call of
# a nogil kernel hands the GIL back and takes it again, and with the machine busy a thread that
# waits for the GIL waits for a time slice: the steps below run, in one call, the transforms that
# sit between two products (the previous chunk's last transform and the next chunk's first),
# which halves the hand-offs of the forward pass and of the backward pass. A range with
# ``t0 == t1`` is skipped (the first and the last call of a loop). Every value is computed by the
# same kernel as before, in the same order.


@njit(cache=True, nogil=True)
def forward_step(m, o0, o1, y, bias, x, pt, pl, i0, i1, th, tw, u):
    """:func:`output_transform` of tiles ``o0:o1`` from ``m``, then :func:`input_transform` of tiles
    ``i0:i1`` into ``u``."""
    if o1 > o0:
        output_transform(m, o0, o1, th, tw, y, bias)
    if i1 > i0:
        input_transform(x, pt, pl, i0, i1, th, tw, u)


@njit(cache=True, nogil=True)
def backward_step(acc, prod, du, a0, a1, dx, dy, x, pt, pl, g0, g1, th, tw, v, zero, db, u):
    """For the chunk ``a0:a1`` just multiplied: ``acc += prod`` (its kernel-gradient product; ``acc``
    of size 0: not asked) and :func:`input_transform_adjoint` of ``du`` into ``dx`` (``dx`` of size
    0: not asked); then for the next chunk ``g0:g1``: :func:`grad_transform` into ``v`` (and ``db``)
    and :func:`input_transform` into ``u`` (``u`` of size 0: not asked)."""
    if a1 > a0:
        if acc.size > 0:
            af = acc.reshape(-1)
            pf = prod.reshape(-1)
            for i in range(af.shape[0]):
                af[i] += pf[i]
        if dx.size > 0:
            input_transform_adjoint(du, pt, pl, a0, a1, th, tw, dx)
    if g1 > g0:
        grad_transform(dy, g0, g1, th, tw, v, zero, db)
        if u.size > 0:
            input_transform(x, pt, pl, g0, g1, th, tw, u)
