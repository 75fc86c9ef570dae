"""The Circle loss (Sun et al., 2020), as Keras 3 computes it: metric learning on L2-normalized embeddings.

For embeddings ``p_i`` (``y_pred``, rows normalized by the caller) with
integer labels, and references ``r_j`` (the same batch unless given):

    D_ij = max(1 - p_i . r_j, 0)                    (cosine distance)
    positive pairs: same label (i != j with remove_diagonal); negative: other labels
    z+_ij = -gamma max(m + D_ij, 0) (m - D_ij)        over the positive pairs
    z-_ij =  gamma max(1 + m - D_ij, 0) (1 - m - D_ij) over the negative pairs
    L_i = softplus(logsumexp_j z+_ij + logsumexp_j z-_ij)

A sample with no positive pair has ``L_i = 0`` and, as Keras's mask, does
not count in the mean (``"sum_over_batch_size"`` averages over the samples
with ``L_i > 0``). Every ``L_i`` depends on the whole batch, so the
gradient is that of the reduced value, computed directly (with
``G_ij = dL/dD_ij``, ``H = -G [1 - p . r > 0]``, the gradient is
``H R + H^T P`` when the references are the batch itself).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Boolean, Interval, validate_params
from ._base import Loss, registry


def _logsumexp_masked(z, mask):
    """Row-wise ``logsumexp`` over ``mask`` (``-inf`` for an empty row) and its softmax weights."""
    zm = np.where(mask, z, -np.inf)
    top = zm.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(mask, np.exp(zm - top), 0.0)
    s = e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.where(s[:, 0] > 0, np.log(s[:, 0]) + top[:, 0], -np.inf)
        soft = np.where(s > 0, e / s, 0.0)
    return lse, soft


def _circle_parts(labels, p, ref_labels, ref, remove_diagonal, gamma, margin):
    s = p @ ref.T
    d = np.maximum(1.0 - s, 0.0)
    pos = labels[:, None] == ref_labels[None, :]
    neg = ~pos
    if remove_diagonal:
        pos = pos & ~np.eye(len(labels), len(ref_labels), dtype=bool)
    wp = np.maximum((margin + d) * pos, 0.0)
    wn = np.maximum((1.0 + margin - d) * neg, 0.0)
    zp = -gamma * wp * (margin - d)
    zn = gamma * wn * (1.0 - margin - d)
    lp, sp = _logsumexp_masked(zp, pos)
    ln, sn = _logsumexp_masked(zn, neg)
    a = lp + ln
    values = np.logaddexp(0.0, a)  # softplus; 0 where a row has no positive (a = -inf)
    # dL_i / dD_ij
    dzp = -gamma * ((margin + d > 0) * pos * (margin - d) - wp)
    dzn = -gamma * (((1.0 + margin - d > 0) & neg) * (1.0 - margin - d) + wn)
    with np.errstate(over="ignore", invalid="ignore"):
        sig = np.where(np.isfinite(a), 1.0 / (1.0 + np.exp(-a)), 0.0)
    g = sig[:, None] * (sp * dzp + sn * dzn)
    return values, g, (1.0 - s > 0)


def circle(y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80, margin=0.4):
    """Keras's ``losses.circle``: one Circle loss value per sample of ``y_pred`` (see the module docstring)."""
    p = np.asarray(y_pred)
    p = p if p.dtype.kind == "f" else p.astype(np.float32)
    labels = np.asarray(y_true).reshape(-1).astype(np.int64)
    ref = p if ref_embeddings is None else np.asarray(ref_embeddings, dtype=p.dtype)
    ref_labels = labels if ref_labels is None else np.asarray(ref_labels).reshape(-1).astype(np.int64)
    values = _circle_parts(labels, p.astype(np.float64), ref_labels, ref.astype(np.float64), remove_diagonal,
                           float(gamma), float(margin))[0]
    return values.astype(p.dtype)


@registry.register(aliases=("circle",))
class Circle(Loss):
    """The Circle loss on L2-normalized embeddings with integer labels (see the module docstring)."""

    default_name = "circle"
    _param_constraints = {
        **{k: v for k, v in Loss._param_constraints.items() if k != "from_logits"},
        "gamma": [Interval(numbers.Real, 0, None, closed="neither")],
        "margin": [Interval(numbers.Real, None, None)],
        "remove_diagonal": [Boolean()],
    }

    def __init__(self, gamma=80.0, margin=0.4, remove_diagonal=True, reduction="sum_over_batch_size", name=None,
                 dtype=None):
        validate_params("Circle", {k: self._param_constraints[k] for k in ("gamma", "margin", "remove_diagonal")},
                        {"gamma": gamma, "margin": margin, "remove_diagonal": remove_diagonal})
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma, self.margin, self.remove_diagonal = float(gamma), float(margin), bool(remove_diagonal)

    @property
    def _plain(self) -> bool:
        return False  # the values depend on the whole batch: always the direct weighted path

    def prepare_targets(self, y_true, y_pred_shape, *, who=""):
        who = who or "Circle"
        y = np.asarray(y_true)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if len(y_pred_shape) != 2 or y.shape != (y_pred_shape[0],):
            raise ValueError(f"{who}: 'y' must hold one integer label per embedding (shape ({y_pred_shape[0]},)) "
                             f"for embeddings of shape {tuple(y_pred_shape)}; got {y.shape}.")
        if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.array_equal(y, np.round(y))):
            raise ValueError(f"{who}: 'y' must hold integer labels.")
        return y.astype(np.int64)

    def _parts(self, y, out):
        return _circle_parts(y, np.asarray(out, np.float64), y, np.asarray(out, np.float64), self.remove_diagonal,
                             self.gamma, self.margin)

    def _elements(self, y, out, logits):
        return self._parts(y, out)[0]

    def _coefficients(self, values, sample_weight):
        """Each value's factor in the reduced loss (Keras's mask of ``L > 0`` and its reduction)."""
        n = values.size
        mask = (values > 0).astype(np.float64)
        if self.reduction in ("sum_over_batch_size", "mean"):
            valid = mask.sum()
            mask = mask * (n / valid) if valid else mask
        w = mask if sample_weight is None else mask * np.asarray(sample_weight, np.float64).reshape(-1)
        if self.reduction == "sum":
            return w
        if self.reduction == "mean_with_sample_weight":
            total = w.sum()
            return w / total if total else w * 0.0
        return w / n

    def weighted_value(self, y, out, sample_weight=None, *, logits=None):
        values = self._elements(y, out, False)
        return float(np.sum(values * self._coefficients(values, sample_weight)))

    def weighted_value_and_gradient(self, y, out, sample_weight=None, *, logits=None):
        p = np.asarray(out, np.float64)
        values, g, active = self._parts(y, p)
        c = self._coefficients(values, sample_weight)
        h = -(c[:, None] * g) * active
        grad = h @ p + h.T @ p
        return float(np.sum(values * c)), grad.astype(out.dtype if out.dtype.kind == "f" else np.float64)

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = self._cast(y_true, y_pred)
        y = self.prepare_targets(y_true, y_pred.shape)
        if self.reduction in ("none", None):
            values = self._elements(y, y_pred, False)
            w = (values > 0).astype(np.float64)
            if sample_weight is not None:
                w = w * np.asarray(sample_weight, np.float64).reshape(-1)
            return self._result(values * w)
        return self._result(self.weighted_value(y, y_pred, sample_weight))

    def value(self, y, p):
        return self.weighted_value(y, p)

    def gradient_wrt_output(self, y, p):
        return self.weighted_value_and_gradient(y, p)[1]

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, **self._dtype_config(), "gamma": self.gamma,
                "margin": self.margin, "remove_diagonal": self.remove_diagonal}
