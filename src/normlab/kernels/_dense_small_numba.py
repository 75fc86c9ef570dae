"""The backward pass of a dense layer with few units (numba), on 2-D C-contiguous arrays.

For ``x`` of shape ``(m, k)``, ``W`` of shape ``(k, n)`` and ``dz = dL/dz`` of shape
``(m, n)``, one call writes::

    dW[q, j] = sum_i x[i, q] dz[i, j]      (i = 0, 1, ..., m - 1 in order)
    db[j]    = sum_i dz[i, j]              (i in order; the bias gradient)
    dx[i, q] = sum_j dz[i, j] W[q, j]      (j = 0, 1, ..., n - 1 in order)


Why: a classifier's or regressor's output layer has one to a few units, and
BLAS spends more on such thin products than on their arithmetic. At
``m, k, n = 200, 100, 2`` (scikit-learn's MLP at batch 200 on two classes)
OpenBLAS took about 17 us for ``x.T @ dz``, ``dz @ W.T`` and the column sums;
this takes about 7 us (``n = 1``: 35 us against 4; ``n = 10``: about even,
so the callers stop at :data:`MAX_UNITS`).

Each sum runs in the fixed order written above (``dW`` and ``db`` from
``+0``, ``dx`` from its first product), without fused multiply-adds, in the arrays' dtype: the bits depend on the
shapes and the values only (not on a BLAS, its build or its thread count).
They are not BLAS's bits, which sums ``dW``'s rows in blocks: both are
rounded sums of the same products (tests/kernels/test_dense_small.py
compares them with float64 references and checks the gradients against
central differences). ``db`` is :func:`normlab.kernels._dense_numba.colsum`'s
sum, bit for bit.
"""

from __future__ import annotations

from numba import njit

#: the callers use this kernel for layers of at most this many units
MAX_UNITS = 4


@njit(cache=True, nogil=True)
def backward(x, dz, w, dw, db, dx, acc, has_db, need_dx):
    """``dw``, ``db`` (if ``has_db``) and ``dx`` (if ``need_dx``) of the module docstring.

    ``acc`` is a scratch array of shape ``(n, k)`` and the dtype of ``x``
    (``dW`` transposed, so that the row loop runs along contiguous memory).
    """
    m, k = x.shape
    n = dz.shape[1]
    zero = x.dtype.type(0)
    for j in range(n):
        if has_db:
            db[j] = zero
        aj = acc[j]
        for q in range(k):
            aj[q] = zero
    for i in range(m):
        xi = x[i]
        for j in range(n):
            g = dz[i, j]
            if has_db:
                db[j] += g
            aj = acc[j]
            for q in range(k):
                aj[q] += xi[q] * g
    for q in range(k):
        for j in range(n):
            dw[q, j] = acc[j, q]
    if not need_dx:
        return
    # W transposed into the scratch (its sums are in dw now): rows of dx are then contiguous loops
    for q in range(k):
        for j in range(n):
            acc[j, q] = w[q, j]
    for i in range(m):
        di = dx[i]
        g = dz[i, 0]
        a0 = acc[0]
        for q in range(k):
            di[q] = g * a0[q]
        for j in range(1, n):
            g = dz[i, j]
            aj = acc[j]
            for q in range(k):
                di[q] += g * aj[q]
