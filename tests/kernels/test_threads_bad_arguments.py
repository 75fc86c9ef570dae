"""A catalogue of bad arguments for ``normlab.set_num_threads`` and the ``normlab warmup`` command line.

``set_num_threads`` refuses what is not an int from 1 to 65536 with
``InvalidParameterError`` (a ``ValueError`` and a ``TypeError``) and changes
nothing then: neither normlab's limit nor BLAS's. Before, NumPy integers were
refused, and huge values reached BLAS: ``10**6`` was taken (OpenBLAS holding
64), ``10**20`` failed inside ctypes with an ``ArgumentError``, and ``2**32 + 1``
wrapped around to 1 thread in BLAS's C ``int`` while normlab kept ``2**32 + 1``.

``normlab warmup``: a bad ``--jobs`` or network name is a usage error (exit
status 2, argparse's one line naming the argument) and nothing is compiled.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import normlab
from normlab._validation import InvalidParameterError
from normlab.cli import warmup
from normlab.cli.main import main
from normlab.kernels import _threads

MESSAGE = r"^The 'n' parameter of set_num_threads must be an int in the range \[1, 65536\]\. Got {} instead\.$"


@pytest.fixture
def keep_threads():
    """The limits as they were (normlab's and BLAS's), restored after the test whatever it did."""
    before = _threads.get_num_threads()
    user = _threads._user_threads
    blas = [c.get_num_threads() for c in _threads._blas_controllers()]
    yield before
    for c, n in zip(_threads._blas_controllers(), blas):
        c.set_num_threads(n)
    _threads._user_threads = user


def _state():
    blas = [c.get_num_threads() for c in _threads._blas_controllers()]
    return _threads.get_num_threads(), _threads._user_threads, blas


@pytest.mark.parametrize("bad", [
    0, -1, -(2**63), True, False, np.bool_(True), 1.0, 2.5, float("nan"), float("inf"), "2", b"2", None, [2], (2,),
    np.float64(2.0), np.array(2), 65537, 10**6, 2**31, 2**32 + 1, 10**20,
], ids=repr)
def test_set_num_threads_refuses_and_changes_nothing(bad, keep_threads):
    before = _state()
    with pytest.raises(InvalidParameterError, match=MESSAGE.format(_re_repr(bad))):
        normlab.set_num_threads(bad)
    assert _state() == before


def _re_repr(value) -> str:
    return re.escape(repr(value))


def test_set_num_threads_is_one_error_class_for_types_and_values(keep_threads):
    for bad in ("2", 0):
        with pytest.raises(TypeError):
            normlab.set_num_threads(bad)
        with pytest.raises(ValueError):
            normlab.set_num_threads(bad)


@pytest.mark.parametrize("good", [1, 2, np.int64(1), np.int32(2), np.uint8(1)], ids=repr)
def test_set_num_threads_takes_python_and_numpy_ints(good, keep_threads):
    previous = normlab.set_num_threads(good)
    assert previous == keep_threads
    assert normlab.get_num_threads() == int(good)
    assert type(_threads._user_threads) is int and _threads._user_threads == int(good)


def test_set_num_threads_at_the_bound(keep_threads):
    """65536 is accepted; what is in force is what BLAS holds (OpenBLAS: at most the threads it was built for)."""
    normlab.set_num_threads(65536)
    n = normlab.get_num_threads()
    assert 1 <= n <= 65536
    if not _threads._blas_controllers():
        assert n == 65536


# ------------------------------------------------------------------ normlab warmup
@pytest.fixture
def no_compiling(monkeypatch):
    calls = []
    monkeypatch.setattr(warmup, "warm_up_kernels",
                        lambda jobs, tasks: calls.append((jobs, tasks)) or {"seconds": 0.0, "compiled": 0, "tasks": {}})
    monkeypatch.setattr("normlab.kernels._backend.numba_enabled", lambda: True)
    return calls


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "argument --jobs: must be >= 1, got 0"),
    (["--jobs", "-1"], "argument --jobs: must be >= 1, got -1"),
    (["--jobs", "abc"], "argument --jobs: expected an integer, got 'abc'"),
    (["--jobs", "1.5"], "argument --jobs: expected an integer, got '1.5'"),
    (["--jobs", "2e3"], "argument --jobs: expected an integer, got '2e3'"),
    (["--jobs", "True"], "argument --jobs: expected an integer, got 'True'"),
    (["--jobs", ""], "argument --jobs: expected an integer, got ''"),
    (["--jobs"], "argument --jobs: expected one argument"),
    (["resnet"], "argument NETWORK: invalid choice: 'resnet' (choose from cnn, mlp_sigmoid, mlp_relu, norms)"),
    (["CNN"], "argument NETWORK: invalid choice: 'CNN'"),
    ([""], "argument NETWORK: invalid choice: ''"),
    (["cnn", "resnet"], "argument NETWORK: invalid choice: 'resnet'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["cnn", "--jobs", "2", "--", "x"], "unrecognized arguments: -- x"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_warmup_usage_errors_exit_2_and_compile_nothing(argv, message, no_compiling, capsys):
    with pytest.raises(SystemExit) as e:
        main(["warmup", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: normlab warmup")  # the subcommand's usage, not the top level's
    assert f"normlab warmup: error: {message}" in err
    assert "Traceback" not in err
    assert no_compiling == []


@pytest.mark.parametrize("argv, jobs, tasks", [
    ([], None, warmup.TASKS),
    (["--jobs", "1"], 1, warmup.TASKS),
    (["--jobs", " 2 "], 2, warmup.TASKS),  # int() takes surrounding blanks
    (["--jobs", "1" + "0" * 30], 10**30, warmup.TASKS),  # capped by the number of networks
    (["cnn", "cnn", "norms"], None, ("cnn", "norms")),  # repeated names run once, in the order given
    (["norms", "--jobs", "2", "--jobs", "3"], 3, ("norms",)),  # the last --jobs wins (argparse's rule)
])
def test_warmup_accepted_arguments(argv, jobs, tasks, no_compiling, capsys):
    assert main(["warmup", *argv]) == 0
    assert no_compiling == [(jobs, tasks)]
    assert "normlab warmup: compiling numba kernels..." in capsys.readouterr().out


def test_huge_jobs_runs_at_most_one_process_per_network(monkeypatch):
    """warm_up_kernels caps ``jobs`` by the number of networks: a huge --jobs starts no more processes."""
    seen = []

    class FakePool:
        def __init__(self, n):
            seen.append(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, tasks, chunksize=1):
            return [(t, 0, 0.0) for t in tasks]

    class FakeContext:
        Pool = FakePool

    monkeypatch.setattr("normlab.kernels._backend.numba_enabled", lambda: True)
    monkeypatch.setattr(warmup.multiprocessing, "get_context", lambda method=None: FakeContext)
    result = warmup.warm_up_kernels(10**30, ("cnn", "norms"))
    assert seen == [2] and set(result["tasks"]) == {"cnn", "norms"}
