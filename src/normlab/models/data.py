"""Where ``fit``, ``evaluate`` and ``predict`` take their batches from.

A *source* yields the batches of one pass over the data, ``(x, y,
sample_weight)`` with ``y`` and the weights possibly ``None``:

- :class:`ArraySource`: NumPy arrays, batched (and shuffled) here;
- :class:`DatasetSource`: a :class:`normlab.utils.PyDataset` (Keras's
  ``__len__`` / ``__getitem__`` / ``on_epoch_begin`` / ``on_epoch_end``),
  its batch order shuffled when ``shuffle`` and its size is known;
- :class:`IterableSource`: a Python generator, iterator or other iterable
  of batches ``(x, y)``, ``(x, y, sample_weight)`` or ``(x,)``. A
  re-iterable object (a list, a class with ``__iter__``) starts a new pass
  each time; a one-shot iterator (a generator) continues where it stopped.

:class:`Epochs` turns passes into epochs as Keras 3's ``EpochIterator``
does. Without ``steps_per_epoch`` an epoch is one pass. With it, an epoch
is that many steps, taken from a pass that continues across epochs: with
arrays, ``steps_per_epoch=n`` makes an epoch (and so a validation and an
``EarlyStopping`` check) every ``n`` steps. A pass that ends inside an
epoch ends that epoch early, and the next epoch starts a new pass; a
one-shot iterator that runs out stops training, with Keras's warning.

Seed streams: pass ``p`` of an :class:`ArraySource` is shuffled by the
stream ``(seed, 1, p)`` (see :mod:`normlab.models.training`); without
``steps_per_epoch`` pass ``p`` is epoch ``p``, so ``fit(...,
initial_epoch=e)`` resumes exactly.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterator

import numpy as np

__all__ = ["ArraySource", "DatasetSource", "IterableSource", "Epochs", "is_stream", "make_source"]

_SHUFFLE = 1


def _stream(entropy: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))


def _gather(x, y, w, idx, xb):
    """The rows ``idx`` of ``x`` (into the buffer ``xb``), ``y`` and ``w`` (``None`` stays ``None``).

    ``idx`` are a permutation's indices, always in range: ``mode="clip"`` because
    under the default ``mode="raise"`` NumPy gathers into a temporary and copies
    it into ``xb`` (one more copy of every batch); the same rows either way.
    """
    x.take(idx, axis=0, out=xb, mode="clip")
    return xb, (None if y is None else y.take(idx, axis=0)), (None if w is None else w.take(idx, axis=0))


def is_stream(x) -> bool:
    """True when ``x`` is a PyDataset, a generator or another iterable of batches (not array-like data)."""
    from ..utils.py_dataset import PyDataset

    if isinstance(x, PyDataset):
        return True
    if x is None or isinstance(x, (np.ndarray, list, tuple, str, bytes, dict)) or hasattr(x, "__array__"):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


class ArraySource:
    """Batches of arrays ``x``, ``y`` (and weights ``w``), checked beforehand.

    Shuffled batches are gathered into one reused buffer rather than a
    shuffled copy of the whole set per pass: no second copy of the data,
    and the batch is still in cache when the first layer reads it. A batch
    is valid until the next one is drawn.
    """

    reiterable = True

    def __init__(self, x: np.ndarray, y, w, *, batch_size: int, shuffle: bool, entropy: int):
        self.x, self.y, self.w = x, y, w
        self.n = len(x)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.entropy = entropy
        self.steps = -(-self.n // batch_size)
        self._buffer = np.empty((min(batch_size, self.n),) + x.shape[1:], x.dtype) if shuffle else None

    def passes(self, index: int) -> Iterator[tuple]:
        """The batches of pass ``index``."""
        x, y, w, bs, n = self.x, self.y, self.w, self.batch_size, self.n
        perm = _stream(self.entropy, _SHUFFLE, index).permutation(n) if self.shuffle else None
        for step in range(self.steps):
            lo, hi = step * bs, min(n, (step + 1) * bs)
            if perm is None:
                yield x[lo:hi], (None if y is None else y[lo:hi]), (None if w is None else w[lo:hi])
            else:
                idx = perm[lo:hi]
                xb = self._buffer[: hi - lo]
                yield _gather(x, y, w, idx, xb)


class _CheckedBatches:
    """Each raw batch of a stream unpacked (Keras's rules) and checked by ``check(x, y, w)``."""

    def __init__(self, check: Callable, owner: str):
        self.check = check
        self.owner = owner

    def _checked(self, raw) -> tuple:
        from ..utils.py_dataset import unpack_batch

        batch = unpack_batch(raw, owner=self.owner)
        return self.check(batch.x, batch.y, batch.sample_weight)


class DatasetSource(_CheckedBatches):
    """The batches of a :class:`~normlab.utils.PyDataset`, in shuffled order when asked and possible."""

    reiterable = True

    def __init__(self, dataset, check: Callable, *, owner: str, shuffle: bool = False, entropy: int = 0):
        from ..utils.py_dataset import _num_batches

        super().__init__(check, owner)
        self.dataset = dataset
        self.steps = _num_batches(dataset, owner)
        self.shuffle = shuffle
        self.entropy = entropy

    def passes(self, index: int) -> Iterator[tuple]:
        from ..utils.py_dataset import iterate_batches

        ds = self.dataset
        ds.on_epoch_begin()
        order = None
        if self.shuffle and self.steps is not None:
            order = _stream(self.entropy, _SHUFFLE, index).permutation(self.steps).tolist()
        for raw in iterate_batches(ds, order, owner=self.owner):
            yield self._checked(raw)
        ds.on_epoch_end()


class IterableSource(_CheckedBatches):
    """The batches of a generator, an iterator or another iterable."""

    steps = None

    def __init__(self, iterable, check: Callable, *, owner: str):
        super().__init__(check, owner)
        self.iterable = iterable
        try:
            self.reiterable = iter(iterable) is not iterable
        except TypeError:
            raise TypeError(f"{owner}: 'x' must be an array, a PyDataset or an iterable of batches; got "
                            f"{type(iterable).__name__}.") from None
        self._one_shot = None if self.reiterable else iterable

    def passes(self, index: int) -> Iterator[tuple]:
        for raw in (iter(self.iterable) if self.reiterable else self._one_shot):
            yield self._checked(raw)


def make_source(x, y, sample_weight, check: Callable, *, owner: str, arg: str = "x", **kw):
    """The stream source of ``x`` (a PyDataset or an iterable of batches); ``y``/``sample_weight`` must be None."""
    from ..utils.py_dataset import PyDataset

    if y is not None or sample_weight is not None:
        given = "y" if y is not None else "sample_weight"
        raise ValueError(f"{owner}: '{given}' must not be given when '{arg}' is a PyDataset or a generator "
                         f"(its batches carry the targets and weights).")
    if isinstance(x, PyDataset):
        return DatasetSource(x, check, owner=owner, shuffle=kw.get("shuffle", False), entropy=kw.get("entropy", 0))
    return IterableSource(x, check, owner=owner)


class Epochs:
    """Epochs of ``steps_per_epoch`` steps (or of one pass each) over a source; see the module docstring.

    ``epoch(e)`` yields ``(step, x, y, sample_weight)``. ``stopped`` is set
    when a one-shot iterator ran out: training should stop.
    """

    def __init__(self, source, steps_per_epoch: int | None = None, owner: str = "fit"):
        self.source = source
        self.steps_per_epoch = steps_per_epoch
        self.owner = owner
        self.stopped = False
        self._batches: Iterator | None = None
        self._next_pass = 0
        self._exhausted = False  # a one-shot iterator has ended

    @property
    def steps(self) -> int | None:
        """Steps per epoch, when known."""
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return self.source.steps

    def _new_pass(self, epoch: int | None) -> Iterator:
        index = epoch if (epoch is not None and self.steps_per_epoch is None) else self._next_pass
        self._next_pass = index + 1
        return self.source.passes(index)

    def _ran_out(self) -> None:
        self.stopped = True
        warnings.warn(
            f"{self.owner}: your input ran out of data; interrupting training. Make sure that your generator "
            f"can give at least steps_per_epoch * epochs batches (or pass a PyDataset or a list, which "
            f"start again each epoch).",
            stacklevel=4,
        )

    def epoch(self, epoch: int) -> Iterator[tuple]:
        if self.steps_per_epoch is None:
            if self._exhausted:
                self._ran_out()
                return
            seen = 0
            for seen, batch in enumerate(self._new_pass(epoch), start=1):
                yield (seen - 1, *batch)
            if not self.source.reiterable:
                self._exhausted = True
            if seen == 0:
                self._ran_out()
            return
        step = 0
        fresh = False  # the current pass has not yielded a batch yet
        while step < self.steps_per_epoch:
            if self._batches is None:
                if self._exhausted:
                    self._ran_out()
                    return
                self._batches = self._new_pass(None)
                fresh = True
            batch = next(self._batches, None)
            if batch is None:
                self._batches = None
                if not self.source.reiterable:
                    self._exhausted = True
                    self._ran_out()
                    return
                if step == 0 and not fresh:
                    continue  # the last epoch ended with the pass: this one starts the next (no empty epoch)
                return  # the pass ended inside the epoch: the epoch ends here, the next starts a new pass
            fresh = False
            yield (step, *batch)
            step += 1

    def close(self) -> None:
        if self._batches is not None and hasattr(self._batches, "close"):
            self._batches.close()
        self._batches = None

