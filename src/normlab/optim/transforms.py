"""Gradient transformations: ``init`` / ``update`` pairs with explicit state.

An optimizer is a :func:`chain` of small links, as in optax::

    sgd      = chain(scale_by_learning_rate(), trace(momentum))
    rmsprop  = chain(scale_by_rms(rho, epsilon), scale_by_learning_rate(), trace(momentum))
    adam     = chain(scale_by_adam(b1, b2, epsilon), scale_by_learning_rate())
    adamw    = chain(scale_by_adam(b1, b2, epsilon), scale_by_learning_rate(),
                     add_decayed_weights(weight_decay))

with an optional clipping link in front. Each link is a
:class:`GradientTransformation` ``(init, update)``:

``init(params) -> state``
    the link's state: a dict mapping a slot name to a list of arrays (one per
    parameter, shaped and typed like it) or to a 0-d array (a scalar).
``update(updates, state, params, info) -> (updates, state)``
    transform the incoming ``updates`` (gradients, for the first link); the
    parameters before the step are read, never written. ``info`` is a
    :class:`StepInfo`: the step count and the learning rate of this step
    (the optimizer evaluates schedules), and optional scratch arrays.

Links keep no hidden state: everything they remember is in ``state``, so
the same links serve any number of parameter sets, and saving an optimizer
is saving its states. Unlike optax, and for speed, ``update`` works in
place: it overwrites the arrays of ``updates`` and of ``state`` and returns
them (no array is allocated per step when ``info.scratch`` is given). Pass
copies if you need the inputs afterwards. The updates a link returns never
alias its state, so the next link may overwrite them.

Sign and scale conventions
--------------------------
The links before :func:`scale_by_learning_rate` compute a *direction* (a
gradient-like quantity); ``scale_by_learning_rate`` multiplies by ``-lr``;
the links after it (:func:`trace`, :func:`add_decayed_weights`) work on
*steps*, which are added to the parameters: ``params += updates``
(:func:`apply_updates`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ..kernels import optim as K
from ..kernels.checks import sum_squares

__all__ = [
    "StepInfo",
    "GradientTransformation",
    "chain",
    "identity",
    "clip_by_value",
    "clip_by_norm",
    "clip_by_global_norm",
    "scale",
    "scale_by_learning_rate",
    "trace",
    "nesterov_exact",
    "scale_by_adagrad",
    "scale_by_rms",
    "scale_by_adam",
    "scale_by_nadam",
    "scale_by_lion",
    "add_decayed_weights",
    "add_decayed_weights_masked",
    "keras_step_state",
    "global_norm",
    "apply_updates",
    "EPSILON_FORMS",
]

#: Where epsilon goes: ``"keras"`` (Keras 3's numerics) or ``"torch"``
#: (PyTorch's, which are also the notes' and the Adam paper's).
EPSILON_FORMS = ("keras", "torch")


class StepInfo(NamedTuple):
    """What a link may need to know about the step being taken.

    Attributes
    ----------
    step : int
        Steps taken before this one (0 on the first update; Adam's ``t`` is
        ``step + 1``).
    learning_rate : float
        The learning rate of this step (a schedule already evaluated at
        ``step``).
    scratch : list of ndarray, optional
        One work array per parameter, shaped and typed like it; its contents
        are undefined on entry and on exit. Without it, links allocate
        temporaries.
    """

    step: int = 0
    learning_rate: float = 0.0
    scratch: Sequence[np.ndarray] | None = None


class LinkSpec(NamedTuple):
    """What an optimizer may know about a link in order to lay it out on flat buffers, or fuse it.

    ``kind``: ``"rule"`` (an elementwise rule of :mod:`normlab.kernels.optim`
    with its ``consts(info, state, dtype)``; ``scalars`` names its scalar
    slots and ``commit(info, state)`` gives their values after the step),
    ``"lr"`` (``-lr *``, ``args = (flip_sign,)``), ``"momentum"`` (``args =
    (beta, nesterov)``), ``"clip_value"``, ``"clip_global"``, ``"clip_norm"``
    (``args = (c,)``), ``"decay"`` (``args = (weight_decay,)``), or another
    elementwise link that is not fused (``"scale"``, ``"nesterov_exact"``).
    ``per_variable``: the link needs the variables apart (``clip_norm``).
    ``path``: where the link's state is in the chain's state (set by
    :func:`chain`).
    """

    kind: str
    rule: Any = None
    consts: Callable | None = None
    args: tuple = ()
    per_variable: bool = False
    scalars: tuple = ()
    commit: Callable | None = None
    path: tuple = ()


class GradientTransformation(NamedTuple):
    """A pure ``(init, update)`` pair; see the module docstring.

    ``spec`` describes the links to an optimizer: a tuple of
    :class:`LinkSpec`, one per link, when every link is elementwise or a
    per-variable clip (the chain may then run on one flat buffer per dtype,
    unless a link is ``per_variable``, and it is fused into one kernel
    when it is an optional clip, a rule, the learning rate, optional
    momentum and optional weight decay), or ``None`` (the default, and any
    link of unknown form): the chain then sees one array per parameter.
    """

    init: Callable[[Sequence[np.ndarray]], Any]
    update: Callable[..., tuple]
    spec: tuple | None = None


def _tmp(info: StepInfo, i: int, like: np.ndarray) -> np.ndarray:
    if info.scratch is not None:
        return info.scratch[i]
    return np.empty_like(like)


def _zeros_like(params, fill: float = 0.0) -> list[np.ndarray]:
    return [np.full_like(p, fill) for p in params]


def _no_state(params) -> dict:
    return {}


def _check_form(form: str, who: str) -> None:
    if form not in EPSILON_FORMS:
        raise ValueError(f"{who}: 'epsilon_form' must be one of {EPSILON_FORMS}, got {form!r}.")


def _check_real(value, name: str, who: str, low: float | None = None, high: float | None = None, strict_low=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{who}: '{name}' must be a finite float, got {value!r}.")
    if low is not None and (value <= low if strict_low else value < low):
        raise ValueError(f"{who}: '{name}' must be {'>' if strict_low else '>='} {low}, got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"{who}: '{name}' must be <= {high}, got {value!r}.")
    return float(value)


# --------------------------------------------------------------- combining
def chain(*links: GradientTransformation) -> GradientTransformation:
    """Apply ``links`` one after the other; the state is the tuple of their states."""
    links = tuple(links)
    for k, t in enumerate(links):
        if not isinstance(t, GradientTransformation):
            raise TypeError(f"chain: argument {k} must be a GradientTransformation, got {t!r}.")

    def init(params):
        return tuple(t.init(params) for t in links)

    def update(updates, state, params, info: StepInfo):
        if len(state) != len(links):
            raise ValueError(f"chain: expected a state of {len(links)} parts, got {len(state)}.")
        new_state = []
        for t, s in zip(links, state):
            updates, s = t.update(updates, s, params, info)
            new_state.append(s)
        return updates, tuple(new_state)

    specs = [t.spec for t in links]
    spec = None if any(sp is None for sp in specs) else tuple(
        x._replace(path=(k,) + x.path) for k, sp in enumerate(specs) for x in sp)
    return GradientTransformation(init, update, spec)


def _apply_rule(rule, consts, updates, state, info) -> None:
    """Run an elementwise rule on each array: ``updates`` and the rule's slots, in place."""
    for i, u in enumerate(updates):
        K.apply_rule(rule, u, [state[name][i] for name in rule.slots], consts(info, state, u.dtype.type), u)


def _rule_link(rule, init, consts, scalars=(), commit=None) -> GradientTransformation:
    """A link that runs ``rule``; ``commit(info, state)`` gives the new values of the scalar slots ``scalars``."""

    def update(updates, state, params, info):
        new = commit(info, state) if commit is not None else ()
        _apply_rule(rule, consts, updates, state, info)
        for name, value in zip(scalars, new):
            state[name][...] = value
        return updates, state

    return GradientTransformation(init, update, (LinkSpec("rule", rule, consts, scalars=scalars, commit=commit),))


def identity() -> GradientTransformation:
    """Leave the updates as they are."""

    def update(updates, state, params, info):
        return updates, state

    return GradientTransformation(_no_state, update, ())


def apply_updates(params: Sequence[np.ndarray], updates: Sequence[np.ndarray]) -> None:
    """``params[i] += updates[i]``, in place."""
    for p, u in zip(params, updates):
        np.add(p, u, out=p)


def global_norm(arrays: Sequence[np.ndarray]) -> float:
    """``sqrt(sum_i ||a_i||^2)`` over all entries of all arrays, as a Python float.

    Each ``||a_i||^2`` is :func:`normlab.kernels.checks.sum_squares` (summed
    in the array's dtype, redone in float64 if that overflows, so the result
    is ``inf`` or ``nan`` only when an entry is); the sum over arrays is
    taken in float64.
    """
    return math.sqrt(sum(sum_squares(a) for a in arrays))


# ---------------------------------------------------------------- clipping
def clip_by_value(clipvalue: float) -> GradientTransformation:
    """Clip every entry to ``[-clipvalue, clipvalue]`` (Keras's ``clipvalue``)."""
    c = _check_real(clipvalue, "clipvalue", "clip_by_value", low=0.0, strict_low=True)

    def update(updates, state, params, info):
        for u in updates:
            dt = u.dtype.type
            K.apply_elementwise(K.clip_value, [u, dt(-c), dt(c)], [u], ((0, 0),))
        return updates, state

    return GradientTransformation(_no_state, update, (LinkSpec("clip_value", args=(c,)),))


def clip_by_norm(clipnorm: float) -> GradientTransformation:
    """Rescale each array on its own so that its L2 norm is at most ``clipnorm``.

    ``g <- g * clipnorm / ||g||`` when ``||g|| > clipnorm``; unchanged
    otherwise (Keras's ``clipnorm``: each variable separately). An array
    with a non-finite norm becomes all NaN.
    """
    c = _check_real(clipnorm, "clipnorm", "clip_by_norm", low=0.0, strict_low=True)

    def update(updates, state, params, info):
        for u in updates:
            n = global_norm([u])
            if not math.isfinite(n):
                np.multiply(u, math.nan, out=u)
            elif n > c:
                np.multiply(u, c / n, out=u)
        return updates, state

    return GradientTransformation(_no_state, update, (LinkSpec("clip_norm", args=(c,), per_variable=True),))


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale all arrays together so that their global norm is at most ``max_norm``.

    With ``N = sqrt(sum_i ||g_i||^2)``: ``g_i <- g_i * max_norm / N`` when
    ``N > max_norm``, unchanged otherwise (Keras's ``global_clipnorm``,
    PyTorch's ``clip_grad_norm_``). A non-finite ``N`` makes every entry NaN,
    as in Keras.
    """
    c = _check_real(max_norm, "max_norm", "clip_by_global_norm", low=0.0, strict_low=True)

    def update(updates, state, params, info):
        n = global_norm(updates)
        if not math.isfinite(n):
            for u in updates:
                np.multiply(u, math.nan, out=u)
        elif n > c:
            f = c / n
            for u in updates:
                np.multiply(u, f, out=u)
        return updates, state

    # the norm of a flat buffer is the norm of its parts (summed in another order)
    return GradientTransformation(_no_state, update, (LinkSpec("clip_global", args=(c,)),))


# ----------------------------------------------------------------- scaling
def scale(factor: float) -> GradientTransformation:
    """Multiply the updates by a constant."""
    f = _check_real(factor, "factor", "scale")

    def update(updates, state, params, info):
        for u in updates:
            np.multiply(u, f, out=u)
        return updates, state

    return GradientTransformation(_no_state, update, (LinkSpec("scale"),))


def scale_by_learning_rate(flip_sign: bool = True) -> GradientTransformation:
    """``u <- -lr * u`` (``+lr`` without ``flip_sign``), ``lr = info.learning_rate``.

    This turns a descent direction into a step; the links after it work on
    steps.
    """

    def update(updates, state, params, info):
        f = -float(info.learning_rate) if flip_sign else float(info.learning_rate)
        for u in updates:
            np.multiply(u, f, out=u)
        return updates, state

    return GradientTransformation(_no_state, update, (LinkSpec("lr", args=(flip_sign,)),))


def trace(momentum: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum in Keras's velocity form, on steps (after ``scale_by_learning_rate``).

    With ``s = -lr * g`` the incoming step and ``v`` the slot ``"momentum"``
    (zeros at first)::

        v <- momentum * v + s               (= momentum * v - lr * g)
        out = v                             (nesterov=False)
        out = momentum * v + s              (nesterov=True)

    Keras's ``SGD`` is ``chain(scale_by_learning_rate(), trace(momentum))``.
    Since ``lr`` enters ``v`` at every step, a changing learning rate acts
    on new gradients only (PyTorch's buffer holds gradients and multiplies
    by the current ``lr``: ``v_keras = -lr * buf_torch`` for a constant
    ``lr``).
    """
    b = _check_real(momentum, "momentum", "trace", low=0.0, high=1.0)

    def init(params):
        return {"momentum": _zeros_like(params)}

    def update(updates, state, params, info):
        for u, v in zip(updates, state["momentum"]):
            K.apply_rule(K.momentum, u, [v], (u.dtype.type(b), nesterov), u)
        return updates, state

    return GradientTransformation(init, update, (LinkSpec("momentum", args=(b, bool(nesterov))),))


def nesterov_exact(momentum: float, weight_decay: float = 0.0) -> GradientTransformation:
    """The notes' Nesterov momentum, literally: the gradient is taken at ``theta + beta v``.

    The notes' algorithm (``beta = momentum``, ``alpha`` the learning rate)::

        theta~ <- theta + beta v              interim point
        g      <- grad J(theta~)
        v      <- beta v - alpha g
        theta  <- theta + v

    Between steps the parameters hold the interim point ``theta~ = theta +
    beta v`` (where the next gradient is taken), and the iterate ``theta``
    is the slot ``"theta"``, so a model that takes the gradient at its
    parameters runs the notes' algorithm exactly. The incoming updates are
    the step ``s = -alpha g`` (after ``scale_by_learning_rate``); the link
    returns ``(theta_new + beta v_new) - params``. Decoupled weight decay,
    if any, acts on ``theta``: ``theta <- theta - alpha wd theta`` before
    ``theta <- theta + v``.

    Keras's ``nesterov=True`` is the same algorithm written in the variable
    ``w = theta~``: ``w <- w + beta v_new - alpha g``.
    """
    b = _check_real(momentum, "momentum", "nesterov_exact", low=0.0, high=1.0)
    wd = _check_real(weight_decay, "weight_decay", "nesterov_exact", low=0.0)

    def init(params):
        # v = 0, so theta = theta~ = the parameters
        return {"momentum": _zeros_like(params), "theta": [np.array(p, copy=True) for p in params]}

    def update(updates, state, params, info):
        decay = 1.0 - float(info.learning_rate) * wd
        for i, (u, v, th, p) in enumerate(zip(updates, state["momentum"], state["theta"], params)):
            np.multiply(v, b, out=v)
            np.add(v, u, out=v)  # v <- beta v - alpha g
            if wd:
                np.multiply(th, decay, out=th)
            np.add(th, v, out=th)  # theta <- theta + v
            t = _tmp(info, i, u)
            np.multiply(v, b, out=t)
            np.add(t, th, out=t)  # next interim point
            np.subtract(t, p, out=u)
        return updates, state

    return GradientTransformation(init, update, (LinkSpec("nesterov_exact"),))


# -------------------------------------------------------- adaptive scalings
def scale_by_adagrad(
    initial_accumulator_value: float = 0.1, epsilon: float = 1e-7, epsilon_form: str = "keras"
) -> GradientTransformation:
    """AdaGrad's direction.

    With ``r`` the slot ``"accumulator"`` (``initial_accumulator_value`` at
    first)::

        r   <- r + g * g
        out = g / sqrt(r + epsilon)          epsilon_form="keras"
        out = g / (sqrt(r) + epsilon)        epsilon_form="torch" (the notes' delta)
    """
    r0 = _check_real(initial_accumulator_value, "initial_accumulator_value", "scale_by_adagrad", low=0.0)
    eps = _check_real(epsilon, "epsilon", "scale_by_adagrad", low=0.0)
    _check_form(epsilon_form, "scale_by_adagrad")
    keras = epsilon_form == "keras"

    def init(params):
        return {"accumulator": _zeros_like(params, r0)}

    return _rule_link(K.adagrad, init, lambda info, state, dt: (dt(eps), keras))


def scale_by_rms(
    rho: float = 0.9, epsilon: float = 1e-7, centered: bool = False, epsilon_form: str = "keras"
) -> GradientTransformation:
    """RMSprop's direction.

    With ``r`` the slot ``"velocity"`` and, if ``centered``, ``a`` the slot
    ``"average_gradient"`` (zeros at first)::

        r   <- rho r + (1 - rho) g * g
        a   <- rho a + (1 - rho) g                    (centered)
        d   = r - a * a  if centered  else  r
        out = g / sqrt(d + epsilon)                   epsilon_form="keras"
        out = g / (sqrt(d) + epsilon)                 epsilon_form="torch" (notes)
    """
    rho = _check_real(rho, "rho", "scale_by_rms", low=0.0, high=1.0)
    eps = _check_real(epsilon, "epsilon", "scale_by_rms", low=0.0)
    _check_form(epsilon_form, "scale_by_rms")
    keras = epsilon_form == "keras"
    one_m = 1.0 - rho

    def init(params):
        s = {"velocity": _zeros_like(params)}
        if centered:
            s["average_gradient"] = _zeros_like(params)
        return s

    rule = K.rmsprop_centered if centered else K.rmsprop
    return _rule_link(rule, init, lambda info, state, dt: (dt(rho), dt(one_m), dt(eps), keras))


def scale_by_adam(
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    amsgrad: bool = False,
    epsilon_form: str = "keras",
) -> GradientTransformation:
    """Adam's direction, ``t = info.step + 1``.

    Slots ``"momentum"`` (``m``), ``"velocity"`` (``v``) and, with
    ``amsgrad``, ``"velocity_hat"`` (zeros at first)::

        m <- m + (g - m)(1 - beta_1)
        v <- v + (g*g - v)(1 - beta_2)
        v_hat <- max(v_hat, v); use v_hat for v          (amsgrad)

        keras ("epsilon hat", Kingma & Ba just before section 2.1):
            out = sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)
        torch (the paper's Algorithm 1):
            out = (m / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + epsilon)

    The two agree when ``epsilon_keras = epsilon_torch * sqrt(1 - beta_2^t)``,
    which changes with ``t``: no constant converts one into the other.
    """
    b1 = _check_real(beta_1, "beta_1", "scale_by_adam", low=0.0, high=1.0)
    b2 = _check_real(beta_2, "beta_2", "scale_by_adam", low=0.0, high=1.0)
    eps = _check_real(epsilon, "epsilon", "scale_by_adam", low=0.0)
    _check_form(epsilon_form, "scale_by_adam")
    keras = epsilon_form == "keras"

    def init(params):
        s = {"momentum": _zeros_like(params), "velocity": _zeros_like(params)}
        if amsgrad:
            s["velocity_hat"] = _zeros_like(params)
        return s

    fixed: dict = {}  # dtype -> the constants that do not change with the step (made once: every step reads them)

    def consts(info, state, dt):
        t = info.step + 1
        bc1 = 1.0 - b1**t
        bc2 = 1.0 - b2**t
        k = fixed.get(dt)
        if k is None:
            k = fixed[dt] = (dt(1.0 - b1), dt(1.0 - b2), dt(eps), dt(1.0))
        if keras:
            return k[0], k[1], k[2], dt(math.sqrt(bc2) / bc1), k[3], keras
        return k[0], k[1], k[2], dt(math.sqrt(bc2)), dt(bc1), keras

    return _rule_link(K.adam_amsgrad if amsgrad else K.adam, init, consts)


def scale_by_nadam(
    beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7, momentum_decay: float = 1.0
) -> GradientTransformation:
    """Nadam's direction (Dozat 2016, as in Keras 3), ``t = info.step + 1``.

    With the momentum schedule ``mu_t = beta_1 (1 - 0.5 * 0.96^(t * momentum_decay))``,
    its running product ``P_t = mu_1 ... mu_t`` (the scalar slot
    ``"u_product"``), ``m`` (``"momentum"``) and ``v`` (``"velocity"``)::

        m <- m + (g - m)(1 - beta_1);   v <- v + (g*g - v)(1 - beta_2)
        m_hat = mu_{t+1} m / (1 - P_{t+1}) + (1 - mu_t) g / (1 - P_t)
        v_hat = v / (1 - beta_2^t)
        out   = m_hat / (sqrt(v_hat) + epsilon)

    Keras 3 uses ``momentum_decay=1`` (``0.96^t``); PyTorch's ``NAdam``
    defaults to ``momentum_decay=0.004``, the paper's value. Epsilon is
    added to ``sqrt(v_hat)`` in both libraries.
    """
    b1 = _check_real(beta_1, "beta_1", "scale_by_nadam", low=0.0, high=1.0)
    b2 = _check_real(beta_2, "beta_2", "scale_by_nadam", low=0.0, high=1.0)
    eps = _check_real(epsilon, "epsilon", "scale_by_nadam", low=0.0)
    psi = _check_real(momentum_decay, "momentum_decay", "scale_by_nadam", low=0.0)

    def init(params):
        return {
            "momentum": _zeros_like(params),
            "velocity": _zeros_like(params),
            "u_product": np.ones((), dtype=np.float64),
        }

    def schedule(info, state):
        t = info.step + 1
        mu_t = b1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        prod = float(state["u_product"]) * mu_t
        return t, mu_t, mu_next, prod

    def consts(info, state, dt):
        t, mu_t, mu_next, prod = schedule(info, state)
        c_g = (1.0 - mu_t) / (1.0 - prod)
        c_m = mu_next / (1.0 - prod * mu_next)
        ratio = c_g / c_m if c_m != 0.0 else 0.0
        return (dt(1.0 - b1), dt(1.0 - b2), dt(eps), dt(ratio), dt(c_m), dt(c_g),
                dt(math.sqrt(1.0 - b2**t)), c_m != 0.0)

    def commit(info, state):
        return (schedule(info, state)[3],)

    return _rule_link(K.nadam, init, consts, ("u_product",), commit)


def scale_by_lion(beta_1: float = 0.9, beta_2: float = 0.99) -> GradientTransformation:
    """Lion's direction (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as in Keras 3.

    With ``m`` the slot ``"momentum"`` (zeros at first)::

        out = sign(beta_1 m + (1 - beta_1) g)
        m   <- beta_2 m + (1 - beta_2) g

    Every entry of the direction is -1, 0 or 1, so the step's size is set
    by the learning rate alone. ``1 - beta`` is computed in the arrays'
    dtype from ``beta`` in that dtype, as Keras does.
    """
    b1 = _check_real(beta_1, "beta_1", "scale_by_lion", low=0.0, high=1.0, strict_low=True)
    b2 = _check_real(beta_2, "beta_2", "scale_by_lion", low=0.0, high=1.0)

    def init(params):
        return {"momentum": _zeros_like(params)}

    return _rule_link(K.lion, init, lambda info, state, dt: (dt(b1), dt(1.0) - dt(b1), dt(b2), dt(1.0) - dt(b2)))


# ------------------------------------------------------------ weight decay
def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """Decoupled weight decay on steps: ``u <- u - lr * weight_decay * params``.

    It goes *after* the update rule (after :func:`scale_by_learning_rate` and
    :func:`trace`), so that neither the adaptive scaling nor the momentum
    sees it (that would be L2 regularization). It reads the parameters
    before the step, so ``params + updates`` equals Keras's order:
    ``w <- w - w * wd * lr`` first, then the update rule (which does not
    depend on ``w``). Unlike optax's link of the same name, the sign and
    the learning rate are included.
    """
    wd = _check_real(weight_decay, "weight_decay", "add_decayed_weights", low=0.0)

    def update(updates, state, params, info):
        f = -float(info.learning_rate) * wd
        if f != 0.0:
            for u, p in zip(updates, params):
                K.apply_elementwise(K.decay, [u, p, u.dtype.type(f)], [u], ((0, 0),))
        return updates, state

    return GradientTransformation(_no_state, update, (LinkSpec("decay", args=(wd,)),))


def add_decayed_weights_masked(weight_decay: float, mask: list) -> GradientTransformation:
    """:func:`add_decayed_weights` on the parameters ``i`` with ``mask[i]`` true only.

    ``mask`` is read at every step (the optimizer fills it when it binds,
    from ``exclude_from_weight_decay``); the link sees one array per
    parameter, so it is never fused.
    """
    wd = _check_real(weight_decay, "weight_decay", "add_decayed_weights_masked", low=0.0)

    def update(updates, state, params, info):
        f = -float(info.learning_rate) * wd
        if f != 0.0:
            for u, p, on in zip(updates, params, mask):
                if on:
                    K.apply_elementwise(K.decay, [u, p, u.dtype.type(f)], [u], ((0, 0),))
        return updates, state

    return GradientTransformation(_no_state, update,
                                  (LinkSpec("decay_masked", args=(wd,), per_variable=True),))


def keras_step_state(ema: bool, accumulate: bool) -> GradientTransformation:
    """The state of Keras's ``use_ema`` and ``gradient_accumulation_steps``, for the optimizer's step.

    A pass-through link: the work is done around the chain by the
    optimizer's step (:func:`normlab.optim._step.chain`), which needs the
    parameters after the update. Its state: ``"average"`` (the moving
    averages, starting at the parameters; Keras starts them at zeros, which
    its first step overwrites) and ``"gradient_accumulator"`` (zeros, Keras's name) per array, and
    ``"accumulation_step"``, the gradients summed since the last update.
    """

    def init(params):
        state = {}
        if ema:
            state["average"] = [np.array(p, copy=True) for p in params]
        if accumulate:
            state["gradient_accumulator"] = _zeros_like(params)
            state["accumulation_step"] = np.zeros((), np.float64)
        return state

    def update(updates, state, params, info):
        return updates, state

    return GradientTransformation(init, update, (LinkSpec("keras_step_state", args=(ema, accumulate)),))
