"""Label and array helpers with Keras 3's semantics: ``to_categorical`` and ``normalize``."""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import Interval, InvalidParameterError, NoneOk, validate_params

__all__ = ["to_categorical", "normalize"]


def _integral_labels(x: np.ndarray) -> np.ndarray:
    """``x`` as int64, refusing what is not a whole number (Keras would truncate 1.5 to 1)."""
    if x.dtype.kind in "iub":
        return x.astype(np.int64, copy=False)
    if x.dtype.kind != "f":
        raise TypeError(f"to_categorical: 'x' must hold integer class labels; got an array of dtype {x.dtype}.")
    bad = ~np.isfinite(x) | (x != np.round(x)) if x.size else np.zeros(x.shape, bool)
    if bad.any():
        raise ValueError(
            f"to_categorical: 'x' must hold integer class labels; got {float(x[bad].flat[0])!r} "
            f"(at index {tuple(int(i) for i in np.argwhere(bad)[0])})."
        )
    if x.size and np.abs(x).max() >= 2.0**62:
        raise ValueError(f"to_categorical: the label {np.abs(x).max():g} is too large to be a class index.")
    return x.astype(np.int64)


def to_categorical(x, num_classes: int | None = None) -> np.ndarray:
    """One-hot encode integer class labels, as ``keras.utils.to_categorical`` does.

    Parameters
    ----------
    x : array_like of int
        Class labels in ``[0, num_classes)``, of any shape. A trailing axis of
        size 1 (labels of shape ``(n, 1)``, as some loaders return them) is
        dropped first, as in Keras. Floats are accepted when they are whole
        numbers (``3.0``).
    num_classes : int, optional
        The number of classes; ``max(x) + 1`` when ``None``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``x.shape + (num_classes,)`` (after dropping a
        trailing axis of 1): ``out[..., k] = 1`` where ``x == k``, 0 elsewhere.

    Raises
    ------
    ValueError
        If a label is negative, not below ``num_classes``, or not a whole
        number, or if ``x`` is empty and ``num_classes`` is ``None``.

    Notes
    -----
    Differences from Keras, all where Keras gives a silently wrong answer or
    an unrelated error: a negative label is refused (NumPy indexing would set
    the last class); ``2.7`` is refused (Keras casts it to 2); ``num_classes=0``
    is refused (Keras treats it as ``None``). The result is float32, the
    dtype of Keras's backend tensors and of normlab's models (Keras's NumPy
    path returns float64).

    Examples
    --------
    >>> to_categorical([0, 2, 1], num_classes=3)
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]], dtype=float32)
    >>> to_categorical([[1], [0]]).shape
    (2, 2)
    """
    validate_params("to_categorical", {"num_classes": [NoneOk(), Interval(numbers.Integral, 1, None)]},
                    {"num_classes": num_classes})
    labels = _integral_labels(np.asarray(x))
    shape = labels.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    flat = labels.reshape(-1)
    if flat.size and flat.min() < 0:
        i = int(np.argmax(flat < 0))
        raise ValueError(f"to_categorical: class labels must be >= 0; got {int(flat[i])} "
                         f"(at flat index {i}).")
    if num_classes is None:
        if not flat.size:
            raise ValueError("to_categorical: 'x' is empty, so 'num_classes' cannot be inferred; pass it.")
        num_classes = int(flat.max()) + 1
    num_classes = int(num_classes)
    if flat.size and flat.max() >= num_classes:
        i = int(np.argmax(flat >= num_classes))
        raise ValueError(f"to_categorical: class labels must be below num_classes={num_classes}; "
                         f"got {int(flat[i])} (at flat index {i}).")
    out = np.zeros((flat.size, num_classes), dtype=np.float32)
    out[np.arange(flat.size), flat] = 1.0
    return out.reshape(shape + (num_classes,))


def normalize(x, axis: int = -1, order=2) -> np.ndarray:
    """Divide ``x`` by its ``order``-norm along ``axis``, as ``keras.utils.normalize`` does.

    Parameters
    ----------
    x : array_like
    axis : int, default=-1
        The axis along which norms are taken.
    order : float, default=2
        The norm's order, as ``numpy.linalg.norm``'s ``ord`` for vectors
        (``1``, ``2``, ``3``, ``numpy.inf``, ...).

    Returns
    -------
    numpy.ndarray
        A new array ``x / ||x||_order``, the norm broadcast along ``axis``,
        in the dtype NumPy gives ``x / norm`` (float32 stays float32; integer
        input gives float64).

    Notes
    -----
    ``out = x / n`` with ``n = ||x||_order`` along ``axis``, except that a
    zero norm is replaced by 1, so a zero vector stays zero (no NaN). This is
    Keras's rule for NumPy input; Keras's rule for backend tensors clamps the
    norm from below at ``epsilon = 1e-7`` instead, which differs only for
    vectors of norm below 1e-7.

    Examples
    --------
    >>> normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    validate_params("normalize", {"axis": [Interval(numbers.Integral, None, None)]}, {"axis": axis})
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, numbers.Real) or np.isnan(order):
        raise InvalidParameterError(f"The 'order' parameter of normalize must be a real number "
                                    f"(1, 2, numpy.inf, ...). Got {order!r} instead.")
    x = np.asarray(x)
    if x.ndim == 0:
        x = x.reshape(1)  # a scalar is a vector of one element, as in Keras
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"normalize: axis {axis} is out of range for an array of {x.ndim} dimension(s) "
                         f"(shape {x.shape}).")
    norm = np.linalg.norm(x, ord=order, axis=int(axis), keepdims=True)
    norm[norm == 0] = 1
    return x / norm


def build_pos_neg_masks(query_labels, key_labels, remove_diagonal: bool = True):
    """Keras's ``build_pos_neg_masks``: which query/key pairs share a label (positive) and which do not.

    Returns two boolean arrays of shape ``(len(query_labels), len(key_labels))``;
    with ``remove_diagonal`` the pairs ``(i, i)`` are not positive (a sample
    is not its own positive when queries and keys are the same batch).
    """
    q = np.asarray(query_labels).reshape(-1)
    k = np.asarray(key_labels).reshape(-1)
    positive = q[:, None] == k[None, :]
    negative = ~positive
    if remove_diagonal:
        positive = positive & ~np.eye(q.size, k.size, dtype=bool)
    return positive, negative
