"""Each rank's part of every global batch.

A global batch of ``k`` samples is split as ``numpy.array_split`` splits
it: rank ``r`` takes the contiguous rows ``span(k, r, N)``, the first
``k mod N`` ranks one more than the others. Arrays are shuffled by the
same seeded permutation on every rank (the stream ``(seed, 1, pass)`` of
:mod:`normlab.models.data`), so the ranks together see exactly the batches
one process would, and each gathers only its own rows.
"""

from __future__ import annotations

import numpy as np

from ..models.data import _SHUFFLE, _gather, _stream

__all__ = ["span", "ShardedArraySource", "SlicedSource"]


def span(k: int, rank: int, size: int) -> tuple[int, int]:
    """``(lo, hi)``: rank ``rank``'s rows of ``k`` split over ``size`` ranks (``numpy.array_split``'s rule)."""
    q, r = divmod(k, size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


class ShardedArraySource:
    """The batches of an :class:`~normlab.models.data.ArraySource`, each cut down to this rank's rows.

    ``on_batch(share)`` is called before each batch is yielded, with this
    rank's share of the global batch (its rows over the batch's).
    """

    reiterable = True

    def __init__(self, source, rank: int, size: int, on_batch):
        self.x, self.y, self.w = source.x, source.y, source.w
        self.n, self.batch_size, self.shuffle, self.entropy = source.n, source.batch_size, source.shuffle, source.entropy
        self.steps = source.steps
        self.rank, self.size = rank, size
        self.on_batch = on_batch
        width = span(min(self.batch_size, self.n), rank, size)
        self._buffer = np.empty((width[1] - width[0],) + self.x.shape[1:], self.x.dtype) if self.shuffle else None

    def passes(self, index: int):
        x, y, w, bs, n = self.x, self.y, self.w, self.batch_size, self.n
        perm = _stream(self.entropy, _SHUFFLE, index).permutation(n) if self.shuffle else None
        for step in range(self.steps):
            lo, hi = step * bs, min(n, (step + 1) * bs)
            a, b = span(hi - lo, self.rank, self.size)
            self.on_batch((b - a) / (hi - lo))
            if perm is None:
                s = slice(lo + a, lo + b)
                yield x[s], (None if y is None else y[s]), (None if w is None else w[s])
            else:
                idx = perm[lo + a : lo + b]
                xb = self._buffer[: b - a]
                yield _gather(x, y, w, idx, xb)


class SlicedSource:
    """A stream source (PyDataset, generator) whose every batch is cut down to this rank's rows.

    Every rank must read the same batches (a PyDataset, or a generator
    seeded alike on every rank). ``check(k)`` is called with each global
    batch's size before it is cut (it refuses a batch smaller than the
    number of ranks); ``on_batch(share)`` as in :class:`ShardedArraySource`;
    ``on_first()`` (if given) once, after the first batch is read (the
    model is built on it: its weights can be broadcast then).
    """

    def __init__(self, source, rank: int, size: int, on_batch, check, on_first=None):
        self.source = source
        self.steps = source.steps
        self.reiterable = source.reiterable
        self.rank, self.size = rank, size
        self.on_batch = on_batch
        self.check = check
        self.on_first = on_first

    def passes(self, index: int):
        for xb, yb, wb in self.source.passes(index):
            k = len(xb)
            self.check(k)
            if self.on_first is not None:
                first, self.on_first = self.on_first, None
                first()
            a, b = span(k, self.rank, self.size)
            self.on_batch((b - a) / k)
            yield xb[a:b], (None if yb is None else yb[a:b]), (None if wb is None else wb[a:b])
