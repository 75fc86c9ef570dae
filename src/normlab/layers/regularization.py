"""Noise layers: their shared bases, Gaussian noise, noisy weights (state only; math in ``kernels.dropout``).

The dropout layers (Dropout, SpatialDropout1D/2D/3D, AlphaDropout) are in
:mod:`normlab.layers.dropout` and re-exported here.

Every layer here is the identity at inference and draws fresh noise at each
call with ``training=True``; ``backward`` reuses the noise of the last training
call. Randomness: each layer owns a :class:`numpy.random.Generator` created
when it is built, from

1. ``seed`` if given: ``np.random.default_rng(seed)``;
2. else the model's build generator (``model.fit(..., seed=s)`` or
   ``model.build(shape, seed=s)``), from which a child stream is *spawned*
   (spawning draws nothing, so adding a dropout layer does not change the
   other layers' initial weights);
3. else fresh OS entropy.

``get_rng_state()`` / ``set_rng_state(state)`` read and write the generator's
bit-generator state as a JSON-serializable dict, so that a saved model resumes
bit for bit. For gradient checks, ``with layer.fixed_noise(): ...`` makes
every training call in the block draw the same noise. Noise is drawn in the
layer's dtype, so a float32 and a float64 layer with the same seed draw
different masks.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import NamedTuple

import numpy as np
from ..utils import _random

from .. import activations as _activations
from .. import regularizers as _regularizers
from .._validation import Boolean, Instance, Interval, NoneOk, Options, validate_params
from ..kernels import dropout as K
from ._activated import ActivatedLinear
from .base import Layer

__all__ = [
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "AlphaDropout",
    "GaussianNoise",
    "GaussianDropout",
    "NoisyDense",
]

_SEED = [NoneOk(), Interval(numbers.Integral, 0, None)]
_RATE = [Interval(numbers.Real, 0, 1, closed="left")]
_REG = [NoneOk(), str, dict, Instance(_regularizers.Regularizer)]
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    return value


def _spawn(parent: np.random.Generator) -> np.random.Generator:
    """A child stream of ``parent`` that consumes none of its draws."""
    bg = parent.bit_generator
    seq = getattr(bg, "seed_seq", None) or getattr(bg, "_seed_seq", None)  # public from NumPy 1.25
    if isinstance(seq, np.random.SeedSequence):
        return np.random.Generator(type(bg)(seq.spawn(1)[0]))
    return np.random.default_rng(int(parent.integers(2**63)))  # no SeedSequence: take one draw


class _RandomLayer(Layer):
    """Base of the layers that draw random numbers when called in training.

    Subclasses take ``seed`` and get their generator from :meth:`_noise_rng`.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = None if seed is None else int(seed)
        self._rng: np.random.Generator | None = None
        self._frozen = False
        self._frozen_state: dict | None = None

    def _ensure_built(self, x, rng=None):
        if self.built:
            return
        super()._ensure_built(x, rng)
        self._init_rng(rng)

    def _init_rng(self, parent: np.random.Generator | None) -> None:
        child = _spawn(parent) if parent is not None else None  # spawned even if unused: stable streams
        if self._rng is not None:  # set_rng_state() came first
            return
        if self.seed is not None:
            self._rng = np.random.default_rng(self.seed)
        else:
            self._rng = child if child is not None else _random.default_rng()

    def _begin_step(self, stamp):
        # a failed step must not have advanced the generator (see Layer._begin_step)
        self._undo = (stamp, None if self._rng is None else self._rng.bit_generator.state)

    def _rollback(self, stamp):
        undo = getattr(self, "_undo", None)
        if undo is None or undo[0] != stamp:
            return
        if undo[1] is None:
            self._rng = None
        else:
            self._rng.bit_generator.state = undo[1]

    def _noise_rng(self) -> np.random.Generator:
        """The generator for this call's noise (rewound inside :meth:`fixed_noise`)."""
        if self._rng is None:
            self._init_rng(None)
        if self._frozen:
            if self._frozen_state is None:
                self._frozen_state = self._rng.bit_generator.state
            else:
                self._rng.bit_generator.state = self._frozen_state
        return self._rng

    @contextlib.contextmanager
    def fixed_noise(self):
        """Context manager: every training call inside draws the same noise.

        The generator's state is recorded at the first draw in the block and
        restored before each later draw, so the layer is a fixed function of
        its input and parameters (what a central-difference gradient check
        needs)::

            with layer.fixed_noise():
                normlab.testing.check_layer_gradients(layer, x)

        On exit the generator is left after one draw, as if a single training
        call had been made.
        """
        self._frozen, self._frozen_state = True, None
        try:
            yield self
        finally:
            self._frozen, self._frozen_state = False, None

    def get_rng_state(self) -> dict | None:
        """The generator's bit-generator state (JSON-serializable); ``None`` before it exists."""
        if self._rng is None:
            return None
        return _jsonable(self._rng.bit_generator.state)

    def set_rng_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_rng_state` (creating the generator if needed)."""
        name = state.get("bit_generator") if isinstance(state, dict) else None
        if name not in _BIT_GENERATORS:
            raise ValueError(
                f"Layer {self.name!r}: set_rng_state expects a dict from get_rng_state() with "
                f"'bit_generator' one of {', '.join(_BIT_GENERATORS)}; got {state!r}."
            )
        bg = getattr(np.random, name)()
        try:
            bg.state = state
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"Layer {self.name!r}: set_rng_state got an invalid generator state ({exc!r}).") from None
        self._rng = np.random.Generator(bg)

    def get_config(self):
        return {"seed": self.seed, **super().get_config()}


class _NoiseLayer(_RandomLayer):
    """An elementwise noise layer: ``y = x * s + t`` in training (``kernels.dropout``, eq. 1)."""

    def _active(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def _draw(self, shape: tuple, dtype) -> tuple[np.ndarray | None, np.ndarray | None]:  # pragma: no cover
        raise NotImplementedError

    def _noise_shape(self, shape: tuple) -> tuple:
        return tuple(shape)

    def call(self, x, training):
        if not training:
            return x
        if self._active():
            scale, shift = self._draw(self._noise_shape(x.shape), x.dtype)
            y, cache = K.noise_forward(x, scale=scale, shift=shift)
        else:
            y, cache = x, K.NoiseCache(None)
        self._cache = cache
        self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return K.noise_backward(dy, self._cache)


class GaussianNoise(_NoiseLayer):
    """Additive zero-centred Gaussian noise (a regularizer and a form of data augmentation).

    In training ``y = x + n`` with ``n ~ N(0, stddev^2)`` drawn per entry and
    ``dL/dx = dL/dy``; at inference ``y = x``.

    Parameters
    ----------
    stddev : float >= 0
        Standard deviation of the noise; 0 is the identity.
    seed : int, optional
    """

    _param_constraints = {"stddev": [Interval(numbers.Real, 0, None)], "seed": _SEED}

    def __init__(self, stddev: float, seed: int | None = None, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"stddev": stddev, "seed": seed})
        super().__init__(seed=seed, **kwargs)
        self.stddev = float(stddev)

    def _active(self):
        return self.stddev > 0

    def _draw(self, shape, dtype):
        return None, K.gaussian_noise(self._noise_rng(), shape, stddev=self.stddev, dtype=dtype)

    def get_config(self):
        return {"stddev": self.stddev, **super().get_config()}


class GaussianDropout(_NoiseLayer):
    """Multiplicative Gaussian noise with dropout's mean and variance (Srivastava et al. 2014).

    In training ``y = x * g`` with ``g ~ N(1, rate / (1 - rate))`` per entry
    and ``dL/dx = dL/dy * g``; at inference ``y = x``.

    Parameters
    ----------
    rate : float in [0, 1)
        The dropout rate whose variance is matched; 0 is the identity.
    seed : int, optional
    """

    _param_constraints = {"rate": _RATE, "seed": _SEED}

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"rate": rate, "seed": seed})
        super().__init__(seed=seed, **kwargs)
        self.rate = float(rate)

    def _active(self):
        return self.rate > 0

    def _draw(self, shape, dtype):
        return K.gaussian_dropout_factor(self._noise_rng(), shape, rate=self.rate, dtype=dtype), None

    def get_config(self):
        return {"rate": self.rate, **super().get_config()}


class _NoisyDenseCache(NamedTuple):
    k: K.NoisyDenseCache
    z: np.ndarray
    a: np.ndarray


class NoisyDense(ActivatedLinear, _RandomLayer):
    """Dense layer with learnable Gaussian noise on its weights (Fortunato et al. 2017).

    In training every weight is ``w = mu + sigma * eps`` with fresh noise
    ``eps`` at each call; at inference ``w = mu``::

        y = activation(x (mu_kernel + sigma_kernel * eps_kernel) + (mu_bias + sigma_bias * eps_bias))

    With factorized noise (the default) ``eps_kernel = f(e_in) f(e_out)^T``,
    ``eps_bias = f(e_out)``, ``f(e) = sign(e) sqrt(|e|)``, ``e ~ N(0, I)``;
    otherwise every ``eps`` is an independent N(0, 1) draw. The gradients
    (``dW``, ``db`` those of a dense layer with the effective weights)::

        dmu_kernel = dW,   dsigma_kernel = dW * eps_kernel,   dmu_bias = db,   dsigma_bias = db * eps_bias

    Parameters
    ----------
    units : int
    activation : str or None, default None
    use_bias : bool, default True
    sigma : float >= 0, default 0.5
        ``sigma_0`` of the paper: with factorized noise, ``sigma_kernel`` and
        ``sigma_bias`` start at ``sigma / sqrt(n_in)`` and ``mu`` is drawn from
        ``U(-1/sqrt(n_in), 1/sqrt(n_in))``; with independent noise they start
        at 0.017 and ``mu ~ U(-sqrt(3/n_in), sqrt(3/n_in))`` (the paper's and
        Keras's choices; ``sigma`` is then unused).
    use_factorised : bool, default True
    seed : int, optional
        Seeds the noise only (the initial weights come from the model's
        build generator, as for every layer).
    kernel_regularizer, bias_regularizer : optional
        Applied to both ``mu`` and ``sigma`` of the kernel (bias), as in Keras.

    Notes
    -----
    Parameters: ``mu_kernel``, ``sigma_kernel`` (``(n_in, units)``) and
    ``mu_bias``, ``sigma_bias`` (``(units,)``). Unlike ``tf.keras``'s
    NoisyDense, whose noise stays on at inference unless
    ``remove_noise=True``, noise here follows the ``training`` flag, like
    every noise layer (for exploration in reinforcement learning, call with
    ``training=True``). Math: :mod:`normlab.kernels.dropout`.
    """

    min_ndim = 2
    _param_constraints = {
        "units": [Interval(numbers.Integral, 1, None)],
        "activation": [NoneOk(), Options(tuple(_activations.names()))],
        "use_bias": [Boolean()],
        "sigma": [Interval(numbers.Real, 0, None)],
        "use_factorised": [Boolean()],
        "seed": _SEED,
        "kernel_regularizer": _REG,
        "bias_regularizer": _REG,
    }

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        use_bias: bool = True,
        sigma: float = 0.5,
        use_factorised: bool = True,
        seed: int | None = None,
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        args = dict(locals())
        args.pop("self"), args.pop("kwargs"), args.pop("__class__", None)
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(seed=seed, **kwargs)
        self.units = int(units)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.sigma = float(sigma)
        self.use_factorised = bool(use_factorised)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self._act = _activations.get(activation)

    def build(self, input_shape):
        n_in = int(input_shape[-1])
        if n_in < 1:
            raise ValueError(f"Layer {self.name!r} (NoisyDense): the last input axis is empty.")
        if self.use_factorised:
            bound, sigma0 = n_in**-0.5, self.sigma * n_in**-0.5
        else:
            bound, sigma0 = (3.0 / n_in) ** 0.5, 0.017
        mu_init = {"class_name": "RandomUniform", "config": {"minval": -bound, "maxval": bound}}
        sigma_init = {"class_name": "Constant", "config": {"value": sigma0}}
        self.add_weight("mu_kernel", (n_in, self.units), mu_init, self.kernel_regularizer)
        self.add_weight("sigma_kernel", (n_in, self.units), sigma_init, self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("mu_bias", (self.units,), mu_init, self.bias_regularizer)
            self.add_weight("sigma_bias", (self.units,), sigma_init, self.bias_regularizer)

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        n_in = self.params["mu_kernel"].shape[0]
        if shape[-1] != n_in:
            raise ValueError(
                f"Layer {self.name!r} (NoisyDense) was built for {n_in} input features "
                f"(last axis), got input of shape {tuple(shape)}."
            )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x, training):
        p = self.params
        eps_k = eps_b = None
        if training:
            draw = K.factorized_noise if self.use_factorised else K.independent_noise
            eps_k, eps_b = draw(self._noise_rng(), p["mu_kernel"].shape[0], self.units, dtype=self.dtype)
        z, kcache = K.noisy_dense_forward(
            x, p["mu_kernel"], p["sigma_kernel"], p.get("mu_bias"), p.get("sigma_bias"),
            eps_kernel=eps_k, eps_bias=eps_b if self.use_bias else None,
        )
        a = self._act.forward(z)
        if training:
            self._cache = _NoisyDenseCache(kcache, z, a)
            self._out_shape = a.shape
        return a

    def _linear_backward(self, dz, need_dx: bool):
        dx, grads = K.noisy_dense_backward(dz, self._cache.k, need_dx=need_dx, need_param_grads=self._trainable)
        for key, g in grads.items():
            if key in self.grads:
                self._accumulate_grad(key, g)
        return dx

    def get_config(self):
        return {
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "sigma": self.sigma,
            "use_factorised": self.use_factorised,
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
            **super().get_config(),
        }


# the dropout layers live in their own module; imported here (after the bases they build on) so that
# ``normlab.layers.regularization`` keeps exporting them
from .dropout import AlphaDropout, Dropout, SpatialDropout1D, SpatialDropout2D, SpatialDropout3D  # noqa: E402
