"""MNIST-1D, generated procedurally (nothing is downloaded or cached).

MNIST-1D (Greydanus, "Scaling down deep learning", 2020) turns ten hand-made
1-D templates of the digits into 40-sample signals through a fixed chain of
random transformations. With the published defaults, logistic regression
reaches about 32 % test accuracy, an MLP about 68 % and a CNN about 94 %:
small enough to train in seconds on a CPU, yet it separates model families
the way MNIST no longer does.

The chain, applied to each template (length 12) in turn:

1. pad with ``p ~ U{padding[0], ..., padding[1]}`` zeros on the right;
2. dilate: resample linearly to ``12 + padding[1]`` (= 72) points;
3. scale by ``1 + scale_coeff * (u - 1/2)``, ``u ~ U[0, 1)``;
4. translate: roll right by ``k ~ U{0, ..., max_translation - 1}``;
5. correlated noise: where the signal is exactly zero (the padding), put
   Gaussian noise of scale ``corr_noise_scale`` smoothed by a Gaussian
   filter of width 2 (reflecting edges);
6. i.i.d. noise: add Gaussian noise of scale ``iid_noise_scale``;
7. shear: subtract ``shear_scale * (u - 1/2) * linspace(-1/2, 1/2, 72)``;
8. resample linearly to ``final_seq_length`` (= 40) points.

``num_samples / 10`` signals are made per class, shuffled, standardized with
the mean and standard deviation of the whole set, and split in order.

Random numbers come from a legacy ``numpy.random.RandomState(seed)``, drawn in
the order of the reference implementation (github.com/greydanus/mnist1d), so
that ``load_mnist1d()`` reproduces the published dataset (seed 42) to floating
point rounding rather than a look-alike. It is a private instance: global
NumPy random state is neither read nor changed.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Interval, InvalidParameterError, validate_params
from ._common import SEED, as_split

__all__ = ["load_mnist1d"]

# The ten 1-D digit templates of the paper (12 points each).
_RAW_TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ]
)
_NUM_CLASSES = 10
_SMOOTH_SIGMA = 2.0
# Offset added before padding, so that the template is never mistaken for
# padding by the "exactly zero" mask of step 5.
_EPS = 1e-8


def _templates() -> np.ndarray:
    t = _RAW_TEMPLATES - _RAW_TEMPLATES.mean(axis=1, keepdims=True)
    t /= t.std(axis=1, keepdims=True)
    t -= t[:, :1]  # every signal starts (and, by design, ends) at 0
    return t / 6.0


def _resample(x: np.ndarray, lengths: np.ndarray, n_out: int) -> np.ndarray:
    """Linearly resample row ``i`` of ``x`` (its first ``lengths[i]`` points,
    on a uniform grid over [0, 1]) to ``n_out`` uniform points over [0, 1]."""
    rows = np.arange(len(x))[:, None]
    pos = np.linspace(0.0, 1.0, n_out)[None, :] * (lengths[:, None] - 1)
    left = np.minimum(np.floor(pos).astype(np.intp), lengths[:, None] - 2)
    frac = pos - left
    lo, hi = x[rows, left], x[rows, left + 1]
    return lo + (hi - lo) * frac


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along the last axis, radius ``4 sigma``, mirrored edges
    (the edge sample is repeated: d c b a | a b c d | d c b a)."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(radius, radius)], mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=-1)
    return windows @ kernel


def _generate(
    *, num_samples, padding, scale_coeff, max_translation, corr_noise_scale,
    iid_noise_scale, shear_scale, final_seq_length, seed,
):
    templates = _templates()
    n_tpl = templates.shape[1]
    per_class = num_samples // _NUM_CLASSES
    n = per_class * _NUM_CLASSES
    low, high = padding
    width = n_tpl + high  # length after dilation

    # Draw every random number first, per sample, in the reference order.
    rs = np.random.RandomState(seed)
    u_pad = np.empty(n)
    u_scale = np.empty(n)
    shift = np.empty(n, dtype=np.intp)
    corr = np.empty((n, width))
    iid = np.empty((n, width))
    u_shear = np.empty(n)
    for i in range(n):
        u_pad[i] = rs.random_sample()
        u_scale[i] = rs.random_sample()
        shift[i] = rs.randint(max_translation)
        corr[i] = rs.standard_normal(width)
        iid[i] = rs.standard_normal(width)
        u_shear[i] = rs.random_sample()
    order = rs.permutation(n)

    # Then transform all samples at once.
    labels = np.repeat(np.arange(_NUM_CLASSES), per_class)
    pad = low + (u_pad * (high - low + 1)).astype(np.intp)
    x = np.zeros((n, width))
    x[:, :n_tpl] = templates[labels] + _EPS  # 1. pad (zeros to the right)
    x = _resample(x, n_tpl + pad, width)  # 2. dilate
    x *= (1.0 + scale_coeff * (u_scale - 0.5))[:, None]  # 3. scale
    cols = (np.arange(width)[None, :] - shift[:, None]) % width
    x = np.take_along_axis(x, cols, axis=1)  # 4. translate
    noise = _gaussian_smooth(corr_noise_scale * corr, _SMOOTH_SIGMA)
    x = np.where(x != 0, x, noise)  # 5. correlated noise on the padding
    x += iid_noise_scale * iid  # 6. i.i.d. noise
    ramp = np.linspace(-0.5, 0.5, width)
    x -= (shear_scale * (u_shear - 0.5))[:, None] * ramp  # 7. shear
    x = _resample(x, np.full(n, width), final_seq_length)  # 8. subsample

    x, labels = x[order], labels[order]
    x = (x - x.mean()) / x.std()
    return x, labels


_CONSTRAINTS = {
    "num_samples": [Interval(numbers.Integral, 20, None)],
    "train_split": [Interval(numbers.Real, 0, 1, closed="neither")],
    "scale_coeff": [Interval(numbers.Real, 0, 2, closed="left")],
    "max_translation": [Interval(numbers.Integral, 1, None)],
    "corr_noise_scale": [Interval(numbers.Real, 0, None)],
    "iid_noise_scale": [Interval(numbers.Real, 0, None)],
    "shear_scale": [Interval(numbers.Real, 0, None)],
    "final_seq_length": [Interval(numbers.Integral, 2, None)],
    "seed": [SEED],
}


def load_mnist1d(
    *,
    num_samples=5000,
    train_split=0.8,
    padding=(36, 60),
    scale_coeff=0.4,
    max_translation=48,
    corr_noise_scale=0.25,
    iid_noise_scale=2e-2,
    shear_scale=0.75,
    final_seq_length=40,
    seed=42,
):
    """Generate MNIST-1D with the published default arguments.

    Parameters
    ----------
    num_samples : int, default=5000
        Total number of signals, a multiple of 10 (the same number per class).
    train_split : float, default=0.8
        Fraction of the (shuffled) signals put in the training set; the first
        ``int(num_samples * train_split)`` are training signals.
    padding : tuple of two ints, default=(36, 60)
        Inclusive range of the number of zeros appended to each 12-point
        template before it is dilated to ``12 + padding[1]`` points.
    scale_coeff : float, default=0.4
        Amplitude is scaled by a factor in ``[1 - scale_coeff/2, 1 + scale_coeff/2)``.
    max_translation : int, default=48
        Circular shifts of 0 to ``max_translation - 1`` points.
    corr_noise_scale : float, default=0.25
        Scale of the smoothed Gaussian noise that fills the padding.
    iid_noise_scale : float, default=0.02
        Scale of the i.i.d. Gaussian noise added everywhere.
    shear_scale : float, default=0.75
        A linear trend of slope in ``[-shear_scale/2, shear_scale/2)`` is added.
    final_seq_length : int, default=40
        Length of the returned signals.
    seed : int, default=42
        Seed of the private ``numpy.random.RandomState``; 42 gives the
        published dataset.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuples of numpy.ndarray
        With the defaults: ``x_train`` float32 of shape (4000, 40) and
        ``x_test`` of shape (1000, 40), standardized with the mean and
        standard deviation of all 5000 signals; ``y_train`` (4000,) and
        ``y_test`` (1000,) int64 labels 0 to 9.

    Notes
    -----
    The steps of the generator are listed in the docstring of
    :mod:`normlab.datasets.mnist1d`. With the defaults, the signals equal those
    of the reference implementation to within 1e-12 (float64, before the
    cast to float32). Generation takes about a tenth of a second; nothing is
    written to disk.

    References
    ----------
    S. Greydanus and D. Kobak, "Scaling down deep learning with MNIST-1D",
    ICML 2024 (first version: arXiv:2011.14439, 2020).

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = load_mnist1d()
    >>> x_train.shape, x_test.shape, y_train.dtype
    ((4000, 40), (1000, 40), dtype('int64'))
    """
    params = dict(
        num_samples=num_samples, train_split=train_split, scale_coeff=scale_coeff,
        max_translation=max_translation, corr_noise_scale=corr_noise_scale,
        iid_noise_scale=iid_noise_scale, shear_scale=shear_scale,
        final_seq_length=final_seq_length, seed=seed,
    )
    validate_params("load_mnist1d", _CONSTRAINTS, params)
    if num_samples % _NUM_CLASSES:
        raise InvalidParameterError(
            "The 'num_samples' parameter of load_mnist1d must be a multiple of 10 "
            f"(the same number of signals per class). Got {num_samples!r} instead."
        )
    pad_ok = (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in padding)
        and 0 <= padding[0] <= padding[1]
    )
    if not pad_ok:
        raise InvalidParameterError(
            "The 'padding' parameter of load_mnist1d must be a pair of ints "
            f"(low, high) with 0 <= low <= high. Got {padding!r} instead."
        )
    split = int(num_samples * train_split)
    if not 0 < split < num_samples:
        raise InvalidParameterError(
            "The 'train_split' parameter of load_mnist1d must leave at least one "
            f"signal in each of the train and test sets. Got {train_split!r} "
            f"with num_samples={num_samples!r} instead."
        )
    params["padding"] = (int(padding[0]), int(padding[1]))
    del params["train_split"]
    x, y = _generate(**params)
    return as_split(x[:split], y[:split], x[split:], y[split:])
