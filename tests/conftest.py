import random

import numpy as np
import pytest

from normlab.utils import _random


@pytest.fixture(autouse=True)
def _restore_global_seeds(monkeypatch):
    """Each test leaves Python's, NumPy's and normlab's global seeds (set_random_seed) as it found them."""
    monkeypatch.setattr(_random, "_seed", _random._seed)
    monkeypatch.setattr(_random, "_root", _random._root)
    py_state, np_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)


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
