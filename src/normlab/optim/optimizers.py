"""Keras-style optimizers, each a thin constructor over a chain of transforms.

The step (its order: regularizer gradients, global norm and non-finite
policy, clipping, decoupled weight decay, update rule), the learning rate
and the state are in :class:`~normlab.optim.base.Optimizer`; a class here
only names its hyperparameters and builds its chain (``_rule``). Each rule
is written once, in :mod:`normlab.kernels.optim`; the optimizer fuses any
chain of the form "optional clip, rule, learning rate, optional momentum,
optional weight decay" into one kernel call over its buffers
(:mod:`normlab.optim.layout`), with the same arithmetic as the chain.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Boolean, Interval, Options
from . import transforms as T
from .base import _EPS, _FORM, _UNIT, Optimizer, _args, registry

# decay rates of running averages: 1 would never update the average (RMSprop then steps by
# lr * g / epsilon) and would divide by zero in Adam's bias corrections 1 - beta^t (PyTorch refuses it too)
_DECAY = [Interval(numbers.Real, 0, 1, closed="left")]

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Nadam", "Lion", "ChainOptimizer", "registry"]


@registry.register
class SGD(Optimizer):
    """Gradient descent with optional momentum (Keras's velocity form).

    With ``g`` the (clipped) gradient, ``lr`` the learning rate, ``beta =
    momentum`` and ``v`` the slot ``"momentum"`` (zeros at first)::

        momentum == 0:     w <- w - lr * g
        momentum > 0:      v <- beta * v - lr * g;   w <- w + v
        nesterov=True:     v <- beta * v - lr * g;   w <- w + beta * v - lr * g

    These are the notes' "SGD with momentum" (``v <- beta v - alpha g;
    theta <- theta + v``) and Keras's ``SGD``. PyTorch keeps ``buf <- beta
    buf + g`` and steps ``w <- w - lr * buf`` (Nesterov: ``w <- w - lr (g +
    beta buf)``): for a constant ``lr`` the two are the same, with ``v =
    -lr * buf``.

    Nesterov momentum, and how ``nesterov=True`` relates to the notes
    ---------------------------------------------------------------------
    The notes take the gradient at the interim point ``theta~ = theta +
    beta v``::

        g <- grad J(theta + beta v);   v <- beta v - alpha g;   theta <- theta + v

    Written in the variable ``w = theta + beta v`` this is *exactly*
    Keras's rule above: ``w_new = theta_new + beta v_new = w + beta v_new -
    alpha g``, with ``g`` taken at ``w``. So ``nesterov=True`` is not an
    approximation: its parameters are the notes' interim points, and the
    notes' iterate is ``theta = w - beta v``.

    ``nesterov="exact"`` runs the notes' algorithm literally: the slot
    ``"theta"`` holds ``theta``, the parameters hold the interim point
    ``theta + beta v`` where the next gradient is taken, and each step does
    the three lines above. The parameters agree with ``nesterov=True`` to
    rounding; :meth:`finalize_variable_values` writes ``theta`` into them.

    Parameters
    ----------
    learning_rate : float, schedule or callable, default 0.01
    momentum : float in [0, 1], default 0.0
    nesterov : bool or "exact", default False
    **kwargs
        ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
        ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
        ``gradient_accumulation_steps``, ``on_nonfinite``, ``name``: see
        :class:`Optimizer`.
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "momentum": _UNIT,
        "nesterov": [Boolean(), Options(("exact",))],
    }
    _keras_messages = {
        **Optimizer._keras_messages,
        "momentum": lambda v: ("`momentum` must be a float between [0, 1]."
                               if not isinstance(v, float) or v < 0 or v > 1 else None),
    }
    _hyper = ("momentum", "nesterov")

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        *,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
        on_nonfinite="raise",
        name=None,
    ):
        super().__init__(**_args(locals()))

    def _rule(self):
        if self.nesterov == "exact":
            return [T.scale_by_learning_rate(), T.nesterov_exact(self.momentum, self.weight_decay or 0.0)], True
        links = [T.scale_by_learning_rate()]
        if self.momentum:
            links.append(T.trace(self.momentum, nesterov=bool(self.nesterov)))
        return links, False



    def finalize_variable_values(self, params):
        super().finalize_variable_values(params)
        b = self._binding
        if self.nesterov != "exact" or b is None:
            return
        for i, p in enumerate(params):
            np.copyto(p, b.slots[f"theta/{i}"])
            b.slots[f"momentum/{i}"][...] = 0


@registry.register
class Adagrad(Optimizer):
    """AdaGrad: per-entry step sizes shrinking with the sum of squared gradients.

    With ``r`` the slot ``"accumulator"`` (``initial_accumulator_value`` at
    first)::

        r <- r + g * g
        w <- w - lr * g / sqrt(r + epsilon)         epsilon_form="keras" (Keras 3)
        w <- w - lr * g / (sqrt(r) + epsilon)       epsilon_form="torch" (PyTorch; the notes' delta)

    The notes' AdaGrad is ``initial_accumulator_value=0,
    epsilon_form="torch"`` (``delta ~ 1e-7``); PyTorch's ``Adagrad`` starts
    at 0 with ``eps=1e-10``: pass ``initial_accumulator_value`` explicitly
    to either side when converting.

    Parameters
    ----------
    learning_rate : default 0.001
    initial_accumulator_value : float >= 0, default 0.1
    epsilon : float >= 0, default 1e-7
    epsilon_form : {"keras", "torch"}, default "keras"
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "initial_accumulator_value": [Interval(numbers.Real, 0, None)],
        "epsilon": _EPS,
        "epsilon_form": _FORM,
    }
    _hyper = ("initial_accumulator_value", "epsilon", "epsilon_form")

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
        *,
        epsilon_form="keras",
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
        on_nonfinite="raise",
        name=None,
    ):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [
            T.scale_by_adagrad(self.initial_accumulator_value, self.epsilon, self.epsilon_form),
            T.scale_by_learning_rate(),
        ], False



@registry.register(aliases=("rmsprop",))
class RMSprop(Optimizer):
    """RMSprop, optionally centered, with plain or (the notes') Nesterov momentum.

    With ``r`` the slot ``"velocity"``, ``a`` the slot ``"average_gradient"``
    (``centered``) and ``m`` the slot ``"momentum"`` (zeros at first)::

        r <- rho r + (1 - rho) g * g
        a <- rho a + (1 - rho) g                       (centered)
        d = r - a * a  if centered  else  r
        s = lr * g / sqrt(d + epsilon)                 epsilon_form="keras" (Keras 3)
        s = lr * g / (sqrt(d) + epsilon)               epsilon_form="torch" (PyTorch; the notes)
        momentum == 0:    w <- w - s
        momentum > 0:     m <- momentum * m - s;  w <- w + m
        nesterov=True:    m <- momentum * m - s;  w <- w + momentum * m - s

    ``m`` holds Keras's momentum with the opposite sign (``m = -m_keras``),
    the notes' velocity ``v``. PyTorch's buffer is ``buf <- momentum buf +
    g / (sqrt(d) + eps)`` with ``w <- w - lr buf``: for a constant ``lr``,
    ``m = -lr * buf``.

    ``nesterov=True`` is the notes' "RMSProp with Nesterov momentum" (which
    no mainstream library offers)::

        theta~ <- theta + beta v;  g <- grad J(theta~);  r <- rho r + (1 - rho) g*g
        v <- beta v - alpha g / sqrt(r);  theta <- theta + v

    written, as Keras writes Nesterov SGD, in the variable ``w = theta +
    beta v``: ``w_new = w + beta v_new - alpha g / sqrt(r)``, so the
    gradient the model takes at ``w`` is the notes' gradient at the interim
    point (see :class:`SGD`); ``theta = w - momentum * m``. The notes have no
    epsilon here: use ``epsilon=0`` for the literal algorithm.

    Parameters
    ----------
    learning_rate : default 0.001
    rho : float in [0, 1), default 0.9
    momentum : float in [0, 1], default 0.0
    epsilon : float >= 0, default 1e-7
    centered : bool, default False
    nesterov : bool, default False
    epsilon_form : {"keras", "torch"}, default "keras"
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "rho": _DECAY,
        "momentum": _UNIT,
        "epsilon": _EPS,
        "centered": [Boolean()],
        "nesterov": [Boolean()],
        "epsilon_form": _FORM,
    }
    _hyper = ("rho", "momentum", "epsilon", "centered", "nesterov", "epsilon_form")

    def __init__(
        self,
        learning_rate=0.001,
        rho=0.9,
        momentum=0.0,
        epsilon=1e-7,
        centered=False,
        nesterov=False,
        *,
        epsilon_form="keras",
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
        on_nonfinite="raise",
        name=None,
    ):
        super().__init__(**_args(locals()))

    def _rule(self):
        links = [T.scale_by_rms(self.rho, self.epsilon, self.centered, self.epsilon_form), T.scale_by_learning_rate()]
        if self.momentum:
            links.append(T.trace(self.momentum, nesterov=self.nesterov))
        return links, False



@registry.register
class Adam(Optimizer):
    """Adam (Kingma & Ba), in Keras's epsilon-hat form by default.

    With ``t = iterations + 1``, ``m`` the slot ``"momentum"``, ``v`` the slot
    ``"velocity"`` (zeros at first) and, with ``amsgrad``, ``v_hat`` the slot
    ``"velocity_hat"``::

        m <- m + (g - m)(1 - beta_1)
        v <- v + (g * g - v)(1 - beta_2)
        v <- v_hat <- max(v_hat, v)                                 (amsgrad)
        keras:  w <- w - lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)
        torch:  w <- w - lr * (m / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + epsilon)

    ``epsilon_form="torch"`` is the paper's Algorithm 1 and PyTorch's
    ``Adam`` (whose default ``eps`` is 1e-8). The forms agree when
    ``epsilon_keras = epsilon_torch * sqrt(1 - beta_2^t)``; as that changes
    with ``t``, no constant epsilon converts one into the other.

    Parameters
    ----------
    learning_rate : default 0.001
    beta_1, beta_2 : float in [0, 1), default 0.9, 0.999
    epsilon : float >= 0, default 1e-7
    amsgrad : bool, default False
    epsilon_form : {"keras", "torch"}, default "keras"
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "beta_1": _DECAY,
        "beta_2": _DECAY,
        "epsilon": _EPS,
        "amsgrad": [Boolean()],
        "epsilon_form": _FORM,
    }
    _hyper = ("beta_1", "beta_2", "epsilon", "amsgrad", "epsilon_form")

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        *,
        epsilon_form="keras",
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
        on_nonfinite="raise",
        name=None,
    ):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [
            T.scale_by_adam(self.beta_1, self.beta_2, self.epsilon, self.amsgrad, self.epsilon_form),
            T.scale_by_learning_rate(),
        ], False



@registry.register(aliases=("adamw",))
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), Keras 3's ``AdamW``.

    Each step first decays, then takes the :class:`Adam` step::

        w <- w - lr * weight_decay * w;   w <- w + adam_step(g)

    ``weight_decay`` defaults to 0.004 (Keras; PyTorch's ``AdamW`` defaults to
    0.01 and uses the ``"torch"`` epsilon form with ``eps=1e-8``). The decay
    is multiplied by the learning rate, so it follows a schedule.
    """

    _param_constraints = {**Adam._param_constraints, "weight_decay": [Interval(numbers.Real, 0, None)]}
    _keras_messages = {
        **Adam._keras_messages,
        "weight_decay": lambda v: ("Argument `weight_decay` must be a float. Received: weight_decay=None"
                                   if v is None else None),
    }

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        *,
        epsilon_form="keras",
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
        on_nonfinite="raise",
        name=None,
    ):
        Optimizer.__init__(self, **_args(locals()))


@registry.register
class Nadam(Optimizer):
    """Nadam: Adam with Nesterov momentum (Dozat 2016), as in Keras 3.

    With ``t = iterations + 1``, the momentum schedule ``mu_t = beta_1 (1 -
    0.5 * 0.96^(t * momentum_decay))`` and its running product ``P_t`` (the
    scalar slot ``"u_product"``)::

        m <- m + (g - m)(1 - beta_1);    v <- v + (g * g - v)(1 - beta_2)
        m_hat = mu_{t+1} m / (1 - P_{t+1}) + (1 - mu_t) g / (1 - P_t)
        w <- w - lr * m_hat / (sqrt(v / (1 - beta_2^t)) + epsilon)

    Keras 3 uses ``0.96^t``, i.e. ``momentum_decay=1``; PyTorch's ``NAdam``
    is the same algorithm with ``momentum_decay=0.004`` by default (pass
    ``momentum_decay=1.0`` to it, or ``0.004`` here, to convert). Epsilon is
    outside the square root in both.

    Parameters
    ----------
    learning_rate : default 0.001
    beta_1, beta_2 : float in [0, 1), default 0.9, 0.999
    epsilon : float >= 0, default 1e-7
    momentum_decay : float >= 0, default 1.0
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "beta_1": _DECAY,
        "beta_2": _DECAY,
        "epsilon": _EPS,
        "momentum_decay": [Interval(numbers.Real, 0, None)],
    }
    _hyper = ("beta_1", "beta_2", "epsilon", "momentum_decay")

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        *,
        momentum_decay=1.0,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
        on_nonfinite="raise",
        name=None,
    ):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [T.scale_by_nadam(self.beta_1, self.beta_2, self.epsilon, self.momentum_decay), T.scale_by_learning_rate()], False


@registry.register
class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as in Keras 3.

    With ``m`` the slot ``"momentum"`` (zeros at first)::

        w <- w - lr * sign(beta_1 m + (1 - beta_1) g)
        m <- beta_2 m + (1 - beta_2) g

    Every entry moves by ``lr`` (or not at all), so the learning rate is
    typically 3 to 10 times smaller than AdamW's, and ``weight_decay``
    (decoupled, ``w <- w - lr * weight_decay * w``) 3 to 10 times larger,
    for a similar ``lr * weight_decay``. The paper's ``lambda`` is
    ``weight_decay`` here. ``beta_1 = 0`` would make it sign SGD and is
    refused, as in Keras.

    Parameters
    ----------
    learning_rate : float, schedule or callable, default 0.001
    beta_1 : float in (0, 1], default 0.9
        The weight of the momentum in the direction.
    beta_2 : float in [0, 1], default 0.99
        The decay rate of the momentum.
    **kwargs
        ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
        ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
        ``gradient_accumulation_steps``, ``on_nonfinite``, ``name``: see
        :class:`Optimizer`.
    """

    _param_constraints = {
        **Optimizer._param_constraints,
        "beta_1": [Interval(numbers.Real, 0, 1, closed="right")],
        "beta_2": _UNIT,
    }
    _keras_messages = {
        **Optimizer._keras_messages,
        "beta_1": lambda v: ("Argument `beta_1` must be in the [0, 1] range. Otherwise, the optimizer "
                             f"degenerates to SignSGD. Received: beta_1={v}." if v <= 0 or v > 1 else None),
    }
    _hyper = ("beta_1", "beta_2")

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.99,
        *,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
        on_nonfinite="raise",
        name=None,
    ):
        super().__init__(**_args(locals()))

    def _rule(self):
        return [T.scale_by_lion(self.beta_1, self.beta_2), T.scale_by_learning_rate()], False


class ChainOptimizer(Optimizer):
    """Any :func:`normlab.optim.transforms.chain` (a ``GradientTransformation``) as an optimizer.

    ``model.compile(optimizer=chain(...))`` wraps the chain in this class
    with the default learning rate; build it yourself to choose another::

        tx = T.chain(T.clip_by_global_norm(1.0), T.scale_by_adam(), T.scale_by_learning_rate())
        model.compile(optimizer=ChainOptimizer(tx, learning_rate=3e-4), loss=...)

    The learning rate reaches the chain as ``StepInfo.learning_rate`` (read
    by :func:`~normlab.optim.transforms.scale_by_learning_rate`); like any
    optimizer's, it may be a float, a schedule or a callable of the step,
    and it can be changed between steps (learning-rate callbacks work). A
    chain without ``scale_by_learning_rate`` ignores it. The update the
    chain returns is added to the parameters: its links must give steps,
    not gradients (see the sign conventions in
    :mod:`normlab.optim.transforms`).

    The step is the same as for the built-in optimizers: global norm and
    ``on_nonfinite``, then the chain; it runs on one flat buffer per dtype
    when every link is elementwise, and as one fused kernel when the chain
    is an optional clip, a rule, the learning rate, optional momentum and
    optional weight decay. A chain is code, so
    ``get_config`` (and saving a model compiled with one) raises
    ``ValueError``; the state (``get_state``) saves and loads as usual.

    Parameters
    ----------
    transform : GradientTransformation
    learning_rate : float, schedule or callable, default 0.001
        Keras's default for Adam, RMSprop, Nadam and Lion.
    on_nonfinite : {"raise", "skip", "proceed"}, default "raise"
    name : str, optional
    """

    _param_constraints = {
        "learning_rate": Optimizer._param_constraints["learning_rate"],
        "on_nonfinite": Optimizer._param_constraints["on_nonfinite"],
        "name": Optimizer._param_constraints["name"],
    }
    _hyper = ("transform",)

    def __init__(self, transform, learning_rate=0.001, *, on_nonfinite="raise", name=None):
        if not isinstance(transform, T.GradientTransformation):
            raise TypeError(
                f"ChainOptimizer: 'transform' must be a GradientTransformation (from normlab.optim.transforms), "
                f"got {transform!r}."
            )
        object.__setattr__(self, "transform", transform)
        super().__init__(learning_rate=learning_rate, on_nonfinite=on_nonfinite, name=name, weight_decay=None,
                         clipnorm=None, clipvalue=None, global_clipnorm=None)

    def _links(self):
        return [self.transform]

    def get_config(self):
        raise ValueError(
            "ChainOptimizer.get_config: a chain of transforms is code and has no JSON config; use a named "
            "optimizer (normlab.optimizers.Adam, ...) to save a model with its optimizer."
        )

    def __repr__(self):
        return f"ChainOptimizer(learning_rate={self.learning_rate!r}, on_nonfinite={self.on_nonfinite!r})"
