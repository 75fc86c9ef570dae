"""Callback protocol (Keras's hooks), the callback list and History."""

from __future__ import annotations

from typing import Iterable

from .._registry import Registry

registry = Registry("callback")

__all__ = ["Callback", "CallbackList", "History"]


class Callback:
    """Base class: override the hooks you need.

    Hooks receive ``logs``, a dict of floats: ``on_train_batch_end`` gets the
    running means of the epoch so far (``"loss"`` and each metric),
    ``on_epoch_end`` the epoch's values and the ``"val_"`` ones,
    ``on_test_batch_end`` the running means of the evaluation so far, and
    ``on_predict_batch_end`` ``{"outputs": the batch's outputs}``. They are
    called where Keras 3 calls them: the test hooks in ``evaluate`` and in
    ``fit``'s validation, the predict hooks in ``predict``.
    ``on_batch_begin`` / ``on_batch_end`` are the train-batch hooks' older
    names (called by them, as in Keras). A callback may set
    ``self.model.stop_training = True`` to stop after the current epoch.

    ``self.model`` and ``self.params`` (``epochs``, ``steps``, ``verbose``)
    are set before training starts.
    """

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            registry.register(cls)

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = dict(params)

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...


def own_hooks(cb, *names: str) -> list[str]:
    """Those of the hooks ``names`` that ``cb`` defines itself (its class's or an instance attribute), not :class:`Callback`'s.

    :class:`Callback`'s train-batch hooks only call the older ``on_batch_*`` names, themselves
    empty: a callback without its own does nothing per batch, and ``fit`` need not call it.
    """
    return [name for name in names
            if name in getattr(cb, "__dict__", ()) or getattr(type(cb), name, None) is not getattr(Callback, name)]


class CallbackList(Callback):
    """Dispatches every hook to each callback in order."""

    def __init__(self, callbacks: Iterable[Callback] = (), model=None, **params):
        super().__init__()
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {cb!r}.")
        if model is not None:
            self.set_model(model)
        self.set_params(params)

    def set_model(self, model):
        super().set_model(model)
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for cb in self.callbacks:
            cb.set_params(params)

    def _call(self, hook: str, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_train_begin(self, logs=None):
        self._call("on_train_begin", logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._call("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._call("on_train_batch_end", batch, logs)

    def on_test_begin(self, logs=None):
        self._call("on_test_begin", logs)

    def on_test_end(self, logs=None):
        self._call("on_test_end", logs)

    def on_predict_begin(self, logs=None):
        self._call("on_predict_begin", logs)

    def on_predict_end(self, logs=None):
        self._call("on_predict_end", logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._call("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._call("on_test_batch_end", batch, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._call("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._call("on_predict_batch_end", batch, logs)


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is a list per epoch.

    ``fit`` always attaches one and returns it; ``history.epoch`` lists the
    epoch indices.
    """

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)
