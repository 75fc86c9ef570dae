"""``normlab warmup``: compiles (or loads) the kernels of small networks, in parallel processes."""

from __future__ import annotations

import pytest

from normlab.cli.main import main
from normlab.cli.warmup import TASKS, warm_up_kernels
from normlab.kernels import _backend


def test_warmup_without_numba_says_so(capsys):
    previous = _backend.numba_enabled()
    _backend.use_numba(False) if previous else None
    try:
        assert main(["warmup"]) == 0
        assert warm_up_kernels() == {"seconds": 0.0, "compiled": 0, "tasks": {}}
    finally:
        if previous:
            _backend.use_numba(True)
    assert "nothing to compile" in capsys.readouterr().out


@pytest.mark.skipif(not _backend.numba_enabled(), reason="numba kernels off")
def test_warmup_runs_a_network_and_counts_compilations():
    result = warm_up_kernels(jobs=1, tasks=("mlp_sigmoid",))
    assert set(result["tasks"]) == {"mlp_sigmoid"}
    compiled, seconds = result["tasks"]["mlp_sigmoid"]
    assert compiled >= 0 and seconds > 0 and result["compiled"] == compiled
    # a second time everything is in memory: nothing compiles
    assert warm_up_kernels(jobs=1, tasks=("mlp_sigmoid",))["compiled"] == 0


def test_warmup_parser():
    for bad in (["warmup", "--jobs", "0"], ["warmup", "resnet"]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2
    assert "cnn" in TASKS and "mlp_sigmoid" in TASKS
