"""Pooling on channels-last data: max and average over windows, and global pooling.

2-D, ``x`` of shape ``(N, H, W, C)``, window ``(ph, pw)``, strides ``(sh, sw)``,
padding ``(pt, pb), (pl, pr)`` ("valid" or TF/Keras "same", as for
convolutions: :func:`normlab.kernels.conv.same_padding`). Window ``(p, q)``
holds the taps ``xp[n, p sh + i, q sw + j, c]``, ``i < ph``, ``j < pw``::

    max:      y[n, p, q, c] = max_{i, j} xp[n, p sh + i, q sw + j, c]      (padding = -inf)
    average:  y[n, p, q, c] = 1 / cnt[p, q] sum_{i, j} xp[n, p sh + i, q sw + j, c]   (padding = 0)

``cnt[p, q]`` counts the taps inside the input (TF/Keras: padding is not
counted; ``ph pw`` everywhere for "valid"). A "same" window always holds at
least one input element.

Backward, with windows that may overlap (``s < p``) adding up::

    max:      dx at the window's maximal tap += dy[n, p, q, c]   (the first in row-major
              order on ties: the tap TF and PyTorch pick)
    average:  dx[n, p sh + i - pt, q sw + j - pl, c] += dy[n, p, q, c] / cnt[p, q]

Global pooling over all spatial positions ``S = H W``::

    average:  y[n, c] = 1/S sum_s x[n, s, c]        dx[n, s, c] = dy[n, c] / S
    max:      y[n, c] = max_s x[n, s, c]            dx = dy at the first maximal s, 0 elsewhere

Implementation: a loop over the ``ph pw`` taps, each a strided view of
``xp`` of the output's shape, so every step is one vectorized NumPy
operation over the whole batch (no Python loop over pixels). The max pass
keeps nothing but the (padded) input and the output: the backward pass finds
each window's first tap equal to the maximum. 1-D pooling (``(N, L, C)``) is 2-D pooling with one row.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _backend, _threads
from .conv import ConvGeometry, conv_geometry

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from . import _fused_numba as _nb
    from . import _pool_numba as _nbp
else:  # pragma: no cover
    _nb = _nbp = None

__all__ = [
    "PoolCache",
    "avg_pool1d_backward",
    "avg_pool1d_forward",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "global_avg_pool_backward",
    "global_avg_pool_forward",
    "global_max_pool_backward",
    "global_max_pool_forward",
    "max_pool1d_backward",
    "max_pool1d_forward",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "pool_geometry",
]


class PoolCache(NamedTuple):
    """What the pooling backward passes need."""

    geom: ConvGeometry
    x_shape: tuple
    xp: np.ndarray | None  # max: the padded input (-inf padding)
    aux: np.ndarray  # max: the output y; average: taps inside the input per window, (Ho, Wo, 1)
    arg: np.ndarray | None = None  # max, disjoint windows with numba: each window's maximal tap (uint8)


def pool_geometry(in_size, pool_size, strides, padding, *, axis_names=("height", "width")) -> ConvGeometry:
    """Sizes of a 2-D pooling (a convolution geometry with unit dilation)."""
    return conv_geometry(in_size, pool_size, strides, (1, 1), padding, axis_names=axis_names, window="pool window")


def _taps(geom: ConvGeometry):
    """``(t, (i, j), row slice, column slice)`` of each tap of the window, row-major."""
    (ph, pw), (sh, sw), (ho, wo) = geom.kernel, geom.strides, geom.out_size
    for i in range(ph):
        for j in range(pw):
            yield i * pw + j, slice(i, i + (ho - 1) * sh + 1, sh), slice(j, j + (wo - 1) * sw + 1, sw)


def _pad(x, pads, value):
    (pt, pb), (pl, pr) = pads
    if pt == pb == pl == pr == 0:
        return x
    n, h, w, c = x.shape
    xp = np.full((n, h + pt + pb, w + pl + pr, c), value, dtype=x.dtype)
    xp[:, pt : pt + h, pl : pl + w] = x
    return xp


def _unpad(dxp, geom):
    (pt, _), (pl, _) = geom.pads
    h, w = geom.in_size
    if dxp.shape[1:3] == (h, w):
        return dxp
    return np.ascontiguousarray(dxp[:, pt : pt + h, pl : pl + w])


# ----------------------------------------------------------------- max
def max_pool2d_forward(x, *, pool_size=(2, 2), strides=None, padding="valid"):
    """Return ``(y, cache)`` of 2-D max pooling (``strides=None``: the pool size)."""
    geom = pool_geometry(x.shape[1:3], pool_size, strides or pool_size, padding)
    xp = _pad(x, geom.pads, -np.inf)
    if _fast_disjoint(xp, geom):
        # one pass that also records each window's maximal tap (the backward pass then
        # writes dx once, without comparing the taps with y again): 5x faster than the taps loop
        (ph, pw), (sh, sw) = geom.kernel, geom.strides
        xp = np.ascontiguousarray(xp)
        y = np.empty((x.shape[0],) + geom.out_size + (x.shape[3],), dtype=x.dtype)
        arg = np.empty(y.shape, dtype=np.uint8)
        if (ph, pw) == (2, 2):  # the common window: its taps in one channel loop (1.4-2.5x)
            _by_images(lambda a, b: _nbp.max_forward_2x2(xp[a:b], sh, sw, y[a:b], arg[a:b]), xp)
        else:
            _by_images(lambda a, b: _nbp.max_forward(xp[a:b], ph, pw, sh, sw, y[a:b], arg[a:b]), xp)
        return y, PoolCache(geom, x.shape, xp, y, arg)
    taps = list(_taps(geom))
    _, rs, cs = taps[0]
    y = xp[:, rs, cs].copy()
    for _, rs, cs in taps[1:]:
        np.maximum(y, xp[:, rs, cs], out=y)
    return y, PoolCache(geom, x.shape, xp, y)


def _by_images(fn, xp) -> None:
    """``fn(n0, n1)`` over ranges of images, on the thread limit's threads for large inputs
    (each image's windows are its own: the same bits on any number of threads)."""
    threads = 1 if xp.size < _threads.MIN_PARALLEL_ELEMENTS else _threads.get_num_threads()
    _threads.run_parts(fn, xp.shape[0], threads)


def _fast_disjoint(xp, geom) -> bool:
    """True when the numba kernels of disjoint windows take this input (255 taps at most)."""
    (ph, pw), (sh, sw) = geom.kernel, geom.strides
    return (
        _backend.numba_enabled() and xp.dtype in (np.float32, np.float64)
        and sh >= ph and sw >= pw and ph * pw < _nbp.NO_TAP
    )


def max_pool2d_backward(dy, cache: PoolCache):
    """Return ``dx``: each ``dy`` entry goes to its window's first maximal tap."""
    geom, _, xp, y, arg = cache
    (ph, pw), (sh, sw) = geom.kernel, geom.strides
    if arg is not None and _backend.numba_enabled() and dy.dtype == xp.dtype:
        # every element inside a window is written: no zeroing where the windows tile xp
        dxp = np.empty(xp.shape, dtype=dy.dtype) if _covers(geom, xp.shape) else np.zeros(xp.shape, dtype=dy.dtype)
        dy, zero = np.ascontiguousarray(dy), dy.dtype.type(0)
        _by_images(lambda a, b: _nbp.max_backward(dy[a:b], arg[a:b], ph, pw, sh, sw, dxp[a:b], zero), xp)
        return _unpad(dxp, geom)
    dxp = np.zeros(xp.shape, dtype=dy.dtype)
    if (
        _backend.numba_enabled()
        and dy.dtype == xp.dtype == y.dtype
        and dy.dtype in (np.float32, np.float64)
        and dy.flags.c_contiguous
        and xp.flags.c_contiguous
        and y.flags.c_contiguous
    ):
        # one pass instead of a compare, a mask update and a multiply per tap
        _nb.max_pool2d_backward(dy, xp, y, ph, pw, sh, sw, dxp)
        return _unpad(dxp, geom)
    disjoint = sh >= ph and sw >= pw
    hit = np.empty(dy.shape, dtype=bool)
    taken = np.zeros(dy.shape, dtype=bool)
    for _, rs, cs in _taps(geom):
        np.equal(xp[:, rs, cs], y, out=hit)
        np.greater(hit, taken, out=hit)  # hit and not taken: ties go to the first tap
        taken |= hit
        # a masked write, not dy * hit: a NaN or inf in dy stays at its window's
        # maximum and leaves the other taps 0 (as the numba kernel and PyTorch do)
        dst = dxp[:, rs, cs]
        if disjoint:  # each input element is in at most one window: write, don't add
            np.copyto(dst, dy, where=hit)
        else:
            np.add(dst, dy, out=dst, where=hit)
    return _unpad(dxp, geom)


# ----------------------------------------------------------------- average
def _counts(geom: ConvGeometry, dtype) -> np.ndarray:
    """Taps of each window inside the input, shape ``(Ho, Wo, 1)``."""
    per_axis = []
    for n, k, s, (before, _), o in zip(geom.in_size, geom.kernel, geom.strides, geom.pads, geom.out_size):
        start = np.arange(o) * s - before
        per_axis.append(np.minimum(start + k, n) - np.maximum(start, 0))
    return np.multiply.outer(*per_axis).astype(dtype)[:, :, None]


def avg_pool2d_forward(x, *, pool_size=(2, 2), strides=None, padding="valid"):
    """Return ``(y, cache)`` of 2-D average pooling (padding not counted)."""
    geom = pool_geometry(x.shape[1:3], pool_size, strides or pool_size, padding)
    xp = _pad(x, geom.pads, 0)
    taps = list(_taps(geom))
    _, rs, cs = taps[0]
    y = xp[:, rs, cs].copy()
    for _, rs, cs in taps[1:]:
        y += xp[:, rs, cs]
    count = _counts(geom, x.dtype)
    y /= count
    return y, PoolCache(geom, x.shape, None, count)


def avg_pool2d_backward(dy, cache: PoolCache):
    """Return ``dx``: ``dy / cnt`` added to every tap of each window."""
    geom, x_shape, _, count, _ = cache
    n, _, _, c = x_shape
    (pt, pb), (pl, pr) = geom.pads
    g = dy / count
    (ph, pw), (sh, sw) = geom.kernel, geom.strides
    shape = (n, geom.in_size[0] + pt + pb, geom.in_size[1] + pl + pr, c)
    disjoint = sh >= ph and sw >= pw
    dxp = np.empty(shape, dtype=dy.dtype) if disjoint and _covers(geom, shape) else np.zeros(shape, dtype=dy.dtype)
    for _, rs, cs in _taps(geom):
        if disjoint:
            dxp[:, rs, cs] = g
        else:
            dxp[:, rs, cs] += g
    return _unpad(dxp, geom)


def _covers(geom, padded_shape) -> bool:
    """True when disjoint windows tile the padded input exactly (no element left unwritten)."""
    return all(
        s == k and o * s == padded
        for k, s, o, padded in zip(geom.kernel, geom.strides, geom.out_size, padded_shape[1:3])
    )


# ----------------------------------------------------------------- 1-D
def _pool1d(fn, x, pool_size, strides, padding):
    if x.ndim != 3:
        raise ValueError(f"1-D pooling: x must be (N, L, C), got shape {x.shape}.")
    strides = pool_size if strides is None else strides
    y, cache = fn(x[:, None], pool_size=(1, int(pool_size)), strides=(1, int(strides)), padding=padding)
    return y[:, 0], cache


def max_pool1d_forward(x, *, pool_size=2, strides=None, padding="valid"):
    """1-D max pooling of ``x`` ``(N, L, C)``: ``(y, cache)``."""
    return _pool1d(max_pool2d_forward, x, pool_size, strides, padding)


def max_pool1d_backward(dy, cache: PoolCache):
    return max_pool2d_backward(dy[:, None], cache)[:, 0]


def avg_pool1d_forward(x, *, pool_size=2, strides=None, padding="valid"):
    """1-D average pooling of ``x`` ``(N, L, C)``: ``(y, cache)``."""
    return _pool1d(avg_pool2d_forward, x, pool_size, strides, padding)


def avg_pool1d_backward(dy, cache: PoolCache):
    return avg_pool2d_backward(dy[:, None], cache)[:, 0]


# ----------------------------------------------------------------- global
def global_avg_pool_forward(x: np.ndarray) -> np.ndarray:
    """Mean over the spatial axes (all but the first and the last): ``(N, C)``."""
    return x.reshape(x.shape[0], -1, x.shape[-1]).mean(axis=1)


def global_avg_pool_backward(dy: np.ndarray, x_shape: tuple) -> np.ndarray:
    """``dx = dy / S`` broadcast over the ``S`` spatial positions."""
    n, c = x_shape[0], x_shape[-1]
    s = int(np.prod(x_shape[1:-1]))
    dx = np.empty((n, s, c), dtype=dy.dtype)
    dx[...] = (dy / s)[:, None, :]
    return dx.reshape(x_shape)


def global_max_pool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max over the spatial axes: ``(y, index)`` with ``y`` ``(N, C)`` and the winning flat position."""
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    index = x3.argmax(axis=1)
    return np.take_along_axis(x3, index[:, None, :], axis=1)[:, 0], index


def global_max_pool_backward(dy: np.ndarray, index: np.ndarray, x_shape: tuple) -> np.ndarray:
    """``dx = dy`` at the first maximal position of each (sample, channel), 0 elsewhere."""
    n, c = x_shape[0], x_shape[-1]
    dx = np.zeros((n, int(np.prod(x_shape[1:-1])), c), dtype=dy.dtype)
    np.put_along_axis(dx, index[:, None, :], dy[:, None, :], axis=1)
    return dx.reshape(x_shape)
