"""Adamax, Adadelta, Lamb, Ftrl and Adafactor, as Keras 3 computes them (each a link, the learning rate, and the shared step).

Both rules are element-wise; they run through the same machinery as the
others (:mod:`normlab.optim.transforms`), so clipping, weight decay, EMA,
gradient accumulation and the state (``get_state`` / ``set_state``) work
as for Adam.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Boolean, Interval
from ..kernels import optim as K
from . import transforms as T
from .base import _EPS, _UNIT, Optimizer, _args, registry


@K.rule("momentum", "norm")
def _adamax(g, m, u, one_minus_b1, b2, eps, c):
    m = m + (g - m) * one_minus_b1
    u = np.maximum(u * b2, np.abs(g))
    return m * c / (u + eps), m, u


@K.rule("accumulated_grad", "accumulated_delta_var")
def _adadelta(g, ag, ad, rho, one_minus_rho, eps):
    ag = ag * rho + g * g * one_minus_rho
    d = np.sqrt(ad + eps) / np.sqrt(ag + eps) * g
    ad = ad * rho + d * d * one_minus_rho
    return d, ag, ad


def scale_by_adamax(beta_1=0.9, beta_2=0.999, epsilon=1e-7) -> T.GradientTransformation:
    """Adamax's direction (Kingma and Ba, 2015, section 7.1), ``t = info.step + 1``::

        m <- m + (g - m)(1 - beta_1);   u <- max(beta_2 u, |g|)
        out = m / ((1 - beta_1^t)(u + epsilon))
    """

    def init(params):
        return {"momentum": T._zeros_like(params), "norm": T._zeros_like(params)}

    def consts(info, state, dt):
        return dt(1.0 - beta_1), dt(beta_2), dt(epsilon), dt(1.0 / (1.0 - beta_1 ** (info.step + 1)))

    return T._rule_link(_adamax, init, consts)


def scale_by_adadelta(rho=0.95, epsilon=1e-7) -> T.GradientTransformation:
    """Adadelta's direction (Zeiler, 2012)::

        a_g <- rho a_g + (1 - rho) g^2
        out = sqrt(a_d + epsilon) / sqrt(a_g + epsilon) * g
        a_d <- rho a_d + (1 - rho) out^2
    """

    def init(params):
        return {"accumulated_grad": T._zeros_like(params), "accumulated_delta_var": T._zeros_like(params)}

    return T._rule_link(_adadelta, init, lambda info, state, dt: (dt(rho), dt(1.0 - rho), dt(epsilon)))




@registry.register
class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm, as Keras 3 computes it.

    With ``m`` the slot ``"momentum"`` and ``u`` the slot ``"norm"`` (zeros
    at first), ``t`` the step count from 1::

        m <- m + (g - m)(1 - beta_1)
        u <- max(beta_2 u, |g|)
        w <- w - lr * m / ((1 - beta_1^t)(u + epsilon))

    Parameters
    ----------
    learning_rate : default 0.001
    beta_1 : float in [0, 1), default 0.9
    beta_2 : float in [0, 1], default 0.999
    epsilon : float >= 0, default 1e-7
    **kwargs
        ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
        ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
        ``gradient_accumulation_steps``, ``on_nonfinite``, ``name``: see
        :class:`Optimizer`.
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": _UNIT,
        "epsilon": _EPS,
    }
    _hyper = ("beta_1", "beta_2", "epsilon")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, *, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, gradient_accumulation_steps=None, on_nonfinite="raise", name=None):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [scale_by_adamax(self.beta_1, self.beta_2, self.epsilon), T.scale_by_learning_rate()], False


@registry.register
class Adadelta(Optimizer):
    """Adadelta, as Keras 3 computes it (the learning rate scales Zeiler's step; Keras's default is 0.001).

    With ``a_g`` the slot ``"accumulated_grad"`` and ``a_d`` the slot
    ``"accumulated_delta_var"`` (zeros at first)::

        a_g <- rho a_g + (1 - rho) g^2
        d   =  sqrt(a_d + epsilon) / sqrt(a_g + epsilon) * g
        a_d <- rho a_d + (1 - rho) d^2
        w   <- w - lr * d

    Parameters
    ----------
    learning_rate : default 0.001
    rho : float in [0, 1], default 0.95
    epsilon : float >= 0, default 1e-7
    **kwargs
        ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
        ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
        ``gradient_accumulation_steps``, ``on_nonfinite``, ``name``: see
        :class:`Optimizer`.
    """

    _param_constraints = {**Optimizer._param_constraints, "rho": _UNIT, "epsilon": _EPS}
    _hyper = ("rho", "epsilon")

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, *, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 gradient_accumulation_steps=None, on_nonfinite="raise", name=None):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [scale_by_adadelta(self.rho, self.epsilon), T.scale_by_learning_rate()], False


def scale_by_lamb(beta_1=0.9, beta_2=0.999, epsilon=1e-7) -> T.GradientTransformation:
    """LAMB's direction (You et al., 2020), as Keras 3: Adam's bias-corrected direction times the trust ratio.

    Per parameter array ``w``::

        m <- m + (g - m)(1 - beta_1);   v <- v + (g^2 - v)(1 - beta_2)
        u = (m / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + epsilon)
        out = u * ||w|| / ||u||     (1 instead of the ratio where a norm is 0)

    The ratio needs each array whole: the link works per array.
    """

    def init(params):
        return {"momentum": T._zeros_like(params), "velocity": T._zeros_like(params)}

    def update(updates, state, params, info):
        t = info.step + 1
        for i, (g, w) in enumerate(zip(updates, params)):
            m, v = state["momentum"][i], state["velocity"][i]
            dt = g.dtype.type
            m += (g - m) * dt(1.0 - beta_1)
            v += (g * g - v) * dt(1.0 - beta_2)
            u = (m / dt(1.0 - beta_1 ** t)) / (np.sqrt(v / dt(1.0 - beta_2 ** t)) + dt(epsilon))
            w_norm = float(np.sqrt(np.sum(np.square(w, dtype=np.float64))))
            u_norm = float(np.sqrt(np.sum(np.square(u, dtype=np.float64))))
            ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            np.multiply(u, dt(ratio), out=g)
        return updates, state

    return T.GradientTransformation(init, update, None)


def ftrl_step(learning_rate_power=-0.5, initial_accumulator_value=0.1, l1=0.0, l2=0.0, l2_shrinkage=0.0,
              beta=0.0) -> T.GradientTransformation:
    """FTRL-proximal (McMahan et al., 2013) as Keras 3 computes it; the link gives the step itself.

    With ``n`` the slot ``"accumulator"`` and ``z`` the slot ``"linear"``,
    ``p = -learning_rate_power``, ``lr`` this step's learning rate::

        l2' = l2 + beta / (2 lr);   n' = n + g^2
        z  <- z + g + 2 l2_shrinkage w - (n'^p - n^p) / lr * w
        w' =  (clip(z, -l1, l1) - z) / (n'^p / lr + 2 l2');   n <- n'

    and the step is ``w' - w`` (it replaces the parameter).
    """

    def init(params):
        return {"accumulator": T._zeros_like(params, initial_accumulator_value), "linear": T._zeros_like(params)}

    def update(updates, state, params, info):
        lr = float(info.learning_rate)
        p = -learning_rate_power
        l2_eff = l2 + beta / (2.0 * lr)
        for i, (g, w) in enumerate(zip(updates, params)):
            n, z = state["accumulator"][i], state["linear"][i]
            dt = g.dtype.type
            n_new = n + g * g
            z += g + dt(2.0 * l2_shrinkage) * w - (np.power(n_new, dt(p)) - np.power(n, dt(p))) / dt(lr) * w
            quadratic = np.power(n_new, dt(p)) / dt(lr) + dt(2.0 * l2_eff)
            w_new = (np.clip(z, -l1, l1) - z) / quadratic
            n[...] = n_new
            np.subtract(w_new, w, out=g)
        return updates, state

    return T.GradientTransformation(init, update, None)


@registry.register
class Lamb(Optimizer):
    """LAMB (You et al., 2020, "Large Batch Optimization for Deep Learning"), as Keras 3 computes it.

    Adam's bias-corrected step, rescaled per parameter array by the trust
    ratio ``||w|| / ||step||`` (see :func:`scale_by_lamb`)::

        w <- w - lr * (||w|| / ||u||) * u,   u = m_hat / (sqrt(v_hat) + epsilon)

    Parameters
    ----------
    learning_rate : default 0.001
    beta_1 : float in [0, 1), default 0.9
    beta_2 : float in [0, 1), default 0.999
    epsilon : float >= 0, default 1e-7
    **kwargs
        ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
        ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
        ``gradient_accumulation_steps``, ``on_nonfinite``, ``name``: see
        :class:`Optimizer`.
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": _EPS,
    }
    _hyper = ("beta_1", "beta_2", "epsilon")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, *, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, gradient_accumulation_steps=None, on_nonfinite="raise", name=None):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [scale_by_lamb(self.beta_1, self.beta_2, self.epsilon), T.scale_by_learning_rate()], False


@registry.register
class Ftrl(Optimizer):
    """FTRL-proximal ("Follow The Regularized Leader"), as Keras 3 computes it (see :func:`ftrl_step`).

    Suited to wide, sparse linear models; ``l1_regularization_strength``
    drives weights to exactly 0.

    Parameters
    ----------
    learning_rate : default 0.001
    learning_rate_power : float <= 0, default -0.5
    initial_accumulator_value : float >= 0, default 0.1
    l1_regularization_strength, l2_regularization_strength, l2_shrinkage_regularization_strength : float >= 0
    beta : float >= 0, default 0.0
    **kwargs
        ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
        ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
        ``gradient_accumulation_steps``, ``on_nonfinite``, ``name``: see
        :class:`Optimizer`.
    """

    _NONNEG = [Interval(numbers.Real, 0, None)]
    _param_constraints = {
        **Optimizer._param_constraints,
        "learning_rate_power": [Interval(numbers.Real, None, 0)],
        "initial_accumulator_value": _NONNEG,
        "l1_regularization_strength": _NONNEG,
        "l2_regularization_strength": _NONNEG,
        "l2_shrinkage_regularization_strength": _NONNEG,
        "beta": _NONNEG,
    }
    _keras_messages = {
        **Optimizer._keras_messages,
        "learning_rate_power": lambda v: (f"`learning_rate_power` needs to be negative or zero. Received: "
                                          f"learning_rate_power={v}." if v > 0.0 else None),
        **{k: (lambda k: lambda v: (f"`{k}` needs to be positive or zero. Received: {k}={v}."
                                    if v < 0.0 else None))(k)
           for k in ("initial_accumulator_value", "l1_regularization_strength", "l2_regularization_strength",
                     "l2_shrinkage_regularization_strength")},
    }
    _hyper = ("learning_rate_power", "initial_accumulator_value", "l1_regularization_strength",
              "l2_regularization_strength", "l2_shrinkage_regularization_strength", "beta")

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, *, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 gradient_accumulation_steps=None, on_nonfinite="raise", name=None):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [ftrl_step(self.learning_rate_power, self.initial_accumulator_value, self.l1_regularization_strength,
                          self.l2_regularization_strength, self.l2_shrinkage_regularization_strength, self.beta)], False


def adafactor_step(learning_rate_is_float: bool, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3,
                   clip_threshold=1.0, relative_step=True) -> T.GradientTransformation:
    """Adafactor (Shazeer and Stern, 2018) as Keras 3 computes it; the link gives the step itself.

    With ``t`` the step count from 1, ``lr`` this step's learning rate
    (``min(lr, 1 / sqrt(t))`` with ``relative_step`` and a float learning
    rate), ``rms(x) = sqrt(mean(x^2))``::

        rho = min(lr, 1 / sqrt(t));   alpha = max(epsilon_2, rms(w)) rho
        beta = 1 - t^beta_2_decay;    s = g^2 + epsilon_1
        arrays of rank >= 2 (factored second moments, slots "r" and "c"):
            r <- beta r + (1 - beta) mean(s, -1);  c <- beta c + (1 - beta) mean(s, -2)
            v =  (r / mean(r, -1))[..., None] * c[..., None, :]
        rank 0 or 1:  v <- beta v + (1 - beta) s
        u = g / sqrt(v);   step = -alpha u / max(1, rms(u) / clip_threshold)
    """

    def init(params):
        r = [np.zeros(p.shape[:-1], p.dtype) if p.ndim >= 2 else np.zeros((), p.dtype) for p in params]
        c = [np.zeros(p.shape[:-2] + p.shape[-1:], p.dtype) if p.ndim >= 2 else np.zeros((), p.dtype) for p in params]
        return {"r": r, "c": c, "velocity": T._zeros_like(params)}

    def rms(x):
        return np.sqrt(np.mean(np.square(x)))

    def update(updates, state, params, info):
        t = info.step + 1.0
        lr = float(info.learning_rate)
        if relative_step and learning_rate_is_float:
            lr = min(lr, 1.0 / np.sqrt(t))
        rho = min(lr, 1.0 / np.sqrt(t))
        beta = 1.0 - t ** beta_2_decay
        for i, (g, w) in enumerate(zip(updates, params)):
            dt = g.dtype.type
            r, c, v = state["r"][i], state["c"][i], state["velocity"][i]
            alpha = dt(max(epsilon_2, float(rms(w))) * rho)
            s = g * g + dt(epsilon_1)
            if w.ndim >= 2:
                r[...] = dt(beta) * r + dt(1.0 - beta) * s.mean(axis=-1)
                c[...] = dt(beta) * c + dt(1.0 - beta) * s.mean(axis=-2)
                v[...] = (r / r.mean(axis=-1, keepdims=True))[..., None] * c[..., None, :]
            else:
                v[...] = dt(beta) * v + dt(1.0 - beta) * s
            u = g / np.sqrt(v)
            u = u / dt(max(1.0, float(rms(u)) / clip_threshold))
            np.multiply(u, -alpha, out=g)
        return updates, state

    return T.GradientTransformation(init, update, None)


@registry.register
class Adafactor(Optimizer):
    """Adafactor (Shazeer and Stern, 2018), as Keras 3 computes it (see :func:`adafactor_step`).

    Second moments of matrices are kept factored (a row and a column
    vector), so the optimizer's memory grows with ``rows + columns``, not
    their product; the step is relative to the weights' RMS.

    Parameters
    ----------
    learning_rate : default 0.001
    beta_2_decay : float, default -0.8
    epsilon_1 : float >= 0, default 1e-30
    epsilon_2 : float >= 0, default 1e-3
    clip_threshold : float > 0, default 1.0
    relative_step : bool, default True
        With a float learning rate, use ``min(lr, 1 / sqrt(t))``.
    **kwargs
        ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
        ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
        ``gradient_accumulation_steps``, ``on_nonfinite``, ``name``: see
        :class:`Optimizer`.
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "beta_2_decay": [Interval(numbers.Real, None, None)],
        "epsilon_1": _EPS,
        "epsilon_2": _EPS,
        "clip_threshold": [Interval(numbers.Real, 0, None, closed="neither")],
        "relative_step": [Boolean()],
    }
    _hyper = ("beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold", "relative_step")
    _param_shaped_slots = ("velocity",)  # "r" and "c" are the factored row and column moments

    def __init__(self, learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3, clip_threshold=1.0,
                 relative_step=True, *, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, gradient_accumulation_steps=None,
                 on_nonfinite="raise", name=None):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [adafactor_step(isinstance(self.learning_rate, float), self.beta_2_decay, self.epsilon_1,
                               self.epsilon_2, self.clip_threshold, self.relative_step)], False
