"""Winograd F(2x2, 3x3) convolution: 3 x 3 kernels, unit strides and dilation (Lavin and Gray, 2016).

The output is cut into 2 x 2 tiles; tile ``t`` (image ``n``, tile row ``i``,
column ``j``) reads the 4 x 4 input tile ``d = xp[n, 2i:2i+4, 2j:2j+4, c]``
(neighbours overlap by two rows or columns; ``xp`` is the input zero-padded
and extended with zeros to ``2 th + 2`` rows, ``th = ceil(Ho / 2)``, likewise
columns; the kernels read ``x`` directly and never make that copy)::

    U[t, c]  = B^T d B                       4 x 4, input transform
    Wt[c, f] = G g[:, :, c, f] G^T           4 x 4, kernel transform (float64, then rounded)
    M[t, f]  = sum_c U[t, c] (.) Wt[c, f]    16 GEMMs (tiles x C) @ (C x F), one per entry
    Y[t, f]  = A^T M[t, f] A (+ b[f])        2 x 2 output tile

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

16 multiplications per output tile and channel pair instead of 36: 2.25x
fewer. Backward, with ``V[t, f] = A dY_t A^T`` (the adjoint of the output
transform, ``dY`` zero outside the output)::

    dWt[c, f] = sum_t U[t, c] (.) V[t, f]    16 GEMMs (C x tiles) @ (tiles x F)
    dg        = G^T dWt G
    dU[t, c]  = sum_f V[t, f] (.) Wt[c, f]   16 GEMMs (tiles x F) @ (F x C)
    dxp      += B dU B^T                     scattered back onto the tile, overlaps adding up

(the exact adjoint of the forward algorithm, so float64 gradient checks pass to
rounding). The tiles are processed in chunks whose transformed buffers stay in
the L2 cache; the transforms are numba kernels (:mod:`._conv_winograd_numba`)
or, without numba, the same matrices applied with NumPy.

Error bound (float32, unit roundoff ``u = 2**-24``), to first order in ``u``,
for every output element::

    |y_winograd - y| <= (C + 11) u  sum_c |A^T| (|G| |g_c| |G^T| (.) |B^T| |d_c| |B|) |A|

from 2 roundings in the input transform, 4 in the kernel transform, 1 in the
product, ``C - 1`` in the channel sum and 4 in the output transform (each
1-D transform sums at most three terms). The transformed magnitudes on the
right are 64/9 = 7.1 times the direct convolution's ``sum |x| |g|`` for inputs
of equal magnitude, and 7-7.4 times at the median for Gaussian inputs (up to
60 elementwise, where an output's own taps are small and its tile's others
large), so Winograd's bound is about ``7 (C + 11) / (9 C)``, 0.9-1.9 times
the GEMM path's ``9 C u sum |x| |g|`` for 8 to 64 channels, and more for
fewer. ``tests/kernels/test_conv_algorithms.py``
checks the bound against a float64 reference. Use ``algorithm="gemm"`` where
this matters.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _backend, _threads

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _conv_winograd_numba as _nb
else:  # pragma: no cover
    _nb = None

__all__ = ["BT", "G", "AT", "supported", "tiles", "forward", "backward", "error_bound"]

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

#: bytes of one chunk's transformed buffer (U or V, 16 x tiles x channels) at most. The CNN's two
#: Winograd layers (128 x 14 x 14, 32 -> 64 and 64 -> 64 channels), forward and backward, 1 thread,
#: CPU time against 512 KiB (the L2 size of a core here; chunks of 128 tiles): 1 MiB 0.94-0.95x
#: (196 tiles: larger products, half the calls), 2 MiB 0.95x, 4 MiB 1.04x
CHUNK_BYTES = 1 << 20


def supported(kernel_size, strides, dilation) -> bool:
    """True for 3 x 3 kernels with unit strides and dilation."""
    return tuple(kernel_size) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)


def tiles(out_size) -> tuple:
    """``(th, tw)``: 2 x 2 output tiles per column and row."""
    return (-(-out_size[0] // 2), -(-out_size[1] // 2))


def _chunks(t_lo: int, t_hi: int, channels: int, itemsize: int):
    """Tiles ``t_lo:t_hi`` in chunks of equal size (within one tile) whose ``16 x tiles x channels``
    buffer is at most ``CHUNK_BYTES`` (64 tiles at least): no short last chunk of a few tiles."""
    step = max(64, CHUNK_BYTES // (16 * channels * itemsize))
    k = max(1, -(-(t_hi - t_lo) // step))
    return [(t_lo + i * (t_hi - t_lo) // k, t_lo + (i + 1) * (t_hi - t_lo) // k) for i in range(k)]


def kernel_transform(kernel: np.ndarray) -> np.ndarray:
    """``Wt[4a + b, c, f] = (G g G^T)[a, b]`` in float64, rounded once to the kernel's dtype.

    Per ``(c, f)`` in a numba loop (~1 ms for 3 x 3 x 256 x 256; NumPy's products, ~10 ms, without numba)."""
    c, f = kernel.shape[2:]
    if _backend.numba_enabled() and kernel.dtype in (np.float32, np.float64):
        wt = np.empty((16, c, f), dtype=kernel.dtype)
        _nb.kernel_transform(np.ascontiguousarray(kernel), wt)
        return wt
    return np.ascontiguousarray(_sandwich(G, kernel.astype(np.float64)).reshape(16, c, f), dtype=kernel.dtype)


def kernel_grad(dwt: np.ndarray, dtype) -> np.ndarray:
    """``dg = G^T dWt G`` of shape ``(3, 3, C, F)`` from ``dWt`` ``(16, C, F)`` (float64, rounded once)."""
    c, f = dwt.shape[1:]
    if _backend.numba_enabled() and dwt.dtype in (np.float32, np.float64):
        dg = np.empty((3, 3, c, f), dtype=dtype)
        _nb.kernel_transform_adjoint(dwt, dg)
        return dg
    return _sandwich(G.T, dwt.reshape(4, 4, c, f).astype(np.float64)).astype(dtype)


def _sandwich(m: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``r[a, b, c, f] = sum_{i, j} m[a, i] g[i, j, c, f] m[b, j]`` (two tensordots; einsum's
    plan for this took twice as long)."""
    t = np.tensordot(m, g, axes=([1], [1]))  # t[b, i, c, f] = sum_j m[b, j] g[i, j, c, f]
    return np.tensordot(m, t, axes=([1], [1]))  # r[a, b, c, f] = sum_i m[a, i] t[b, i, c, f]


# ------------------------------------------------------- NumPy transforms
def _tile_index(t0, t1, th, tw):
    t = np.arange(t0, t1)
    return t // (th * tw), (t // tw) % th, t % tw


def _padded(x, pt, pl, th, tw):
    """``x`` zero-padded to the ``2 th + 2`` rows and ``2 tw + 2`` columns the tiles read."""
    h, w = x.shape[1:3]
    return np.pad(x, ((0, 0), (pt, max(0, 2 * th + 2 - h - pt)), (pl, max(0, 2 * tw + 2 - w - pl)), (0, 0)))


def _np_input(x, pt, pl, t0, t1, th, tw, u):
    xp = _padded(x, pt, pl, th, tw)
    s_n, s_h, s_w, s_c = xp.strides
    view = as_strided(xp, (xp.shape[0], th, tw, 4, 4, xp.shape[3]), (s_n, 2 * s_h, 2 * s_w, s_h, s_w, s_c),
                      writeable=False)
    d = view[_tile_index(t0, t1, th, tw)].astype(np.float64)
    u[:, : t1 - t0] = np.einsum("ar,trsc,bs->abtc", BT, d, BT, optimize=True).reshape(16, t1 - t0, -1)


def _np_output(m, t0, t1, th, tw, y, bias):
    n, i, j = _tile_index(t0, t1, th, tw)
    yt = np.einsum("pa,abtf,qb->tpqf", AT, m[:, : t1 - t0].reshape(4, 4, t1 - t0, -1), AT, optimize=True)
    ho, wo = y.shape[1:3]
    for p in range(2):
        for q in range(2):
            keep = (2 * i + p < ho) & (2 * j + q < wo)
            y[n[keep], 2 * i[keep] + p, 2 * j[keep] + q] = yt[keep, p, q] + bias


def _np_grad(dy, t0, t1, th, tw, v, zero=None, db=None):
    n, i, j = _tile_index(t0, t1, th, tw)
    ho, wo, f = dy.shape[1:]
    d = np.zeros((t1 - t0, 2, 2, f))
    for p in range(2):
        for q in range(2):
            keep = (2 * i + p < ho) & (2 * j + q < wo)
            d[keep, p, q] = dy[n[keep], 2 * i[keep] + p, 2 * j[keep] + q]
    if db is not None and db.size:
        db += d.reshape(-1, f).sum(axis=0).astype(db.dtype)
    v[:, : t1 - t0] = np.einsum("pa,tpqf,qb->abtf", AT, d, AT, optimize=True).reshape(16, t1 - t0, f)


def _np_input_adjoint(du, pt, pl, t0, t1, th, tw, dx):
    dxp = _padded(np.zeros_like(dx), pt, pl, th, tw)
    n, i, j = _tile_index(t0, t1, th, tw)
    dd = np.einsum("ar,abtc,bs->trsc", BT, du[:, : t1 - t0].reshape(4, 4, t1 - t0, -1), BT, optimize=True)
    for r in range(4):
        for s in range(4):  # one (r, s): distinct tiles hit distinct pixels, no repeated index
            dxp[n, 2 * i + r, 2 * j + s] += dd[:, r, s]
    h, w = dx.shape[1:3]
    dx += dxp[:, pt : pt + h, pl : pl + w]


def _fns(dtype):
    """The four transforms: numba's for float32/float64 when enabled, else NumPy's."""
    if _backend.numba_enabled() and dtype in (np.float32, np.float64):
        return (_nb.input_transform, _nb.output_transform, _nb.grad_transform, _nb.input_transform_adjoint), True
    return (_np_input, _np_output, _np_grad, _np_input_adjoint), False


# ----------------------------------------------------------- algorithms
#: images per work unit of the backward pass: the kernel gradient is summed per unit, then the
#: units' sums in order, so the result does not depend on the thread count
GROUPS = 8
#: tiles per group at least (fewer groups for small inputs): a group's chunks are its own, and
#: chunks of a few dozen tiles made the GEMMs of 7 x 7 x 256 layers 1.6x slower than im2col's
GROUP_TILES = 512


_blas_single = _threads.blas_single  # the name earlier code and tests use


def _groups(n_images: int, per_image: int) -> list[tuple[int, int]]:
    """``GROUPS`` (fewer for small inputs: ``GROUP_TILES`` tiles each at least) ranges of images."""
    return _threads.split(n_images, max(1, min(GROUPS, n_images * per_image // GROUP_TILES)))


def _threads_for(n_images: int, elements: int) -> int:
    """Threads for a convolution whose transformed buffers hold ``elements``: one below
    ``_threads.MIN_PARALLEL_ELEMENTS`` / 4 or for a single image."""
    if n_images < 2 or elements < _threads.MIN_PARALLEL_ELEMENTS // 4:
        return 1
    return min(_threads.get_num_threads(), n_images)


def forward(x: np.ndarray, kernel: np.ndarray, bias, pads, out_size) -> np.ndarray:
    """``y`` of shape ``(N, Ho, Wo, F)`` from the unpadded input ``x`` and ``pads`` ``((pt, pb), (pl, pr))``.

    The tiles are cut into chunks fixed by the shape (the backward pass's groups of images, each
    cut into equal chunks), and each thread takes whole chunks. A chunk's 16 products are one BLAS call each, and OpenBLAS's float32
    kernels may round a row differently depending on where it falls in the call's rows: chunks
    that followed the thread split (each thread chunking its own images from their first tile)
    gave outputs on 2 threads that differed from 1 thread's in the last bits."""
    n, c, f = x.shape[0], kernel.shape[2], kernel.shape[3]
    (pt, _), (pl, _) = pads
    dtype = np.result_type(x.dtype, kernel.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    th, tw = tiles(out_size)
    (fin, fout, _, _), fast = _fns(dtype)
    wt = kernel_transform(kernel.astype(dtype, copy=False))
    y = np.empty((n,) + tuple(out_size) + (f,), dtype=dtype)
    b = np.zeros(f, dtype) if bias is None else np.asarray(bias, dtype=dtype)
    per_image = th * tw
    total = n * per_image
    # the backward pass's groups of images, each cut into chunks of equal size: as many chunks
    # for every group, so whole chunks split evenly over 2 (or 4, 8) threads
    chunks = [ch for g0, g1 in _groups(n, per_image) for ch in _chunks(g0 * per_image, g1 * per_image, max(c, f),
                                                                     y.itemsize)] if fast else [(0, total)]

    def part(k0, k1):
        mine = chunks[k0:k1]
        step = max(t1 - t0 for t0, t1 in mine)
        u = np.empty((16, step, c), dtype=dtype)
        m = np.empty((16, step, f), dtype=dtype)
        if fast:  # one nogil call between two products (_conv_winograd_numba: chunk steps)
            o0 = o1 = mine[0][0]
            for t0, t1 in mine:
                _nb.forward_step(m, o0, o1, y, b, x, pt, pl, t0, t1, th, tw, u)
                np.matmul(u[:, : t1 - t0], wt, out=m[:, : t1 - t0])
                o0, o1 = t0, t1
            _nb.forward_step(m, o0, o1, y, b, x, pt, pl, o1, o1, th, tw, u)
            return
        for t0, t1 in mine:
            k = t1 - t0
            fin(x, pt, pl, t0, t1, th, tw, u)
            np.matmul(u[:, :k], wt, out=m[:, :k])
            fout(m, t0, t1, th, tw, y, b)

    threads = min(len(chunks), _threads_for(n, 16 * total * max(c, f))) if fast else 1
    with _blas_single(threads):
        _threads.run_parts(part, len(chunks), threads)
    return y


def backward(dy: np.ndarray, x: np.ndarray, kernel: np.ndarray, pads, *, need_dx: bool, need_dw: bool):
    """``(dx, dkernel, dbias)`` from the unpadded input ``x`` (None where not asked; ``dbias``
    with ``dkernel``, summed while the gradient transform reads ``dy``).

    The images are cut into ``GROUPS`` consecutive groups; each group's kernel- and
    bias-gradient sums are kept apart and the sums are added in group order, and each group
    scatters into its own images of ``dx``: the same bits on any number of threads."""
    n, c, f = x.shape[0], kernel.shape[2], kernel.shape[3]
    (pt, _), (pl, _) = pads
    dtype = dy.dtype
    x = np.ascontiguousarray(x, dtype=dtype)
    dy = np.ascontiguousarray(dy)
    th, tw = tiles(dy.shape[1:3])
    (fin, _, fgrad, fadj), fast = _fns(dtype)
    per_image = th * tw
    groups = _groups(n, per_image)
    dwt = np.zeros((len(groups), 16, c, f), dtype=dtype) if need_dw else None
    dbs = np.zeros((len(groups), f if need_dw else 0), dtype=dtype)
    if need_dx:
        wtt = np.ascontiguousarray(kernel_transform(kernel.astype(dtype, copy=False)).transpose(0, 2, 1))
        dx = np.zeros(x.shape, dtype=dtype)

    none3, none4 = np.empty((0, 0, 0), dtype), np.empty((0, 0, 0, 0), dtype)

    def _fast_group(g, chunks, v, u, prod, du):
        # one nogil call between two rounds of products (_conv_winograd_numba: chunk steps)
        acc = dwt[g] if need_dw else none3
        dxo = dx if need_dx else none4
        zero = dtype.type(0)
        a0 = a1 = chunks[0][0]
        for t0, t1 in chunks:
            _nb.backward_step(acc, prod, du, a0, a1, dxo, dy, x, pt, pl, t0, t1, th, tw, v, zero, dbs[g], u)
            k = t1 - t0
            if need_dw:
                np.matmul(u[:, :k].transpose(0, 2, 1), v[:, :k], out=prod)
            if need_dx:
                np.matmul(v[:, :k], wtt, out=du[:, :k])
            a0, a1 = t0, t1
        _nb.backward_step(acc, prod, du, a0, a1, dxo, dy, x, pt, pl, a1, a1, th, tw, v, zero, dbs[g], u)

    def part(g0, g1):
        for g in range(g0, g1):
            t_lo, t_hi = groups[g][0] * per_image, groups[g][1] * per_image
            chunks = _chunks(t_lo, t_hi, max(c, f), dy.itemsize) if fast else [(t_lo, t_hi)]
            step = max(t1 - t0 for t0, t1 in chunks)
            v = np.empty((16, step, f), dtype=dtype)
            if need_dw:
                u = np.empty((16, step, c), dtype=dtype)
                prod = np.empty((16, c, f), dtype=dtype)
            if need_dx:
                du = np.empty((16, step, c), dtype=dtype)
            if fast:
                _fast_group(g, chunks, v, u if need_dw else none3, prod if need_dw else none3,
                            du if need_dx else none3)
                continue
            for t0, t1 in chunks:
                k = t1 - t0
                fgrad(dy, t0, t1, th, tw, v, dtype.type(0), dbs[g])
                if need_dw:
                    fin(x, pt, pl, t0, t1, th, tw, u)
                    np.matmul(u[:, :k].transpose(0, 2, 1), v[:, :k], out=prod)
                    dwt[g] += prod
                if need_dx:
                    np.matmul(v[:, :k], wtt, out=du[:, :k])
                    fadj(du, pt, pl, t0, t1, th, tw, dx)

    threads = _threads_for(n, 16 * n * per_image * max(c, f)) if fast else 1
    with _blas_single(threads):
        _threads.run_parts(part, len(groups), threads)
    dw = db = None
    if need_dw:
        total, db = dwt[0], dbs[0]
        for g in range(1, len(groups)):
            total += dwt[g]
            db += dbs[g]
        dw = kernel_grad(total, dtype)
    return (dx if need_dx else None), dw, db


def error_bound(x: np.ndarray, kernel: np.ndarray, pads, out_size, eps: float | None = None) -> np.ndarray:
    """The first-order bound of the module docstring for every output element (float64)."""
    c = kernel.shape[2]
    eps = np.finfo(np.float32).eps / 2 if eps is None else eps
    th, tw = tiles(out_size)
    xp = _padded(np.abs(x.astype(np.float64)), pads[0][0], pads[1][0], th, tw)
    n = xp.shape[0]
    s_n, s_h, s_w, s_c = xp.strides
    d = as_strided(xp, (n, th, tw, 4, 4, c), (s_n, 2 * s_h, 2 * s_w, s_h, s_w, s_c), writeable=False)
    ud = np.einsum("ar,nijrsc,bs->nijabc", np.abs(BT), d, np.abs(BT), optimize=True)
    wg = np.einsum("ai,ijcf,bj->abcf", np.abs(G), np.abs(kernel.astype(np.float64)), np.abs(G), optimize=True)
    mm = np.einsum("nijabc,abcf->nijabf", ud, wg, optimize=True)
    yt = np.einsum("pa,nijabf,qb->nipjqf", np.abs(AT), mm, np.abs(AT), optimize=True)
    yt = yt.reshape(n, 2 * th, 2 * tw, -1)[:, : out_size[0], : out_size[1]]
    return (c + 11) * eps * yt
