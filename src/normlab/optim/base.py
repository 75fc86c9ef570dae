"""The optimizer base class: hyperparameters, learning rate, state and the step.

One optimizer object updates every parameter of a model, so the global
gradient norm is known (and can be clipped). A step, ``apply(grads,
params)``, runs in this order:

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

Learning rates: a float, a :class:`~.schedules.LearningRateSchedule`, or a
callable ``f(step) -> float``; a schedule is evaluated at ``iterations``,
the number of steps taken so far (0 for the first step), as in Keras.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Mapping, Sequence

import numpy as np

from .._registry import Registry
from .._validation import (
    Callable,
    Instance,
    InvalidParameterError,
    Interval,
    NoneOk,
    Options,
    validate_params,
)
from ..kernels import _backend
from . import schedules as _schedules
from . import transforms as T

if _backend.NUMBA_AVAILABLE:  # pragma: no branch - depends on the environment
    from ..kernels import _optim_numba as _nbopt
else:  # pragma: no cover
    _nbopt = None

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
_BASE_ARGS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "on_nonfinite", "name")


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
        "on_nonfinite": [Options(("raise", "skip", "proceed"))],
        "name": [NoneOk(), str],
    }
    #: constructor arguments specific to the subclass, in signature order
    _hyper: tuple = ()

    # ------------------------------------------------------------ building
    def __init__(self, **kwargs):
        cls = type(self).__name__
        validate_params(cls, self._param_constraints, kwargs)
        given = [a for a in _CLIP_ARGS if kwargs.get(a) is not None]
        if len(given) > 1:
            raise InvalidParameterError(
                f"The {given[1]!r} parameter of {cls} must be None when {given[0]!r} is set "
                f"(clipvalue, clipnorm and global_clipnorm are mutually exclusive). "
                f"Got {kwargs[given[1]]!r} instead."
            )
        object.__setattr__(self, "_ready", False)
        self.learning_rate = kwargs.pop("learning_rate")
        for key, value in kwargs.items():
            if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
                value = float(value)
            setattr(self, key, value)
        if self.name is None:
            self.name = cls.lower()
        self._transform = T.chain(*self._links())
        self.iterations = 0
        self.skipped_steps = 0
        self.last_global_norm = math.nan
        self._state = None  # the chain's state, once built
        self._pending = None  # (state, shapes, dtypes) given by set_state before the first step
        self._shapes = None
        self._dtypes = None
        self._work: list[np.ndarray] = []
        self._scratch: list[np.ndarray] = []
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
            links.append(T.add_decayed_weights(self.weight_decay))
        return links

    # -------------------------------------------------------- learning rate
    @property
    def learning_rate(self):
        """The learning rate as given: a float, a schedule or a callable of the step."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        validate_params(type(self).__name__, {"learning_rate": _LR}, {"learning_rate": value})
        if isinstance(value, numbers.Real):
            value = float(value)
        object.__setattr__(self, "_learning_rate", value)

    @property
    def current_learning_rate(self) -> float:
        """The learning rate of the next step (schedules evaluated at ``iterations``)."""
        lr = self._learning_rate
        if isinstance(lr, float):
            return lr
        value = float(lr(self.iterations))
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"{type(self).__name__}: the learning-rate schedule gave {value!r} at step "
                f"{self.iterations}; it must be a finite float >= 0."
            )
        return value

    # ---------------------------------------------------------------- state
    @property
    def built(self) -> bool:
        return self._state is not None

    def build(self, params: Sequence[np.ndarray]) -> None:
        """Create the state for ``params`` (done by the first ``apply``)."""
        params = list(params)
        cls = type(self).__name__
        for i, p in enumerate(params):
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(
                    f"{cls}: parameter {i} must be a float32 or float64 NumPy array, got "
                    f"{type(p).__name__}{'' if not isinstance(p, np.ndarray) else ' of dtype ' + str(p.dtype)}."
                )
            if not p.flags.writeable:
                raise ValueError(f"{cls}: parameter {i} is read-only; the optimizer updates parameters in place.")
        shapes = [p.shape for p in params]
        dtypes = [p.dtype for p in params]
        if self._pending is not None:
            state, pshapes, pdtypes = self._pending
            if pshapes:
                if pshapes != shapes or pdtypes != dtypes:
                    raise ValueError(
                        f"{cls}: the state given to set_state() is for {len(pshapes)} parameters of shapes "
                        f"{pshapes} ({', '.join(str(d) for d in pdtypes)}), but the step has {len(shapes)} "
                        f"of shapes {shapes} ({', '.join(str(d) for d in dtypes)})."
                    )
            else:  # no per-parameter slots were saved: fresh slots, saved scalars
                fresh = self._transform.init(params)
                _copy_into(fresh, state)
                state = fresh
        else:
            state = self._transform.init(params)
        self._state = state
        self._pending = None
        self._shapes, self._dtypes = shapes, dtypes
        self._work = [np.empty_like(p) for p in params]
        self._scratch = [np.empty_like(p) for p in params]

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume bit for bit, as a flat ``{key: array}`` (copies).

        Keys: ``"iterations"`` and ``"skipped_steps"`` (0-d int64), and the
        slots, ``"<slot>/<i>"`` for parameter ``i`` (``"momentum/0"``,
        ``"velocity/3"``) or ``"<slot>"`` for a scalar (Nadam's
        ``"u_product"``). The learning rate itself is in ``get_config()``;
        a schedule's position is ``iterations``.
        """
        if self._state is not None:
            state = self._state
        elif self._pending is not None:
            state = self._pending[0]
        else:
            state = self._transform.init([])
        out = {
            "iterations": np.array(self.iterations, dtype=np.int64),
            "skipped_steps": np.array(self.skipped_steps, dtype=np.int64),
        }
        for key, arr in _flatten(state).items():
            out[key] = np.array(arr, copy=True)
        return out

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`get_state` returned (e.g. read back from an ``.npz``).

        Keys, shapes and dtypes are checked before anything changes
        (``"skipped_steps"`` may be absent: 0). Before the first step the
        slots are kept and checked against the parameters of the first
        ``apply``, which raises, changing nothing, if they do not match.
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
            if a.shape != () or a.dtype.kind not in "iu" or int(a) < 0:
                raise ValueError(f"{cls}.set_state: {key!r} must be a 0-d integer array >= 0, got {a!r}.")
            counters[key] = int(a)
        if self._state is not None:
            target, pshapes, pdtypes = self._state, None, None
        else:
            pshapes, pdtypes = _template_shapes(arrays, cls)
            template = [np.zeros(s, dtype=d) for s, d in zip(pshapes, pdtypes)]
            target = self._transform.init(template)
        expected = _flatten(target)
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        if missing or extra:
            raise ValueError(
                f"{cls}.set_state: the state does not match this optimizer"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
                + f" (expected {sorted(expected) + ['iterations', 'skipped_steps']})."
            )
        for key, ref in expected.items():
            a = arrays[key]
            if a.shape != ref.shape:
                raise ValueError(f"{cls}.set_state: {key!r} has shape {a.shape}, expected {ref.shape}.")
            if a.dtype.kind != "f":
                raise ValueError(f"{cls}.set_state: {key!r} must hold floats, got dtype {a.dtype}.")
        for key, ref in expected.items():
            np.copyto(ref, arrays[key], casting="unsafe")
        if self._state is None:
            self._pending = (target, pshapes, pdtypes)
        self.iterations = counters["iterations"]
        self.skipped_steps = counters["skipped_steps"]

    # ----------------------------------------------------------------- step
    def apply(self, grads: Sequence[np.ndarray], params: Sequence[np.ndarray], names: Sequence[str] | None = None):
        """One step: update every ``params[i]`` in place from ``grads[i]``.

        ``grads`` are not modified. If this raises, no parameter and no
        state has changed. ``names`` (optional) label parameters in errors.
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
        if self._state is None:
            self.build(params)
        shapes, dtypes = self._shapes, self._dtypes
        if n != len(shapes):
            raise ValueError(
                f"{cls}.apply: the optimizer was built for {len(shapes)} parameters, got {n}; "
                f"use one optimizer per set of parameters."
            )
        for i in range(n):
            g, p = grads[i], params[i]
            if type(g) is not np.ndarray:
                g = grads[i] = np.asarray(g)
            if p.shape != shapes[i] or g.shape != shapes[i] or p.dtype != dtypes[i]:
                raise ValueError(
                    f"{cls}.apply: parameter {_label(names, i)} must be a {dtypes[i]} array of shape "
                    f"{shapes[i]} with a gradient of the same shape (as when the optimizer was built), "
                    f"got a {p.dtype} parameter of shape {p.shape} and a gradient of shape {g.shape}."
                )
        self._step(grads, params, names)

    def _step(self, grads: list, params: list, names=None) -> None:
        """:meth:`apply` after its checks: for callers that pass the arrays it was built for.

        A model's training step calls it with its flat parameter and
        gradient buffers once one :meth:`apply` has accepted them.
        """
        sq = self._checked_one_pass(grads[0], params[0]) if len(grads) == 1 else None
        if sq is not None:
            norm = math.sqrt(sq)
            self.last_global_norm = norm
            if math.isfinite(norm):  # the kernel has made the step
                self.iterations += 1
                return
            # not finite: the kernel changed nothing; the usual handling follows
        else:
            norm = T.global_norm(grads)
            self.last_global_norm = norm
        if not math.isfinite(norm) and self.on_nonfinite != "proceed":
            if self.on_nonfinite == "skip":
                self.skipped_steps += 1
                return
            bad = next(i for i, g in enumerate(grads) if not np.isfinite(g).all())
            raise FloatingPointError(
                f"{type(self).__name__}: the gradient of parameter {_label(names, bad)} holds NaN or inf values; "
                f"no parameter was updated. Pass on_nonfinite='skip' to skip such steps or "
                f"'proceed' to apply them."
            )
        lr = self.current_learning_rate
        if not (self._fusable(grads, params) and self._fused_update(grads, params, lr)):
            work = self._work
            for w, g in zip(work, grads):
                np.copyto(w, g, casting="same_kind")
            updates, self._state = self._transform.update(
                work, self._state, params, T.StepInfo(self.iterations, lr, self._scratch)
            )
            for p, u in zip(params, updates):
                np.add(p, u, out=p)
        self.iterations += 1

    def _checked_one_pass(self, g: np.ndarray, p: np.ndarray):
        """For a single parameter array: the squared norm of ``g`` and, only when finite, the step, in one kernel.

        Returns the float sum of squares (the step made only if it is
        finite), or None where the optimizer has no such kernel (then
        :meth:`_step` computes the norm and updates separately). The result
        must equal the separate path's bit for bit.
        """
        return None

    def _fusable(self, grads, params) -> bool:
        """True when the chain is the bare update rule and the arrays suit the numba kernels."""
        if (not _backend.numba_enabled() or self.weight_decay or self.clipvalue is not None
                or self.clipnorm is not None or self.global_clipnorm is not None):
            return False
        for g, p in zip(grads, params):
            if not (
                g.dtype == p.dtype
                and (p.dtype == np.float32 or p.dtype == np.float64)
                and g.flags.c_contiguous
                and p.flags.c_contiguous
            ):
                return False
        return True

    def _fused_update(self, grads, params, lr: float) -> bool:
        """Apply the step with :mod:`normlab.kernels._optim_numba`; False where there is no kernel.

        Only called when :meth:`_fusable` holds; the result must equal the
        chain's bit for bit.
        """
        return False

    def apply_gradients(self, grads_and_vars: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
        """Keras's form: ``optimizer.apply_gradients(zip(grads, params))``; returns ``iterations``."""
        pairs = list(grads_and_vars)
        grads = [g for g, _ in pairs]
        params = [p for _, p in pairs]
        self.apply(grads, params)
        return self.iterations

    def finalize_variable_values(self, params: Sequence[np.ndarray]) -> None:
        """Give the parameters their final values at the end of training (Keras's hook).

        A no-op except for ``SGD(nesterov="exact")``, which keeps the
        parameters at the interim point: there it writes the iterate
        ``theta`` into them and zeroes the velocity, so the two agree again
        and training can go on (with the momentum restarted).
        """

    # --------------------------------------------------------------- config
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


def _label(names, i: int) -> str:
    return repr(names[i]) if names is not None else f"#{i}"


def _flatten(state) -> dict[str, np.ndarray]:
    """The chain's state as ``{"slot/i": array, "scalar": array}`` (views, not copies)."""
    out: dict[str, np.ndarray] = {}
    for part in state:
        for slot, value in part.items():
            items = [(f"{slot}/{i}", a) for i, a in enumerate(value)] if isinstance(value, list) else [(slot, value)]
            for key, a in items:
                if key in out:  # pragma: no cover - a programming error in a chain
                    raise RuntimeError(f"two links of the chain use the slot {slot!r}")
                out[key] = a
    return out


def _copy_into(dst_state, src_state) -> None:
    """Copy the entries of ``src_state`` that ``dst_state`` also has."""
    dst = _flatten(dst_state)
    for key, a in _flatten(src_state).items():
        if key in dst and dst[key].shape == a.shape:
            np.copyto(dst[key], a)


def _template_shapes(arrays: dict, cls: str):
    """Parameter shapes and dtypes implied by the per-parameter keys ``"slot/i"``."""
    found: dict[int, tuple] = {}
    for key, a in arrays.items():
        slot, sep, idx = key.rpartition("/")
        if not sep or not idx.isdigit():
            continue
        i = int(idx)
        if i in found and found[i][0] != a.shape:
            raise ValueError(
                f"{cls}.set_state: {key!r} has shape {a.shape}, but another slot of parameter {i} has "
                f"shape {found[i][0]}."
            )
        found.setdefault(i, (a.shape, a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)))
    n = len(found)
    if sorted(found) != list(range(n)):
        raise ValueError(f"{cls}.set_state: the parameter indices {sorted(found)} are not 0..{n - 1}.")
    return [found[i][0] for i in range(n)], [np.dtype(found[i][1]) for i in range(n)]
