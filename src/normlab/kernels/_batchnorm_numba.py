"""Fused batch-norm kernels (numba) for ``x`` viewed as ``(m, C)``, features last.

Same equations as :mod:`normlab.kernels.batchnorm`, fused so that each array
is streamed as few times as possible:

* forward: one pass for the statistics (sums of ``x - s`` and ``(x - s)^2``
  accumulated in float64 with a per-feature shift ``s = x[0]``, which keeps
  the one-pass variance free of cancellation for data with a large offset;
  float32 deviations never overflow these sums, float64 ones beyond about
  1e154 take a scaled second pass), one pass writing
  ``y = (x - mean) * scale + shift``; ``xhat`` is not stored, the backward
  pass recomputes it from ``x``;
* backward: one pass for ``dbeta = sum(dy)`` and ``dgamma = sum(dy * xhat)``,
  one pass writing ``dx = g * inv_std / m * (m dy - dbeta - xhat dgamma)``.

Rows are the outer loop so the inner loop over features is contiguous and
vectorizes. The two reduction passes take four rows per sweep (partial sums of
four rows, then one update of the float64 per-feature sums): with one row per
sweep, loading and storing the per-feature sums for every element made them
compute-bound, at about 1.4x the time of a plain read of the data.

The kernels are defined in four modules, one concept each, and imported from
here by their callers (the layer's row functions, the threaded and
synchronized kernels, group normalization):

* :mod:`normlab.kernels._bn_moments_numba`: the batch statistics;
* :mod:`normlab.kernels._bn_affine_numba`: the elementwise passes and their blocks of rows;
* :mod:`normlab.kernels._bn_forward_numba`: the training forward, plain and activation-fused;
* :mod:`normlab.kernels._bn_backward_numba`: the training backward, plain and activation-fused.
"""

from __future__ import annotations

# re-exported (noqa: F401): batchnorm_rows, the chunked and synchronized kernels, group normalization and
# benchmarks/ab_bn_kernels.py import the kernels from here
from ._bn_affine_numba import (  # noqa: F401
    _affine_blocks,
    _tile_rows,
    _tiled,
    affine,
    centered_affine,
    centered_affine_blocks,
)
from ._bn_backward_numba import (  # noqa: F401
    _BACKWARD_BY_KIND,
    _add1,
    _add4,
    _backward_act_body,
    _backward_relu,
    _backward_sigmoid,
    _backward_tanh,
    _dx_coefficients,
    _store_param_grads,
    train_backward_act_step,
    train_backward_step,
)
from ._bn_forward_numba import (  # noqa: F401
    _F32_MAX,
    _F64_MAX,
    _FOLD_BOUND,
    NOT_FINITE,
    OK,
    OVERFLOW,
    _train_statistics,
    affine_act_blocks,
    train_forward_act_step,
    train_forward_step,
)
from ._bn_moments_numba import (  # noqa: F401
    CHUNK_ELEMENTS,
    _column_moments_scaled,
    _moments_sums,
    all_finite,
    chunk_rows,
    moments,
)
