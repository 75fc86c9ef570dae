"""Dropout layers (state only; math in ``kernels.dropout``): Dropout, SpatialDropout1D/2D/3D, AlphaDropout.

Randomness, ``seed``, ``fixed_noise`` and the generator state are those of
every noise layer (:mod:`normlab.layers.regularization`, which re-exports
these classes). ``Dropout(rate, scaling="inference")`` is the notes'
dropout, for teaching (see :class:`Dropout`).
"""

from __future__ import annotations

import numbers

from .._validation import NoneOk, Options, _Constraint, validate_params
from ..kernels import dropout as K
from .regularization import _RATE, _SEED, _NoiseLayer

__all__ = ["Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout"]

#: where dropout's 1/p correction goes: into training ("inverted", Keras) or into inference (the notes)
SCALINGS = ("inverted", "inference")


class _NoiseShape(_Constraint):
    def is_satisfied_by(self, value):
        return isinstance(value, (tuple, list)) and all(
            v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1) for v in value
        )

    def describe(self):
        return "a tuple of positive ints or None entries"

    def invalid_examples(self):
        return [3, (0, 2), ("a",)]


def _config_noise_shape(noise_shape):
    return None if noise_shape is None else [None if d is None else int(d) for d in noise_shape]


class Dropout(_NoiseLayer):
    """Dropout (Srivastava et al. 2014): inverted by default (Keras numerics), or the notes' form.

    Each entry is kept with probability ``p = 1 - rate`` (``m ~ Bernoulli(p)``).
    Where the correction by ``p`` goes is ``scaling``:

    ``"inverted"`` (default, Keras)::

        training:   y = x * m / p        dL/dx = dL/dy * m / p        (E[y] = x)
        inference:  y = x

    ``"inference"`` (the notes, literally)::

        training:   y = x * m            dL/dx = dL/dy * m
        inference:  y = p x

    The notes keep units with probability ``p`` with no scaling in training
    and use the network without dropout at test time with the following
    weights scaled, ``W_test = p W``; scaling the layer's output by ``p`` is
    the same, since ``W (p h) = (p W) h`` (the bias is not scaled in
    either). The two settings give the same family of networks: a network
    with inverted dropout and next-layer weights ``W`` computes, for the
    same mask, exactly what the notes' network with weights ``W / p``
    computes, in training and at inference (:mod:`normlab.kernels.dropout`).
    Only the parametrization differs, and with it the optimizer's steps
    (the gradient of ``W / p`` is ``p`` times that of ``W``), so use
    ``"inference"`` to follow the notes and ``"inverted"`` otherwise.

    Parameters
    ----------
    rate : float in [0, 1)
        Fraction of the inputs dropped; 0 is the identity.
    noise_shape : tuple, optional
        Shape of the mask, broadcast against the input (Keras): ``None``
        entries take the input's size, ones share a draw along that axis
        (``(None, 1, 1, None)`` drops whole channels of an image batch).
    seed : int, optional
        Seeds this layer's generator (see :mod:`normlab.layers.regularization`).
    scaling : {"inverted", "inference"}, default "inverted"
        Keyword only. The config holds it only when it is not the default,
        so that a default Dropout's config stays Keras's (and a ``.keras``
        file refuses ``"inference"``, which Keras lacks).
    **kwargs
        ``name``, ``trainable``, ``dtype`` (see :class:`Layer`).
    """

    _param_constraints = {
        "rate": _RATE,
        "noise_shape": [NoneOk(), _NoiseShape()],
        "seed": _SEED,
        "scaling": [Options(SCALINGS)],
    }

    def __init__(self, rate: float, noise_shape=None, seed: int | None = None, *, scaling: str = "inverted",
                 **kwargs):
        validate_params(
            type(self).__name__,
            {**Dropout._param_constraints, **self._param_constraints},
            {"rate": rate, "noise_shape": noise_shape, "seed": seed, "scaling": scaling},
        )
        super().__init__(seed=seed, **kwargs)
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.scaling = scaling

    def build(self, input_shape):
        if self.noise_shape is not None and len(self.noise_shape) == len(input_shape) and self.noise_shape[0] is not None:
            input_shape = (self.noise_shape[0],) + tuple(input_shape[1:])  # the batch size is not known yet
        self._noise_shape(input_shape)

    def _noise_shape(self, shape):
        try:
            return K.resolve_noise_shape(shape, self.noise_shape)
        except ValueError as exc:
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}): {exc}") from None

    def _active(self):
        return self.rate > 0

    def _draw(self, shape, dtype):
        mask = K.dropout_mask(self._noise_rng(), shape, rate=self.rate, dtype=dtype,
                              inverted=self.scaling == "inverted")
        return mask, None

    def call(self, x, training):
        if training or self.scaling == "inverted":
            return super().call(x, training)
        return K.dropout_inference(x, rate=self.rate, scaling=self.scaling)

    def get_config(self):
        config = {"rate": self.rate, "noise_shape": _config_noise_shape(self.noise_shape), **super().get_config()}
        if self.scaling != "inverted":
            config["scaling"] = self.scaling
        return config


class SpatialDropout2D(Dropout):
    """Dropout of whole feature maps of a 4-D image batch (Tompson et al. 2015).

    One keep/drop decision per (sample, channel), shared over the spatial
    axes: the mask has shape ``(N, 1, 1, C)`` (channels-last) or
    ``(N, C, 1, 1)`` (channels-first); otherwise as :class:`Dropout`. Suits
    convolutional features, whose neighbouring pixels are strongly correlated.

    Parameters
    ----------
    rate : float in [0, 1)
    data_format : {"channels_last", "channels_first"}, optional
        Default channels-last ``(N, H, W, C)``.
    seed : int, optional
    scaling : {"inverted", "inference"}, keyword only
        As :class:`Dropout`.
    """

    min_ndim = 4
    _param_constraints = {
        "rate": _RATE,
        "data_format": [NoneOk(), Options(("channels_last", "channels_first"))],
        "seed": _SEED,
        "scaling": [Options(SCALINGS)],
    }

    def __init__(self, rate: float, data_format: str | None = None, seed: int | None = None, **kwargs):
        validate_params(
            type(self).__name__, self._param_constraints, {"rate": rate, "data_format": data_format, "seed": seed}
        )
        super().__init__(rate, noise_shape=None, seed=seed, **kwargs)
        self.data_format = data_format or "channels_last"

    def check_input_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"Layer {self.name!r} (SpatialDropout2D) expects 4-D input (batch, rows, cols, "
                f"channels) for data_format={self.data_format!r}; got shape {tuple(shape)}."
            )

    def build(self, input_shape):
        self.check_input_shape(input_shape)

    def _noise_shape(self, shape):
        if self.data_format == "channels_last":
            return (shape[0], 1, 1, shape[3])
        return (shape[0], shape[1], 1, 1)

    def get_config(self):
        config = super().get_config()
        del config["noise_shape"]
        return {**config, "data_format": self.data_format}


class SpatialDropout1D(Dropout):
    """Dropout of whole channels of a 3-D sequence batch ``(N, steps, C)`` (Keras ``SpatialDropout1D``).

    One keep/drop decision per (sample, channel), shared over the steps: the
    mask has shape ``(N, 1, C)``; otherwise as :class:`Dropout`. As in Keras
    there is no ``data_format``.

    Parameters
    ----------
    rate : float in [0, 1)
    seed : int, optional
    scaling : {"inverted", "inference"}, keyword only
        As :class:`Dropout`.
    """

    min_ndim = 3
    _param_constraints = {"rate": _RATE, "seed": _SEED, "scaling": [Options(SCALINGS)]}

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"rate": rate, "seed": seed})
        super().__init__(rate, noise_shape=None, seed=seed, **kwargs)

    def check_input_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(
                f"Layer {self.name!r} (SpatialDropout1D) expects 3-D input (batch, steps, channels); "
                f"got shape {tuple(shape)}."
            )

    def build(self, input_shape):
        self.check_input_shape(input_shape)

    def _noise_shape(self, shape):
        return (shape[0], 1, shape[2])

    def get_config(self):
        config = super().get_config()
        del config["noise_shape"]
        return config


class SpatialDropout3D(SpatialDropout2D):
    """Dropout of whole feature volumes of a 5-D batch (Keras ``SpatialDropout3D``).

    The mask has shape ``(N, 1, 1, 1, C)`` (channels-last) or
    ``(N, C, 1, 1, 1)`` (channels-first); otherwise as :class:`SpatialDropout2D`.

    Parameters
    ----------
    rate : float in [0, 1)
    data_format : {"channels_last", "channels_first"}, optional
        Default channels-last ``(N, D, H, W, C)``.
    seed : int, optional
    """

    min_ndim = 5

    def check_input_shape(self, shape):
        if len(shape) != 5:
            raise ValueError(
                f"Layer {self.name!r} (SpatialDropout3D) expects 5-D input (batch, dim1, dim2, dim3, "
                f"channels) for data_format={self.data_format!r}; got shape {tuple(shape)}."
            )

    def _noise_shape(self, shape):
        if self.data_format == "channels_last":
            return (shape[0], 1, 1, 1, shape[4])
        return (shape[0], shape[1], 1, 1, 1)


class AlphaDropout(Dropout):
    """Dropout that keeps the mean and variance of SELU activations (Klambauer et al. 2017).

    Dropped entries are set to ``alpha' = -lambda alpha ~ -1.7581`` (SELU's
    negative saturation value) and the result is corrected affinely::

        y = a (m x + (1 - m) alpha') + b,   m ~ Bernoulli(1 - rate)
        a = ((1 - rate) (1 + rate alpha'^2))^(-1/2),   b = -a rate alpha'

    so that inputs with mean 0 and variance 1 keep mean 0 and variance 1;
    ``dL/dx = dL/dy * a m``. Identity at inference. Use with ``selu``
    activations and ``lecun_normal`` initialization.

    Parameters
    ----------
    rate : float in [0, 1)
    noise_shape : tuple, optional
        As :class:`Dropout`.
    seed : int, optional
    """

    _param_constraints = {"rate": _RATE, "noise_shape": [NoneOk(), _NoiseShape()], "seed": _SEED}

    def __init__(self, rate: float, noise_shape=None, seed: int | None = None, **kwargs):
        if "scaling" in kwargs:  # its affine correction is tied to the inverted form
            raise TypeError("AlphaDropout: unrecognized keyword arguments ['scaling'].")
        super().__init__(rate, noise_shape, seed, **kwargs)

    def _draw(self, shape, dtype):
        return K.alpha_dropout_coefficients(self._noise_rng(), shape, rate=self.rate, dtype=dtype)


