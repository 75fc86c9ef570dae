"""What holds without MPI: normlab never imports mpi4py by itself; arguments are checked."""

from __future__ import annotations

import subprocess
import sys

import pytest

import normlab
from normlab._validation import InvalidParameterError


def test_importing_normlab_does_not_import_mpi4py():
    code = ("import sys, normlab, normlab.distributed\n"
            "m = normlab.Sequential([normlab.layers.BatchNormalization(synchronized=True)])\n"
            "m.compile('sgd', 'mse')\n"
            "print('mpi4py' in sys.modules, normlab.distributed.is_chief(m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"renorm": True}, "renorm=True"),
    ({"virtual_batch_size": 8}, "virtual_batch_size=8"),
])
def test_synchronized_refuses_renorm_and_ghost_batches(kwargs, fragment):
    with pytest.raises(InvalidParameterError, match=f"'synchronized' parameter of BatchNormalization cannot be "
                                                    f"True together with {fragment}"):
        normlab.layers.BatchNormalization(synchronized=True, **kwargs)


def test_synchronized_round_trips_through_the_config():
    layer = normlab.layers.BatchNormalization(synchronized=True)
    again = normlab.layers.BatchNormalization.from_config(layer.get_config())
    assert again.synchronized is True
    assert normlab.layers.BatchNormalization().synchronized is False


def test_compile_refuses_another_distribute_object():
    m = normlab.Sequential([normlab.layers.Dense(2)])
    with pytest.raises(TypeError, match="'distribute' must be None or a normlab.distributed.DataParallel"):
        m.compile("sgd", "mse", distribute="mirrored")
    assert not m.compiled


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), "10", True])
def test_data_parallel_checks_its_timeout(timeout):
    from normlab.distributed import DataParallel

    with pytest.raises(InvalidParameterError, match="'timeout' parameter of DataParallel must be a float > 0 or None"):
        DataParallel(timeout=timeout)
