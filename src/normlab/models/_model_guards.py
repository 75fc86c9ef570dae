"""A failed model call changes nothing, and on several MPI ranks it ends the job.

:func:`_distributed` wraps the calls that the ranks of a data-parallel job
make together (``fit``, ``train_on_batch``, ``evaluate``, ``test_on_batch``,
``predict``): an error on one rank ends the job rather than leave the others
waiting in a collective. :class:`GuardsMixin` gives back what a call changed
before its first training step committed (building, compiling for
training, binding the optimizer), so that a failed call leaves the model as
it was.
"""

from __future__ import annotations

import contextlib
import functools

from ._checks import _attributes, _layer_tree

__all__ = ["GuardsMixin"]


def _distributed(method):
    """A model call that, under ``compile(distribute=DataParallel())`` on several ranks, ends the job on an error.

    See :meth:`normlab.distributed.DataParallel.guard`: another rank may be
    waiting in a collective for this one. Without a strategy: the call itself.
    """

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        dist = self._dist
        if dist is None:
            return method(self, *args, **kwargs)
        with dist.guard(f"{type(self).__name__}.{method.__name__}"):
            return method(self, *args, **kwargs)

    return call


class GuardsMixin:
    """The all-or-nothing guards of :class:`~normlab.models.base.BaseModel`'s calls."""

    @contextlib.contextmanager
    def _all_or_nothing(self):
        """Give back what building, compiling for training and binding changed if the block raises.

        Wraps what a call does before its first training step (checking the
        data, building the layers, binding the optimizer, ``on_train_begin``),
        and, in ``fit``, what runs until the first step commits (the
        callbacks' ``on_epoch_begin`` and ``on_train_batch_begin``, a
        failing first step), so that a failed call leaves an unbuilt model unbuilt: a later
        ``fit(seed=...)`` reproduces a fresh model, and a wrong-width ``x``
        does not fix the input shape. None of these write an array in place,
        so restoring the attributes of the model, its layers and its
        optimizer (dicts and lists copied) restores their state.
        """
        objects = [self, *_layer_tree(self.layers)]
        opt = self.optimizer
        if opt is not None:
            objects.append(opt)
        saved = [(obj, _attributes(obj)) for obj in objects]
        mark = None if opt is None else (opt.iterations, opt.skipped_steps)
        try:
            yield
        except BaseException:
            if opt is not None and (opt.iterations, opt.skipped_steps) != mark:
                raise  # a step has committed: the model has trained, and each step is a transaction of its own
            for obj, attrs in saved:
                state = vars(obj)
                state.clear()
                state.update(attrs)
            raise

    def _setup_guard(self):
        """:meth:`_all_or_nothing` until the model is built and prepared for training, then nothing (no cost per step)."""
        if self.built and self._trainable_signature is not None:
            return contextlib.nullcontext()
        return self._all_or_nothing()

    def _building(self):
        """:meth:`_all_or_nothing` while the model is not built (an inference call may build it), else nothing."""
        return contextlib.nullcontext() if self.built else self._all_or_nothing()
