"""all_finite: the cheap NaN/inf check run on every public call, on both kernel paths."""

import numpy as np
import pytest

from normlab.kernels.checks import all_finite



@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finds_one_bad_entry_anywhere(numba_path, rng, dtype, bad):
    # odd sizes put the bad entry in the vector body and in the scalar tail
    for shape in [(1,), (37,), (60, 784), (3, 5, 7)]:
        x = rng.standard_normal(shape).astype(dtype)
        assert all_finite(x)
        for pos in {0, x.size // 2, x.size - 1}:
            y = x.copy()
            y.reshape(-1)[pos] = bad
            assert not all_finite(y), (shape, pos)


def test_large_finite_values_are_not_flagged(numba_path):
    # the squares overflow (float32 beyond 1.8e19, float64 beyond 1.3e154): the exact test decides
    assert all_finite(np.full((4, 3), 3e38, np.float32))
    assert all_finite(np.array([1e300, -1e300, 1.0]))
    assert not all_finite(np.array([1e300, np.inf]))
    assert not all_finite(np.array([1e300, np.nan]))


def test_strided_empty_and_non_float_inputs(numba_path, rng):
    x = rng.standard_normal((6, 8))
    x[0, 1] = np.nan
    assert all_finite(x[:, ::2])  # a view that skips the NaN
    assert not all_finite(x[:, 1::2])
    assert not all_finite(np.asfortranarray(x))
    assert all_finite(np.empty((0, 3), np.float32))
    assert all_finite(np.arange(5))
    assert all_finite(np.array([True, False]))
    assert isinstance(all_finite(np.ones(3, np.float32)), bool)
