"""The optimizer base class: hyperparameters, learning rate, state and the step.

One optimizer object updates every parameter of a model, so the global
gradient norm is known (and can be clipped). A model hands its trainable
arrays over once, ``params, grads = optimizer.bind(params, grads, names)``
(the optimizer lays them out in its own buffers and returns views), then
calls ``optimizer.step()`` per batch; ``apply(grads, params)`` does the same
for standalone arrays, copying them in and out. A step runs in this order:

1. (the model has already added the regularizers' gradients to ``grads``)
2. the global L2 norm of the gradients is computed (``last_global_norm``)
   and non-finite gradients are handled (``on_nonfinite``);
3. clipping: ``clipvalue``, ``clipnorm`` (each array on its own) or
   ``global_clipnorm`` (at most one of them);
4. decoupled weight decay, ``w <- w - lr * weight_decay * w``, with ``w``
   the parameters before the step;
5. the update rule (SGD, Adam, ...) on the clipped gradients.

In the chain the decay link comes last (:func:`~.transforms.add_decayed_weights`)
so that momentum and adaptive scalings never see it; since it reads the
parameters before the step and the rules do not depend on them, the sum is
exactly Keras's "decay, then update rule".

The step is a transaction (:meth:`Optimizer.step`): parameters, slots and
counters are written in one indivisible unit.

Learning rates: a float, a :class:`~.schedules.LearningRateSchedule`, or a
callable ``f(step) -> float``; a schedule is evaluated at ``iterations``,
the number of steps taken so far (0 for the first step), as in Keras.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from .._registry import Registry
from .._validation import (
    Boolean,
    Callable,
    Instance,
    Interval,
    NoneOk,
    Options,
    invalid_parameter,
    validate_params,
)
from ..errors import NonFiniteError
from ..kernels import optim as K
from . import _step
from . import schedules as _schedules
from . import transforms as T
from ._checks import _byte_bounds, _check_disjoint, _check_state, _label, _takes_no_step, _template_shapes
from .layout import Binding, fused_plan, state_keys

registry = Registry("optimizer")

__all__ = ["Optimizer", "registry"]

_LR = [
    Interval(numbers.Real, 0, None),
    Instance(_schedules.LearningRateSchedule, label="a LearningRateSchedule"),
    Callable(),
]
_OPT_POS = [NoneOk(), Interval(numbers.Real, 0, None, closed="neither")]
_UNIT = [Interval(numbers.Real, 0, 1)]
_EPS = [Interval(numbers.Real, 0, None)]
_FORM = [Options(T.EPSILON_FORMS)]
_CLIP_ARGS = ("clipvalue", "clipnorm", "global_clipnorm")
_COUNTERS = frozenset(("iterations", "last_global_norm", "skipped_steps"))
_MAX_COUNT = 2**53  # counters are float64 entries of the arena: exact up to here
_KERAS_ARGS = ("use_ema", "ema_momentum", "ema_overwrite_frequency", "gradient_accumulation_steps")
_BASE_ARGS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", *_KERAS_ARGS, "on_nonfinite", "name")
_KERAS_DEFAULTS = {"use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                   "gradient_accumulation_steps": None}


def _args(local_vars: dict) -> dict:
    out = dict(local_vars)
    out.pop("self", None)
    out.pop("__class__", None)
    return out


class Optimizer:
    """Base class: hyperparameters, learning rate, state, ``apply``.

    Parameters (shared by every optimizer, keyword-only)
    ----------------------------------------------------
    weight_decay : float >= 0, optional
        Decoupled weight decay: ``w <- w - lr * weight_decay * w`` at every
        step, before the update rule (Keras 3; PyTorch's ``AdamW``). It is
        not an L2 penalty: for that, give the layers a ``kernel_regularizer``.
    clipvalue, clipnorm, global_clipnorm : float > 0, optional
        Clip every gradient entry to ``[-clipvalue, clipvalue]``; rescale
        each gradient array whose norm exceeds ``clipnorm`` to that norm; or
        rescale all of them together when their global norm exceeds
        ``global_clipnorm``. At most one may be set.
    use_ema : bool, default False
        Keep an exponential moving average of the parameters (Keras 3):
        after each step ``a <- m a + (1 - m) w`` with ``m = ema_momentum``
        (``a <- w`` at the first update), state slot ``"average"``.
        :meth:`finalize_variable_values` writes the averages into the
        parameters (Keras does at the end of ``fit``).
    ema_momentum : float in [0, 1], default 0.99
    ema_overwrite_frequency : int >= 1, optional
        With ``use_ema``, overwrite the parameters by their averages after
        every ``ema_overwrite_frequency``-th update.
    gradient_accumulation_steps : int >= 2, optional
        Update once every ``n`` calls to ``step``, with the mean of the
        ``n`` gradients (Keras 3); the calls in between only add the
        gradients to the slot ``"gradient_accumulator"``. ``iterations`` counts
        updates (Keras's ``optimizer.iterations``); a schedule is
        evaluated at the number of calls, as Keras does. Clipping, weight
        decay and the rule see the mean.
    on_nonfinite : {"raise", "skip", "proceed"}, default "raise"
        What a step does with NaN or inf gradients: raise
        ``FloatingPointError`` naming the first offending parameter (nothing
        is changed), skip the step (parameters, state and ``iterations``
        unchanged; ``skipped_steps`` counts it), or apply it anyway (Keras).
    name : str, optional

    Attributes
    ----------
    iterations : int
        Steps taken.
    learning_rate : float, schedule or callable
        Settable; a float set here is used from the next step on.
    current_learning_rate : float
        The rate of the next step (the schedule evaluated at ``iterations``).
    last_global_norm : float
        The global L2 norm of the gradients of the last ``apply``, before
        clipping (NaN before the first step).
    skipped_steps : int
        Steps skipped for non-finite gradients (``on_nonfinite="skip"``).
    """

    _param_constraints: dict = {
        "learning_rate": _LR,
        "weight_decay": [NoneOk(), Interval(numbers.Real, 0, None)],
        "clipnorm": _OPT_POS,
        "clipvalue": _OPT_POS,
        "global_clipnorm": _OPT_POS,
        "use_ema": [Boolean()],
        "ema_momentum": [Interval(numbers.Real, 0, 1)],
        "ema_overwrite_frequency": [NoneOk(), Interval(numbers.Integral, 1, None)],
        "gradient_accumulation_steps": [NoneOk(), Interval(numbers.Integral, 2, None)],
        "on_nonfinite": [Options(("raise", "skip", "proceed"))],
        "name": [NoneOk(), str],
    }
    #: Keras's own sentence for a rejected argument, after normlab's (see normlab._validation); a subclass
    #: extends it as it extends ``_param_constraints``
    _keras_messages: dict = {
        "gradient_accumulation_steps": lambda v: (
            "`gradient_accumulation_steps` must be an integer >= 2. "
            f"Received: gradient_accumulation_steps={v}" if v and not v >= 2 else None),
    }
    #: constructor arguments specific to the subclass, in signature order
    _hyper: tuple = ()

    # ------------------------------------------------------------ building
    #: the slots shaped like their parameter (None: all); set_state infers the parameters' shapes from them
    _param_shaped_slots: tuple | None = None

    def __init__(self, **kwargs):
        cls = type(self).__name__
        kwargs = {**_KERAS_DEFAULTS, **kwargs}
        validate_params(type(self), self._param_constraints, kwargs)
        given = [a for a in _CLIP_ARGS if kwargs.get(a) is not None]
        if len(given) > 1:
            raise invalid_parameter(
                type(self), given[1],
                f"None when {given[0]!r} is set (clipvalue, clipnorm and global_clipnorm are mutually exclusive)",
                kwargs[given[1]],
                keras="Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                      + ", ".join(f"{a}={kwargs.get(a)}" for a in ("clipnorm", "clipvalue", "global_clipnorm")),
            )
        object.__setattr__(self, "_ready", False)
        self.learning_rate = kwargs.pop("learning_rate")
        for key, value in kwargs.items():
            if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
                value = float(value)
            setattr(self, key, value)
        for key in ("ema_overwrite_frequency", "gradient_accumulation_steps"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, int(getattr(self, key)))
        self._wd_exclude = None  # (arrays, compiled pattern) from exclude_from_weight_decay
        self._decay_mask: list = []  # per bound parameter: whether it decays (with exclusions)
        if self.name is None:
            self.name = cls.lower()
        self._transform = T.chain(*self._links())
        self._binding: Binding | None = None
        self._pending = None  # (slots, shapes, dtypes) given by set_state before the first binding
        self._meta = np.array([0.0, 0.0, math.nan])  # replaced by the binding's, in its arena
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, key, value):
        # the counters change every step: let them through first
        if key not in _COUNTERS and self.__dict__.get("_ready") and (
                key in self._hyper or key in _BASE_ARGS) and key != "name":
            raise AttributeError(
                f"{type(self).__name__}: {key!r} is fixed at construction (only 'learning_rate' can be "
                f"changed); create a new optimizer instead."
            )
        object.__setattr__(self, key, value)

    def _rule(self) -> tuple[list, bool]:  # pragma: no cover - interface
        """The update rule's links, and whether they apply the weight decay themselves."""
        raise NotImplementedError

    def _links(self) -> list:
        links = []
        if self.clipvalue is not None:
            links.append(T.clip_by_value(self.clipvalue))
        elif self.clipnorm is not None:
            links.append(T.clip_by_norm(self.clipnorm))
        elif self.global_clipnorm is not None:
            links.append(T.clip_by_global_norm(self.global_clipnorm))
        rule, decays = self._rule()
        links.extend(rule)
        if self.weight_decay and not decays:
            if self._wd_exclude is None:
                links.append(T.add_decayed_weights(self.weight_decay))
            else:
                links.append(T.add_decayed_weights_masked(self.weight_decay, self._decay_mask))
        if self.use_ema or self.gradient_accumulation_steps:
            # last: its state is b.state[-1] for the chain step (normlab.optim._step.chain)
            links.append(T.keras_step_state(self.use_ema, bool(self.gradient_accumulation_steps)))
        return links

    # -------------------------------------------------------- learning rate
    @property
    def learning_rate(self):
        """The learning rate as given: a float, a schedule or a callable of the step."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        validate_params(type(self), {"learning_rate": _LR}, {"learning_rate": value})
        if isinstance(value, numbers.Real):
            value = float(value)
        object.__setattr__(self, "_learning_rate", value)

    @property
    def current_learning_rate(self) -> float:
        """The learning rate of the next step (schedules evaluated at ``iterations``)."""
        lr = self._learning_rate
        if isinstance(lr, float):
            return lr
        raw = lr() if _takes_no_step(lr) else lr(self._schedule_step())
        numeric = isinstance(raw, numbers.Real) or (isinstance(raw, np.ndarray) and raw.ndim == 0 and raw.dtype.kind in "iuf")
        if not numeric or isinstance(raw, (bool, np.bool_)):
            raise TypeError(
                f"{type(self).__name__}: the learning-rate schedule gave {raw!r} at step {self.iterations}; it must "
                f"be a finite float >= 0."
            )
        value = float(raw)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"{type(self).__name__}: the learning-rate schedule gave {value!r} at step "
                f"{self.iterations}; it must be a finite float >= 0."
            )
        return value

    # ---------------------------------------------------------------- counters
    # float64 entries of one array (exact up to 2**53), so that a step writes
    # them in the same call as the parameters; see normlab.optim.layout
    @property
    def iterations(self) -> int:
        return int(self._meta[0])

    @iterations.setter
    def iterations(self, value):
        self._meta[0] = int(value)

    @property
    def skipped_steps(self) -> int:
        return int(self._meta[1])

    @skipped_steps.setter
    def skipped_steps(self, value):
        self._meta[1] = int(value)

    @property
    def last_global_norm(self) -> float:
        return float(self._meta[2])

    @last_global_norm.setter
    def last_global_norm(self, value):
        self._meta[2] = float(value)

    # ---------------------------------------------------------------- binding
    @property
    def built(self) -> bool:
        return self._binding is not None

    @property
    def flat_buffers(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(gradients, parameters)``: the flat buffers of a binding whose chain runs on one flat buffer, else None."""
        b = self._binding
        if b is None or not b.flat or len(b.groups) != 1:
            return None
        return b.groups[0].g, b.chain_params[0]

    def bind(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray] | None = None,
             names: Sequence[str] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Take over ``params`` (and their gradients): the optimizer's memory layout and state.

        The parameters of each dtype are copied into one flat buffer, with
        the optimizer's slots and counters beside them in one arena
        (:mod:`normlab.optim.layout`); a flat gradient buffer per dtype
        likewise. Returns ``(params, grads)``: per-variable views into those
        buffers (same shapes and dtypes as given) that the caller must use
        from now on, in place of its own arrays. :meth:`step` then updates
        the views from the gradient views.

        Binding again (a recompile, a new trainable set) rebinds: the slots
        carry over when the parameters have the shapes and dtypes of the
        previous binding, else they start afresh; the counters carry over.
        State given to :meth:`set_state` before the first binding is
        checked against ``params`` here (``ValueError``, nothing changed).

        Parameters
        ----------
        params : list of float ndarray
            The trainable arrays (any float dtype, writeable).
        grads : list of ndarray, optional
            Their gradients (copied in; zeros when omitted).
        names : list of str, optional
            Labels for errors (``"dense/kernel"``).
        """
        params = list(params)
        cls = type(self).__name__
        for i, p in enumerate(params):
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(
                    f"{cls}: parameter {_label(names, i)} must be a float32 or float64 NumPy array, got "
                    f"{type(p).__name__}{'' if not isinstance(p, np.ndarray) else ' of dtype ' + str(p.dtype)}."
                )
            if not p.flags.writeable:
                raise ValueError(
                    f"{cls}: parameter {_label(names, i)} is read-only; the optimizer updates parameters in place."
                )
        _check_disjoint(params, names, cls)
        if grads is not None:
            grads = [np.asarray(g) for g in grads]
            if len(grads) != len(params):
                raise ValueError(f"{cls}.bind: got {len(grads)} gradients for {len(params)} parameters.")
            for i, (g, p) in enumerate(zip(grads, params)):
                if g.shape != p.shape:
                    raise ValueError(f"{cls}.bind: the gradient of parameter {_label(names, i)} has shape "
                                     f"{g.shape}, expected {p.shape}.")
        if self._wd_exclude is not None:
            self._decay_mask[:] = [not self._excluded(p, names[i] if names is not None else None)
                                   for i, p in enumerate(params)]
        binding = Binding(self._transform, params, grads, list(names) if names is not None else None, self._meta)
        old, pending = self._binding, self._pending
        if pending is not None:
            slots, pshapes, pdtypes = pending
            if pshapes and (pshapes != binding.shapes or pdtypes != binding.dtypes):
                raise ValueError(
                    f"{cls}: the state given to set_state() is for {len(pshapes)} parameters of shapes "
                    f"{pshapes} ({', '.join(str(d) for d in pdtypes)}), but the step has {len(binding.shapes)} "
                    f"of shapes {binding.shapes} ({', '.join(str(d) for d in binding.dtypes)})."
                )
            binding.write_state(slots, None, missing_ok=not pshapes)
        elif old is not None and old.shapes == binding.shapes and old.dtypes == binding.dtypes:
            binding.write_state(old.state_arrays(), None, missing_ok=True)
        self._binding, self._pending = binding, None
        self._meta = binding.meta
        return list(binding.params), list(binding.grads)

    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """Exclude parameters from the decoupled weight decay (Keras 3's method).

        Call it before the optimizer is built (the first ``fit``, ``bind``
        or ``apply``). ``var_list``: parameter arrays, matched by identity
        (or as the same memory, shape and dtype); ``var_names``: strings,
        joined into one regular expression ``"a|b"`` searched in each
        parameter's name (``"dense/bias"``; with ``apply`` and no names,
        only ``var_list`` matches). Each call replaces the previous one.
        Excluded parameters still take the update rule, without decay.
        """
        cls = type(self).__name__
        if self._binding is not None:
            raise ValueError(
                f"{cls}.exclude_from_weight_decay: can only be configured before the optimizer is built "
                f"(before the first fit, bind or apply)."
            )
        arrays = list(var_list) if var_list else []
        for v in arrays:
            if not isinstance(v, np.ndarray):
                raise TypeError(f"{cls}.exclude_from_weight_decay: 'var_list' must hold NumPy arrays, got "
                                f"{type(v).__name__}.")
        if isinstance(var_names, str):
            raise TypeError(f"{cls}.exclude_from_weight_decay: 'var_names' must be a list of strings, got "
                            f"the string {var_names!r}.")
        words = list(var_names) if var_names else []
        if not all(isinstance(w, str) for w in words):
            raise TypeError(f"{cls}.exclude_from_weight_decay: 'var_names' must be a list of strings, got "
                            f"{words!r}.")
        if self.weight_decay and self._rule()[1]:
            raise ValueError(
                f"{cls}.exclude_from_weight_decay: this optimizer applies its weight decay inside its update "
                f"rule (SGD(nesterov='exact')), which cannot leave parameters out."
            )
        # sorted: Keras joins a set, whose order does not change which names match
        pattern = re.compile("|".join(sorted(set(words)))) if words else None
        self._wd_exclude = (arrays, pattern)
        self._transform = T.chain(*self._links())

    def _excluded(self, p: np.ndarray, name: str | None) -> bool:
        arrays, pattern = self._wd_exclude
        for v in arrays:
            if v is p or (v.shape == p.shape and v.dtype == p.dtype and v.size
                          and _byte_bounds(v) == _byte_bounds(p)):
                return True
        return pattern is not None and name is not None and pattern.search(name) is not None

    def _schedule_step(self) -> int:
        """Where a schedule is evaluated: ``iterations``, or with gradient accumulation every call (Keras's ``_iterations``)."""
        n = self.gradient_accumulation_steps
        if not n:
            return self.iterations
        return self.iterations * n + self.accumulation_step

    @property
    def accumulation_step(self) -> int:
        """Gradients accumulated since the last update (``gradient_accumulation_steps``; else 0)."""
        b = self._binding
        if not self.gradient_accumulation_steps:
            return 0
        if b is not None:
            return int(b.scalars["accumulation_step"])
        if self._pending is not None:
            return int(self._pending[0].get("accumulation_step", 0))
        return 0

    @property
    def variables(self) -> list[np.ndarray]:
        """Keras's ``optimizer.variables``: the iteration count, the learning rate (unless a schedule), the slots (copies)."""
        state = self.get_state()
        lr = [np.array(self._learning_rate)] if isinstance(self._learning_rate, float) else []  # a schedule: none
        return [np.array(self.iterations), *lr, *(v for k, v in state.items() if k not in ("iterations", "skipped_steps"))]

    def _clip_gradients(self, grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The gradients after this optimizer's clipping (Keras's helper; new arrays, nothing else changes).

        ``clipvalue``: each entry to ``[-c, c]``; ``clipnorm``: each array
        times ``c / max(||g||, c)``; ``global_clipnorm``: all of them times
        ``c / max(||(g_1, ..., g_n)||, c)``.
        """
        grads = [np.asarray(g) for g in grads]
        if self.clipvalue is not None:
            return [np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        if self.clipnorm is not None:
            c = self.clipnorm
            return [g * (c / max(float(np.linalg.norm(g)), c)) for g in grads]
        if self.global_clipnorm is not None:
            c = self.global_clipnorm
            norm = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)))
            return [g * (c / max(norm, c)) for g in grads]
        return [g.copy() for g in grads]

    def build(self, params: Sequence[np.ndarray]) -> None:
        """Bind to ``params`` for :meth:`apply` (done by the first ``apply``); the arrays are copied."""
        self.bind(params)

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume bit for bit, as a flat ``{key: array}`` (copies).

        Keys: ``"iterations"`` and ``"skipped_steps"`` (0-d int64), and the
        slots, ``"<slot>/<i>"`` for parameter ``i`` (``"momentum/0"``,
        ``"velocity/3"``) or ``"<slot>"`` for a scalar (Nadam's
        ``"u_product"``). The learning rate itself is in ``get_config()``;
        a schedule's position is ``iterations``.
        """
        if self._binding is not None:
            arrays = self._binding.state_arrays()
        elif self._pending is not None:
            arrays = self._pending[0]
        else:
            arrays = state_keys(self._transform.init([]))
        out = {
            "iterations": np.array(self.iterations, dtype=np.int64),
            "skipped_steps": np.array(self.skipped_steps, dtype=np.int64),
        }
        for key, arr in arrays.items():
            out[key] = np.array(arr, copy=True)
        return out

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`get_state` returned (e.g. read back from an ``.npz``).

        Keys, shapes and dtypes are checked before anything changes
        (``"skipped_steps"`` may be absent: 0). Before the first binding the
        slots are kept and checked against the parameters of the first
        ``bind`` / ``apply``, which raises, changing nothing, if they do not
        match.
        """
        cls = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"{cls}.set_state: expected a mapping of str to arrays, got {type(state).__name__}.")
        arrays = {str(k): np.asarray(v) for k, v in state.items()}
        counters = {}
        for key in ("iterations", "skipped_steps"):
            if key not in arrays:
                if key == "skipped_steps":
                    counters[key] = 0
                    continue
                raise ValueError(f"{cls}.set_state: the state has no 'iterations' entry.")
            a = arrays.pop(key)
            # the counters live in float64 entries beside the parameters (exact up to 2**53)
            if a.shape != () or a.dtype.kind not in "iu" or not 0 <= int(a) <= _MAX_COUNT:
                raise ValueError(
                    f"{cls}.set_state: {key!r} must be a 0-d integer array in [0, 2**53], got {a!r}."
                )
            counters[key] = int(a)
        if self._binding is not None:
            expected = self._binding.state_arrays()
            if not any("/" in k for k in arrays):
                # saved before the first step (no per-parameter slots): fresh slots, saved scalars
                expected = {k: a for k, a in expected.items() if "/" not in k}
        else:
            pshapes, pdtypes = _template_shapes(arrays, cls, self._param_shaped_slots)
            template = [np.zeros(s, dtype=d) for s, d in zip(pshapes, pdtypes)]
            expected = state_keys(self._transform.init(template))
        _check_state(arrays, expected, cls)
        if self._binding is not None:
            self._binding.write_state(arrays, counters, missing_ok=True)
        else:
            self._pending = ({key: np.array(arrays[key], dtype=ref.dtype) for key, ref in expected.items()},
                             pshapes, pdtypes)
            self.iterations = counters["iterations"]
            self.skipped_steps = counters["skipped_steps"]

    # ----------------------------------------------------------------- step
    def apply(self, grads: Sequence[np.ndarray], params: Sequence[np.ndarray], names: Sequence[str] | None = None):
        """One step: update every ``params[i]`` in place from ``grads[i]``.

        For standalone use: the parameters and gradients are copied into
        the optimizer's buffers (bound on the first call), :meth:`step`
        runs, and the parameters are copied back. ``grads`` are not
        modified. If this raises, no parameter and no state has changed.
        ``names`` (optional) label parameters in errors.
        """
        cls = type(self).__name__
        grads = list(grads)
        params = params if isinstance(params, list) else list(params)
        n = len(params)
        if len(grads) != n:
            raise ValueError(f"{cls}.apply: got {len(grads)} gradients for {n} parameters.")
        if names is not None and len(names) != n:
            raise ValueError(f"{cls}.apply: got {len(names)} names for {n} parameters.")
        if n == 0:
            return
        b = self._binding
        if b is None:
            self.bind(params, names=names)  # the names also select exclude_from_weight_decay's parameters
            b = self._binding
        shapes, dtypes = b.shapes, b.dtypes
        if n != len(shapes):
            raise ValueError(
                f"{cls}.apply: the optimizer was built for {len(shapes)} parameters, got {n}; "
                f"use one optimizer per set of parameters."
            )
        for i in range(n):
            g, p = grads[i], params[i]
            if type(g) is not np.ndarray:
                g = grads[i] = np.asarray(g)
            if g.dtype.kind not in "biuf":
                raise TypeError(
                    f"{cls}.apply: the gradient of parameter {_label(names, i)} must hold real numbers, "
                    f"got dtype {g.dtype}."
                )
            if p.shape != shapes[i] or g.shape != shapes[i] or p.dtype != dtypes[i]:
                raise ValueError(
                    f"{cls}.apply: parameter {_label(names, i)} must be a {dtypes[i]} array of shape "
                    f"{shapes[i]} with a gradient of the same shape (as when the optimizer was built), "
                    f"got a {p.dtype} parameter of shape {p.shape} and a gradient of shape {g.shape}."
                )
        own = all(p is q for p, q in zip(params, b.params))
        for i in range(n):
            if grads[i] is not b.grads[i]:
                np.copyto(b.grads[i], grads[i], casting="same_kind")
            if not own:
                np.copyto(b.params[i], params[i])
        self.step(names)
        if not own:
            for p, q in zip(params, b.params):
                np.copyto(p, q)

    def step(self, names: Sequence[str] | None = None) -> None:
        """One update of the bound parameters from the bound gradients (see :meth:`bind`).

        A transaction: parameters, slots, ``iterations``, ``skipped_steps``
        and ``last_global_norm`` change in one indivisible write (one kernel
        call, or one copy of a shadow; see :mod:`normlab.optim.layout`), so
        whatever raises inside,
        ``KeyboardInterrupt`` included, either nothing changed or the whole
        step did; ``iterations + skipped_steps`` advances exactly when it
        committed. One exception: a step refused for non-finite gradients
        (``on_nonfinite="raise"``) records their norm in
        ``last_global_norm`` before raising ``FloatingPointError``.
        """
        b = self._binding
        lr = self.current_learning_rate
        if b.fused is not None:
            _step.fused(self, b, int(b.meta[0]), lr, names)
        else:
            _step.chain(self, b, int(b.meta[0]), lr, names)

    def _refuse(self, norm: float, names) -> bool:
        """Handle a non-finite gradient norm: True when the step is skipped (committed as such), raises for "raise"."""
        if self.on_nonfinite == "proceed":
            return False
        meta = self._binding.meta
        if self.on_nonfinite == "skip":
            meta[...] = (meta[0], meta[1] + 1, norm)  # one write: the skip is the step's commit
            return True
        meta[2] = norm
        b = self._binding
        bad = next(i for i, g in enumerate(b.grads) if not np.isfinite(g).all())
        raise NonFiniteError(
            f"{type(self).__name__}: the gradient of parameter {_label(names or b.names, bad)} holds NaN or inf "
            f"values; no parameter was updated. Pass on_nonfinite='skip' to skip such steps or "
            f"'proceed' to apply them."
        )

    def _fusable(self, grads, params) -> bool:
        """True when a step on these arrays (bound to this optimizer) would update them in one kernel call."""
        dtypes = {p.dtype for p in params} | {g.dtype for g in grads}
        return (K.fused_available(next(iter(dtypes))) and len(dtypes) == 1
                and all(a.flags.c_contiguous for a in list(grads) + list(params))
                and fused_plan(self._transform.spec) is not None)

    def apply_gradients(self, grads_and_vars: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
        """Keras's form: ``optimizer.apply_gradients(zip(grads, params))``; returns ``iterations``."""
        pairs = list(grads_and_vars)
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            raise TypeError(
                f"{type(self).__name__}.apply_gradients: 'grads_and_vars' must hold (gradient, parameter) pairs, "
                f"e.g. zip(grads, params)."
            )
        grads = [g for g, _ in pairs]
        params = [p for _, p in pairs]
        # variables that carry a name (as Keras's do: an ndarray subclass with .name) pass it on, for
        # exclude_from_weight_decay(var_names=...)
        names = [getattr(p, "name", None) for p in params]
        named = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        self.apply(grads, params, names=names if named else None)
        return self.iterations

    def finalize_variable_values(self, params: Sequence[np.ndarray]) -> None:
        """Give the parameters their final values at the end of training (Keras's hook).

        With ``use_ema``, the parameters are overwritten by their moving
        averages (``params``: the bound parameters, in their order; Keras
        calls this at the end of ``fit``). ``SGD(nesterov="exact")``, which
        keeps the parameters at the interim point, writes the iterate
        ``theta`` into them and zeroes the velocity, so the two agree again
        and training can go on (with the momentum restarted). Else a no-op.
        """
        b = self._binding
        if not self.use_ema or b is None:
            return
        params = list(params)
        if len(params) != len(b.shapes):
            raise ValueError(
                f"{type(self).__name__}.finalize_variable_values: got {len(params)} parameters, the optimizer "
                f"holds moving averages of {len(b.shapes)}."
            )
        for i, p in enumerate(params):
            np.copyto(p, b.slots[f"average/{i}"])

    # --------------------------------------------------------------- config
    def __reduce__(self):
        """Pickling (multiprocessing, joblib) goes through the config and :meth:`get_state`, as a model file does."""
        state = self.get_state() if self.built else None
        return _rebuild, (type(self).__name__, self.get_config(), state)

    def get_config(self) -> dict:
        lr = self._learning_rate
        if isinstance(lr, _schedules.LearningRateSchedule):
            lr = _schedules.serialize(lr)
        elif not isinstance(lr, float):
            raise ValueError(
                f"{type(self).__name__}.get_config: a learning rate given as a plain callable ({lr!r}) "
                f"cannot be saved; use a registered LearningRateSchedule subclass."
            )
        cfg = {"name": self.name, "learning_rate": lr}
        cfg.update({k: getattr(self, k) for k in self._hyper})
        cfg.update({k: getattr(self, k) for k in _BASE_ARGS if k != "name"})
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _schedules.deserialize(config["learning_rate"])
        return cls(**config)

    def __repr__(self):
        try:
            cfg = self.get_config()
        except ValueError:
            cfg = {"learning_rate": self._learning_rate}
        cfg.pop("name", None)
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in cfg.items()) + ")"


def _rebuild(class_name: str, config: dict, state: dict):
    """Unpickle an optimizer: built from the registry and its config, then its state (no code is loaded)."""
    opt = registry.lookup(class_name).from_config(config)
    if state is not None:
        opt.set_state(state)
    return opt
