import pytest

from normlab.kernels import _backend


@pytest.fixture(params=["numba", "numpy"])
def bn_backend(request):
    """Run a test on the fused numba kernels and on the NumPy kernels."""
    if request.param == "numba" and not _backend.NUMBA_AVAILABLE:
        pytest.skip("numba not installed")
    previous = _backend.use_numba(request.param == "numba")
    yield request.param
    _backend.use_numba(previous)
