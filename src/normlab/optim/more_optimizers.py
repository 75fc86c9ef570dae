"""Adamax and Adadelta, as Keras 3 computes them (each a rule, the learning rate, and the shared step).

Both rules are element-wise; they run through the same machinery as the
others (:mod:`normlab.optim.transforms`), so clipping, weight decay, EMA,
gradient accumulation and the state (``get_state`` / ``set_state``) work
as for Adam.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Interval
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
