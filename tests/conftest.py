import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["numba", "numpy"])
def kernel_path(request):
    """Run a test on the numba kernels and on the NumPy kernels (returns "numba" or "numpy")."""
    from normlab.kernels import _backend

    if request.param == "numba" and not _backend.NUMBA_AVAILABLE:
        pytest.skip("numba is not installed")
    previous = _backend.use_numba(request.param == "numba")
    yield request.param
    _backend.use_numba(previous)


@pytest.fixture
def numba_path(kernel_path):
    """:func:`kernel_path` as a bool: True on the numba kernels."""
    return kernel_path == "numba"
