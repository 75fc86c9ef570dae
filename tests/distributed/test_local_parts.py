"""Parts of data parallelism checked in one process, without MPI.

How a rank waits in a collective (``Communicator._wait``): poll, then poll
and yield, then nap; bounded by the timeout. No MPI here: the communicator is built without a communicator and the
request is a stand-in; a fake clock advances by one microsecond per poll
(and by the nap's length per nap), so the phases are checked by what the
rank did, not by timing it.
"""

from __future__ import annotations

import types

import pytest

from normlab.distributed import _comm


class _Clock:
    def __init__(self):
        self.now = 0.0
        self.polls = self.yields = 0
        self.naps: list[float] = []

    def monotonic(self):
        return self.now

    def thread_time(self):
        return self.now

    def sleep(self, seconds):
        self.naps.append(self.now)
        self.now += seconds + 50e-6  # Linux's default timer slack

    def sched_yield(self):
        self.yields += 1


class _Request:
    """Completes at ``done_at`` seconds of the fake clock; each ``Test`` costs a microsecond."""

    def __init__(self, clock, done_at):
        self.clock, self.done_at = clock, done_at

    def Test(self):
        self.clock.polls += 1
        self.clock.now += 1e-6
        return self.clock.now >= self.done_at


@pytest.fixture
def comm(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(_comm, "time", types.SimpleNamespace(monotonic=clock.monotonic, thread_time=clock.thread_time,
                                                             sleep=clock.sleep))
    monkeypatch.setattr(_comm, "os", types.SimpleNamespace(sched_yield=clock.sched_yield))
    c = object.__new__(_comm.Communicator)
    c.rank, c.size, c.timeout, c.where, c.wait_cpu_seconds = 0, 2, 600.0, "a test", 0.0
    c.spin_seconds, c.yield_seconds, c.nap_seconds, c.window_seconds = c.SPIN, c.YIELD, c.NAP, c.WINDOW
    c.clock = clock
    return c


def test_a_short_wait_only_polls(comm):
    comm._wait(_Request(comm.clock, 80e-6), "x")
    assert comm.clock.yields == 0 and comm.clock.naps == []


def test_a_wait_below_a_millisecond_polls_and_yields_without_sleeping(comm):
    comm._wait(_Request(comm.clock, 600e-6), "x")
    assert comm.clock.yields > 0 and comm.clock.naps == []


def test_a_long_wait_sleeps_between_windows_of_polling(comm):
    clock = comm.clock
    comm._wait(_Request(clock, 20e-3), "x")
    assert clock.now >= 20e-3
    naps = clock.naps
    assert naps and naps[0] >= comm.YIELD
    # after each nap a window of polling (a transfer that started meanwhile runs at polling speed)
    gaps = [b - a - comm.NAP - 50e-6 for a, b in zip(naps, naps[1:])]
    assert min(gaps) >= comm.WINDOW
    # the core is given away for most of the wait past the first millisecond: polls ~ window / (window + nap)
    assert clock.polls < 0.7 * 20e-3 / 1e-6
    assert comm.wait_cpu_seconds > 0


def test_without_naps_the_rank_polls_and_yields_to_the_end(comm):
    comm.nap_seconds = None
    comm._wait(_Request(comm.clock, 5e-3), "x")
    assert comm.clock.naps == [] and comm.clock.yields > 0


def test_a_wait_past_the_timeout_ends_the_job_with_where_it_waited(comm):
    comm.timeout = 0.01
    messages = []

    def abort(message, code=1):
        messages.append(message)
        raise SystemExit(code)

    comm.abort = abort
    with pytest.raises(SystemExit):
        comm._wait(_Request(comm.clock, float("inf")), "the allreduce of the gradients")
    assert messages == ["normlab.distributed: rank 0 of 2 waited 0.01 s in the allreduce of the gradients (a test) "
                        "for the other ranks; one of them has stopped or is doing something else. Ending the job."]
    assert 0.01 <= comm.clock.now < 0.0103


# --------------------------------------------- the check of x, split over the ranks
def _strategy(rank, depth):
    from normlab.distributed.strategy import DataParallel

    dist = object.__new__(DataParallel)
    dist._comm = types.SimpleNamespace(rank=rank, size=2)
    dist._depth = depth
    return dist


def test_inside_a_guarded_call_each_rank_checks_its_part_of_x():
    import numpy as np

    x = np.zeros((10, 3), np.float32)
    x[7, 1] = np.nan  # in rank 1's rows (5 to 9)
    _strategy(0, 1).check_finite(x, "Sequential.fit")
    with pytest.raises(ValueError, match=r"Sequential.fit: 'x' holds NaN or inf values."):
        _strategy(1, 1).check_finite(x, "Sequential.fit")


def test_outside_a_guarded_call_a_rank_checks_all_of_x():
    import numpy as np

    x = np.zeros((10, 3), np.float32)
    x[7, 1] = np.inf
    with pytest.raises(ValueError, match="holds NaN or inf"):
        _strategy(0, 0).check_finite(x, "Sequential.compute_gradients")


# ------------------------------------------------ the gradients' parts
def _planned(model, min_size):
    """``_bucket_plan`` of ``model`` compiled in one process, its batch norms marked synchronized."""
    import numpy as np

    import normlab
    from normlab.distributed.strategy import _all_layers, _bucket_plan

    model.compile(normlab.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.build((None, 6))
    model.train_on_batch(np.ones((4, 6)), np.zeros(4, int))  # the optimizer's flat buffer
    for layer in _all_layers(model):
        if isinstance(layer, normlab.layers.BatchNormalization):
            layer._sync = object()
    return _bucket_plan(model, model._flat[0], min_size), model


def test_each_part_of_the_gradients_holds_the_layers_above_a_batch_norm():
    import os
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    import _cases as C

    (points, last), m = _planned(C.deep(), 1)
    # deep: Dense 6x12, BN 12, Dense 12x10, BN 10, Dense 10x8, BN 8, Dense 8x3 + 3
    # from the output down: the last Dense (27), then each Dense with the batch norm above it
    size = m._flat[0].size
    assert points == [(size - 27, size), (size - 27 - 80 - 16, size - 27), (72 + 24, size - 27 - 96)]
    assert last == (0, 96)
    # parts below the minimum are summed with the next one
    (points, last), _ = _planned(C.deep(), 100)
    assert points == [None, (size - 27 - 96, size), (96, size - 27 - 96)] and last == (0, 96)
    (points, last), _ = _planned(C.deep(), 10**6)
    assert points == [None, None, None] and last == (0, size)


def test_no_parts_for_a_synchronized_batch_norm_inside_a_nested_model():
    import normlab
    from normlab import layers as L

    inner = normlab.Sequential([L.Dense(5, use_bias=False), L.BatchNormalization(synchronized=True),
                                L.Activation("relu")])
    plan, _ = _planned(normlab.Sequential([inner, L.Dense(3, activation="softmax")]), 1)
    assert plan is None
