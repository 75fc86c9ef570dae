"""``PyDataset``: batches produced by Python code, with Keras's protocol.

A subclass implements ``__getitem__(index)`` (one whole batch) and either
``__len__`` (the number of batches) or a ``num_batches`` property (``None``
for an endless dataset); ``on_epoch_begin`` / ``on_epoch_end`` are called
around each epoch (to reshuffle, for example). ``fit``, ``evaluate`` and
``predict`` read it batch by batch.

Parallelism: with ``workers > 1`` batches are read ahead by a pool of
threads, at most ``max_queue_size`` batches ahead, and handed over in index
order. normlab starts no processes: ``use_multiprocessing=True`` is accepted
(so a Keras script runs unchanged) and served by the same threads. Threads
pay off when ``__getitem__`` waits for files or runs NumPy code, which
releases the GIL; pure-Python decoding gains nothing from them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import numbers
import warnings
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from .._validation import Boolean, Interval, validate_params

__all__ = ["PyDataset", "iterate_batches", "unpack_batch", "Batch"]

_CONSTRAINTS = {
    "workers": [Interval(numbers.Integral, 0, None)],
    "use_multiprocessing": [Boolean()],
    "max_queue_size": [Interval(numbers.Integral, 0, None)],
}
_DEFAULTS = {"workers": 1, "use_multiprocessing": False, "max_queue_size": 10}


class PyDataset:
    """Base class of datasets written in Python, as ``keras.utils.PyDataset``.

    Parameters
    ----------
    workers : int, default=1
        Threads that read batches ahead while the model trains; 0 or 1 reads
        each batch when it is needed.
    use_multiprocessing : bool, default=False
        Accepted for Keras compatibility; normlab uses threads either way
        (see the module notes).
    max_queue_size : int, default=10
        At most this many batches are read ahead (at least ``workers``).

    Notes
    -----
    ``__getitem__(i)`` returns a whole batch: ``(x,)``, ``(x, y)`` or
    ``(x, y, sample_weight)``, or just ``x``. ``__len__`` returns the number
    of batches, not of samples. A subclass that forgets to call
    ``super().__init__(**kwargs)`` still works, with the defaults and a
    warning, as in Keras.

    Examples
    --------
    >>> import math, numpy as np
    >>> class Batches(PyDataset):
    ...     def __init__(self, x, y, batch_size, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.x, self.y, self.batch_size = x, y, batch_size
    ...     def __len__(self):
    ...         return math.ceil(len(self.x) / self.batch_size)
    ...     def __getitem__(self, i):
    ...         s = slice(i * self.batch_size, (i + 1) * self.batch_size)
    ...         return self.x[s], self.y[s]
    >>> ds = Batches(np.zeros((10, 3)), np.arange(10), batch_size=4)
    >>> len(ds), [len(bx) for bx, _ in ds]
    (3, [4, 4, 2])
    """

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10):
        values = {"workers": workers, "use_multiprocessing": use_multiprocessing, "max_queue_size": max_queue_size}
        validate_params(type(self).__name__, _CONSTRAINTS, values)
        self._workers = int(workers)
        self._use_multiprocessing = bool(use_multiprocessing)
        self._max_queue_size = int(max_queue_size)

    def _setting(self, name: str):
        attr = "_" + name
        if not hasattr(self, attr):
            warnings.warn(
                f"{type(self).__name__} should call super().__init__(**kwargs) in its constructor "
                "(kwargs may hold workers, use_multiprocessing and max_queue_size); using the defaults.",
                stacklevel=3,
            )
            for key, value in _DEFAULTS.items():
                if not hasattr(self, "_" + key):
                    setattr(self, "_" + key, value)
        return getattr(self, attr)

    @property
    def workers(self) -> int:
        return self._setting("workers")

    @workers.setter
    def workers(self, value: int) -> None:
        validate_params(type(self).__name__, _CONSTRAINTS, {"workers": value})
        self._workers = int(value)

    @property
    def use_multiprocessing(self) -> bool:
        return self._setting("use_multiprocessing")

    @use_multiprocessing.setter
    def use_multiprocessing(self, value: bool) -> None:
        validate_params(type(self).__name__, _CONSTRAINTS, {"use_multiprocessing": value})
        self._use_multiprocessing = bool(value)

    @property
    def max_queue_size(self) -> int:
        return self._setting("max_queue_size")

    @max_queue_size.setter
    def max_queue_size(self, value: int) -> None:
        validate_params(type(self).__name__, _CONSTRAINTS, {"max_queue_size": value})
        self._max_queue_size = int(value)

    def __getitem__(self, index: int):
        """The batch at position ``index`` (a subclass must implement it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index), returning one batch.")

    @property
    def num_batches(self) -> int | None:
        """The number of batches: ``len(self)``; a subclass may override it and return ``None`` (endless)."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError(
            f"{type(self).__name__} must implement __len__() or a num_batches property (None for an endless dataset)."
        )

    def __iter__(self) -> Iterator:
        """Batches 0, 1, ... in order (endless when the number of batches is unknown); no parallelism."""
        try:
            n = self.num_batches
        except NotImplementedError:
            n = None
        for index in itertools.count() if n is None else range(n):
            yield self[index]

    def on_epoch_begin(self) -> None:
        """Called at the start of every epoch; does nothing unless overridden."""

    def on_epoch_end(self) -> None:
        """Called at the end of every epoch; does nothing unless overridden."""


def _num_batches(dataset: PyDataset, owner: str) -> int | None:
    n = dataset.num_batches
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0):
        raise ValueError(f"{owner}: {type(dataset).__name__}'s number of batches must be an int >= 0 or None; "
                         f"got {n!r}.")
    return None if n is None else int(n)


def iterate_batches(dataset: PyDataset, order: Iterable[int] | None = None, *, owner: str = "PyDataset") -> Iterator:
    """Yield ``dataset[i]`` for ``i`` in ``order``, read ahead by the dataset's workers.

    Parameters
    ----------
    dataset : PyDataset
    order : iterable of int, optional
        Batch indices, e.g. a permutation for shuffling; by default
        ``range(num_batches)``, or 0, 1, 2, ... without end when
        ``num_batches`` is None.
    owner : str
        Named in error messages (``"Sequential.fit"``, ...).

    Notes
    -----
    Batches come out in ``order`` whatever the number of workers. An
    exception raised by ``__getitem__`` is raised where its batch would have
    been yielded (batches before it are delivered). Closing the generator
    (a ``break``, an early stop) cancels the batches not yet started and
    waits for the running ones, so no thread outlives the epoch.
    """
    if order is None:
        n = _num_batches(dataset, owner)
        order = itertools.count() if n is None else range(n)
    workers = dataset.workers
    if workers <= 1:
        for index in order:
            yield dataset[index]
        return
    ahead = max(dataset.max_queue_size, workers)
    pending: collections.deque = collections.deque()
    indices = iter(order)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="normlab-PyDataset")
    try:
        for index in itertools.islice(indices, ahead):
            pending.append(pool.submit(dataset.__getitem__, index))
        while pending:
            batch = pending.popleft().result()
            for index in itertools.islice(indices, 1):
                pending.append(pool.submit(dataset.__getitem__, index))
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Batch(NamedTuple):
    """One batch of a :class:`PyDataset`, unpacked: targets and weights may be ``None``."""

    x: Any
    y: Any = None
    sample_weight: Any = None


def unpack_batch(batch, *, owner: str = "PyDataset") -> Batch:
    """Read what ``__getitem__`` returned with Keras's rules.

    An array is ``(x,)``; a list is read as a tuple; a tuple has 1 to 3
    items, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``. Anything else
    (a dict, a 4-tuple, a str) is refused with a message that names
    ``owner`` and what came back.
    """
    if isinstance(batch, np.ndarray):
        return Batch(batch)
    if isinstance(batch, list):
        batch = tuple(batch)
    if isinstance(batch, tuple) and 1 <= len(batch) <= 3:
        return Batch(*batch)
    what = f"a tuple of {len(batch)} items" if isinstance(batch, tuple) else f"a {type(batch).__name__}"
    raise ValueError(
        f"{owner}: a PyDataset's __getitem__ must return a batch as (x,), (x, y) or (x, y, sample_weight), "
        f"or x alone; got {what}: {repr(batch)[:80]}"
    )
