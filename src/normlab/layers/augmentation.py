"""Image augmentation layers (Keras 3 semantics), active only in training.

The layers (``RandomFlip``, ``RandomRotation``,
``RandomTranslation``, ``RandomZoom``) take channels-last image batches
``(N, H, W, C)``, transform each image with its own random parameters when
called with ``training=True``, and are the identity at inference. Labels are
untouched and the order of the images is kept. Their randomness follows
:mod:`normlab.layers.regularization` (``seed``, the model's build generator,
``get_rng_state``/``set_rng_state``, ``fixed_noise``).

Geometric transforms resample the input through an affine map from output to
input pixel coordinates (column ``x``, row ``y``; Keras's projective-transform
convention with ``c0 = c1 = 0``)::

    x_in = a0 x + a1 y + a2,        y_in = b0 x + b1 y + b2

with bilinear or nearest interpolation; points outside the image read, by
``fill_mode`` (input ``a b c d``)::

    reflect   d c b a | a b c d | d c b a    (about the edge of the last pixel)
    wrap      a b c d | a b c d | a b c d
    nearest   a a a a | a b c d | d d d d
    constant  k k k k | a b c d | k k k k    (k = fill_value)

Each output pixel is a fixed linear combination of at most four input pixels
(plus a constant in ``constant`` mode), so the backward pass is the transposed
combination: exact, and cheap (a scatter-add). Augmentation usually sits right
after the input, where a model skips it (``_backward_params_only``).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._validation import Interval, NoneOk, Options, _Constraint, validate_params
from .regularization import _SEED, _RandomLayer

__all__ = ["RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom"]


class _Factor(_Constraint):
    """A float ``f >= 0`` (meaning ``[-f, f]``) or a pair ``(lower, upper)``, within bounds."""

    def __init__(self, low=None, high=None):
        self.low, self.high = low, high

    @staticmethod
    def bounds(value) -> tuple[float, float]:
        if isinstance(value, (list, tuple)):
            return float(value[0]), float(value[1])
        return -float(value), float(value)

    def is_satisfied_by(self, value):
        def real(v):
            return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and np.isfinite(float(v))

        if isinstance(value, (list, tuple)):
            if len(value) != 2 or not all(real(v) for v in value):
                return False
        elif not real(value) or value < 0:
            return False
        lo, hi = self.bounds(value)
        if lo > hi:
            return False
        return (self.low is None or lo >= self.low) and (self.high is None or hi <= self.high)

    def describe(self):
        rng = ""
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            rng = f" within [{lo}, {hi}]"
        return f"a float f >= 0 (the range [-f, f]) or a pair (lower, upper) with lower <= upper{rng}"

    def invalid_examples(self):
        out = ["a string", -0.1, (0.3, 0.1), (0.1,), float("nan")]
        if self.high is not None:
            out.append((0.0, self.high + 0.5))
        if self.low is not None:
            out.append((self.low - 0.5, 0.0))
        return out


_FILL_MODES = ("reflect", "wrap", "constant", "nearest")
_INTERPOLATIONS = ("bilinear", "nearest")


class _Plan(NamedTuple):
    """A resampling as sparse weights: ``y[p] = sum_k weight[k, p] x[index[k, p]] + fill[p] * fill_value``."""

    index: np.ndarray  # (k, N*H*W) flat input pixel of each neighbour
    weight: np.ndarray  # (k, N*H*W), zero for neighbours outside in "constant" mode
    fill: np.ndarray | None  # (N*H*W,) weight of the outside neighbours ("constant" mode)


def _fix_index(i: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Map integer coordinates into ``[0, n)`` by ``mode``; ``constant`` also returns the inside mask."""
    if mode == "constant":
        inside = (i >= 0) & (i < n)
        return np.clip(i, 0, n - 1), inside
    if mode == "nearest":
        return np.clip(i, 0, n - 1), None
    if mode == "wrap":
        return np.mod(i, n), None
    m = np.mod(i, 2 * n)  # reflect: period 2n, half-sample symmetric
    return np.where(m >= n, 2 * n - 1 - m, m), None


def _resample_plan(matrices: np.ndarray, shape: tuple, *, interpolation: str, fill_mode: str, dtype) -> _Plan:
    """Sampling plan of an affine warp of an ``(N, H, W, C)`` batch; ``matrices`` is ``(N, 6)``."""
    n, h, w = shape[:3]
    m = matrices[:, :, None, None]
    cols = np.arange(w, dtype=np.float64)[None, None, :]
    rows = np.arange(h, dtype=np.float64)[None, :, None]
    xin = m[:, 0] * cols + m[:, 1] * rows + m[:, 2]  # (N, H, W)
    yin = m[:, 3] * cols + m[:, 4] * rows + m[:, 5]
    base = (np.arange(n) * (h * w))[:, None, None]
    if interpolation == "nearest":
        taps = [(np.floor(yin + 0.5).astype(np.int64), np.floor(xin + 0.5).astype(np.int64), np.ones_like(xin))]
    else:
        y0, x0 = np.floor(yin), np.floor(xin)
        fy, fx = yin - y0, xin - x0
        y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
        taps = [
            (y0, x0, (1 - fy) * (1 - fx)),
            (y0, x0 + 1, (1 - fy) * fx),
            (y0 + 1, x0, fy * (1 - fx)),
            (y0 + 1, x0 + 1, fy * fx),
        ]
    index = np.empty((len(taps), n * h * w), dtype=np.int64)
    weight = np.empty((len(taps), n * h * w), dtype=np.float64)
    fill = np.zeros(n * h * w, dtype=np.float64) if fill_mode == "constant" else None
    for k, (yi, xi, wk) in enumerate(taps):
        yi, ins_y = _fix_index(yi, h, fill_mode)
        xi, ins_x = _fix_index(xi, w, fill_mode)
        index[k] = (base + yi * w + xi).ravel()
        if fill is not None:
            inside = (ins_y & ins_x).ravel()
            wk = wk.ravel()
            fill += np.where(inside, 0.0, wk)
            weight[k] = np.where(inside, wk, 0.0)
        else:
            weight[k] = wk.ravel()
    return _Plan(index, weight.astype(dtype), None if fill is None else fill.astype(dtype))


def _apply_plan(x: np.ndarray, plan: _Plan, fill_value: float) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1])
    y = plan.weight[0][:, None] * flat[plan.index[0]]
    for k in range(1, len(plan.index)):
        y += plan.weight[k][:, None] * flat[plan.index[k]]
    if plan.fill is not None and fill_value != 0:
        y += (plan.fill * np.asarray(fill_value, dtype=x.dtype))[:, None]
    return y.reshape(x.shape)


def _apply_plan_transpose(dy: np.ndarray, plan: _Plan) -> np.ndarray:
    """``dx = A^T dy`` for the linear part ``A`` of :func:`_apply_plan` (a scatter-add)."""
    c = dy.shape[-1]
    flat = dy.reshape(-1, c)
    idx = plan.index.ravel()
    dx = np.empty_like(flat)
    for j in range(c):
        dx[:, j] = np.bincount(idx, weights=(plan.weight * flat[:, j]).ravel(), minlength=flat.shape[0])
    return dx.reshape(dy.shape)


class _Augmentation(_RandomLayer):
    """Base of the image augmentation layers: rank-4 channels-last input, identity at inference."""

    min_ndim = 4

    def check_input_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) expects channels-last image batches "
                f"(batch, height, width, channels), got shape {tuple(shape)}."
            )

    def build(self, input_shape):
        self.check_input_shape(input_shape)

    def _backward_params_only(self, dy):
        return None


class RandomFlip(_Augmentation):
    """Flip each image horizontally and/or vertically with probability 1/2 (training only).

    ``"horizontal"`` reverses the width axis (left-right), ``"vertical"`` the
    height axis; ``"horizontal_and_vertical"`` draws both independently. A
    flip is its own inverse and transpose, so ``dL/dx`` is ``dL/dy`` flipped
    the same way.

    Parameters
    ----------
    mode : {"horizontal", "vertical", "horizontal_and_vertical"}
    seed : int, optional
    """

    _param_constraints = {
        "mode": [Options(("horizontal", "vertical", "horizontal_and_vertical"))],
        "seed": _SEED,
    }

    def __init__(self, mode: str = "horizontal_and_vertical", seed: int | None = None, **kwargs):
        validate_params(type(self).__name__, self._param_constraints, {"mode": mode, "seed": seed})
        super().__init__(seed=seed, **kwargs)
        self.mode = mode

    def _flip(self, x, flips):
        y = x.copy()
        fh, fv = flips
        if fh is not None and fh.any():
            y[fh] = y[fh][:, :, ::-1]
        if fv is not None and fv.any():
            y[fv] = y[fv][:, ::-1]
        return y

    def call(self, x, training):
        if not training:
            return x
        rng = self._noise_rng()
        n = x.shape[0]
        fh = rng.random(n) < 0.5 if self.mode in ("horizontal", "horizontal_and_vertical") else None
        fv = rng.random(n) < 0.5 if self.mode in ("vertical", "horizontal_and_vertical") else None
        y = self._flip(x, (fh, fv))
        self._cache = (fh, fv)
        self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return self._flip(dy, self._cache)

    def get_config(self):
        return {"mode": self.mode, **super().get_config()}


class _AffineAugmentation(_Augmentation):
    """An augmentation that warps each image by a random affine map (see the module docstring)."""

    def __init__(self, fill_mode, interpolation, seed, fill_value, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.fill_mode = fill_mode
        self.interpolation = interpolation
        self.fill_value = float(fill_value)

    def _matrices(self, rng, n, h, w) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def call(self, x, training):
        if not training:
            return x
        n, h, w = x.shape[:3]
        mats = self._matrices(self._noise_rng(), n, h, w)
        plan = _resample_plan(mats, x.shape, interpolation=self.interpolation, fill_mode=self.fill_mode, dtype=x.dtype)
        y = _apply_plan(x, plan, self.fill_value)
        self._cache = plan
        self._out_shape = y.shape
        return y

    def _backward(self, dy):
        return _apply_plan_transpose(dy, self._cache)

    def get_config(self):
        return {
            "fill_mode": self.fill_mode,
            "interpolation": self.interpolation,
            "fill_value": self.fill_value,
            **super().get_config(),
        }


_AFFINE_CONSTRAINTS = {
    "fill_mode": [Options(_FILL_MODES)],
    "interpolation": [Options(_INTERPOLATIONS)],
    "seed": _SEED,
    "fill_value": [Interval(numbers.Real, None, None)],
}


class RandomRotation(_AffineAugmentation):
    """Rotate each image about its centre by a random angle (training only).

    The angle is ``2 pi u`` with ``u ~ U(lower, upper)``: ``factor`` is a
    fraction of a full turn, ``factor=0.1`` meaning ``[-36, 36]`` degrees;
    positive angles rotate counter-clockwise. Output pixel ``(x, y)`` reads
    the input at (Keras's matrix, centre ``((W-1)/2, (H-1)/2)``)::

        x_in = cos(t) x - sin(t) y + x_off,   y_in = sin(t) x + cos(t) y + y_off

    Parameters
    ----------
    factor : float >= 0 or (lower, upper)
        A float ``f`` means ``(-f, f)``.
    fill_mode : {"reflect", "wrap", "constant", "nearest"}, default "reflect"
    interpolation : {"bilinear", "nearest"}, default "bilinear"
    seed : int, optional
    fill_value : float, default 0.0
        Used with ``fill_mode="constant"``.
    """

    _param_constraints = {"factor": [_Factor()], **_AFFINE_CONSTRAINTS}

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        args = {"factor": factor, "fill_mode": fill_mode, "interpolation": interpolation, "seed": seed, "fill_value": fill_value}
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.factor = _factor_attr(factor)

    def _matrices(self, rng, n, h, w):
        lo, hi = _Factor.bounds(self.factor)
        t = rng.uniform(lo, hi, size=n) * (2 * np.pi)
        c, s = np.cos(t), np.sin(t)
        x_off = ((w - 1) - (c * (w - 1) - s * (h - 1))) / 2.0
        y_off = ((h - 1) - (s * (w - 1) + c * (h - 1))) / 2.0
        return np.stack([c, -s, x_off, s, c, y_off], axis=1)

    def get_config(self):
        return {"factor": _factor_config(self.factor), **super().get_config()}


class RandomTranslation(_AffineAugmentation):
    """Shift each image by a random fraction of its size (training only).

    ``dy = u H``, ``u ~ U(height lower, upper)`` and ``dx = v W``,
    ``v ~ U(width lower, upper)``; positive values shift down and right::

        x_in = x - dx,    y_in = y - dy

    Parameters
    ----------
    height_factor, width_factor : float in [0, 1] or (lower, upper) in [-1, 1]
        A float ``f`` means ``(-f, f)``.
    fill_mode, interpolation, seed, fill_value
        As :class:`RandomRotation`.
    """

    _param_constraints = {
        "height_factor": [_Factor(-1.0, 1.0)],
        "width_factor": [_Factor(-1.0, 1.0)],
        **_AFFINE_CONSTRAINTS,
    }

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        args = {"height_factor": height_factor, "width_factor": width_factor, "fill_mode": fill_mode,
                "interpolation": interpolation, "seed": seed, "fill_value": fill_value}
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_factor = _factor_attr(height_factor)
        self.width_factor = _factor_attr(width_factor)

    def _matrices(self, rng, n, h, w):
        dy = rng.uniform(*_Factor.bounds(self.height_factor), size=n) * h
        dx = rng.uniform(*_Factor.bounds(self.width_factor), size=n) * w
        one, zero = np.ones(n), np.zeros(n)
        return np.stack([one, zero, -dx, zero, one, -dy], axis=1)

    def get_config(self):
        return {"height_factor": _factor_config(self.height_factor), "width_factor": _factor_config(self.width_factor),
                **super().get_config()}


class RandomZoom(_AffineAugmentation):
    """Zoom each image in or out about its centre by a random factor (training only).

    Zoom ``z_h = 1 + u``, ``u ~ U(height lower, upper)`` (and ``z_w`` likewise,
    or ``z_w = z_h`` when ``width_factor`` is None, keeping the aspect ratio).
    Positive values zoom *out* (Keras: ``height_factor=(0.2, 0.3)`` shows
    20-30% more of the scene), negative values zoom in::

        x_in = z_w x + (W - 1) / 2 (1 - z_w),   y_in = z_h y + (H - 1) / 2 (1 - z_h)

    Parameters
    ----------
    height_factor : float in [0, 1] or (lower, upper) with lower >= -1
    width_factor : same, optional
    fill_mode, interpolation, seed, fill_value
        As :class:`RandomRotation`.
    """

    _param_constraints = {
        "height_factor": [_Factor(-1.0, None)],
        "width_factor": [NoneOk(), _Factor(-1.0, None)],
        **_AFFINE_CONSTRAINTS,
    }

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        args = {"height_factor": height_factor, "width_factor": width_factor, "fill_mode": fill_mode,
                "interpolation": interpolation, "seed": seed, "fill_value": fill_value}
        validate_params(type(self).__name__, self._param_constraints, args)
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_factor = _factor_attr(height_factor)
        self.width_factor = None if width_factor is None else _factor_attr(width_factor)

    def _matrices(self, rng, n, h, w):
        zh = 1.0 + rng.uniform(*_Factor.bounds(self.height_factor), size=n)
        zw = zh if self.width_factor is None else 1.0 + rng.uniform(*_Factor.bounds(self.width_factor), size=n)
        zero = np.zeros(n)
        return np.stack([zw, zero, (w - 1) / 2.0 * (1 - zw), zero, zh, (h - 1) / 2.0 * (1 - zh)], axis=1)

    def get_config(self):
        wf = None if self.width_factor is None else _factor_config(self.width_factor)
        return {"height_factor": _factor_config(self.height_factor), "width_factor": wf, **super().get_config()}


def _factor_attr(f):
    return _Factor.bounds(f) if isinstance(f, (list, tuple)) else float(f)


def _factor_config(f):
    return list(f) if isinstance(f, tuple) else f
