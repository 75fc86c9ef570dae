"""DataParallel and synchronized batch normalization on 2 MPI ranks against one process.

The MPI side runs in ``mpiexec -n 2`` subprocesses (``_worker.py``), on the
NumPy kernels (no JIT compile in each rank); the references here run in
this process on the same kernels. Skipped without mpi4py or mpiexec.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")

import normlab  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _cases as C  # noqa: E402


def _mpiexec():
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        pytest.skip("mpiexec is not installed")
    return found


def run_mpi(*args, timeout=60, n=2, cwd=None, numba=False):
    """``mpiexec -n 2 python ARGS``: the completed process (never left running past ``timeout``)."""
    cmd = [_mpiexec(), "-n", str(n)]
    if "Open MPI" in subprocess.run([cmd[0], "--version"], capture_output=True, text=True, timeout=30).stdout:
        cmd += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env.pop("NORMLAB_DISABLE_NUMBA", None)
    if not numba:
        env["NORMLAB_DISABLE_NUMBA"] = "1"
    return subprocess.run(cmd + [sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def numpy_kernels():
    from normlab.kernels import _backend

    previous = _backend.use_numba(False)
    yield
    _backend.use_numba(previous)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, numpy_kernels):
    out = tmp_path_factory.mktemp("mpi")
    proc = run_mpi(HERE / "_worker.py", "main", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out / "main.npz") as f:
        res = {k: f[k] for k in f.files}
    res["_out"], res["_stdout"] = out, proc.stdout
    return res


def _flat(model):
    return np.concatenate([w.ravel() for w in model.get_weights()])


def _reference(name, **overrides):
    build, make, kw = C.FIT[name]
    x, y = make()
    m = C.compile_(overrides.pop("model", None) or build())
    h = m.fit(x, y, verbose=0, **kw, **overrides)
    return m, h, x, y


@pytest.mark.parametrize("name", ["mlp", "sync", "cnn"])
def test_two_ranks_train_as_one_process_on_the_global_batch(ranks, name):
    """Weights (moving statistics included), losses and metrics after every epoch: float64 summation order."""
    m, h, x, y = _reference(name)
    np.testing.assert_allclose(ranks[f"{name}/weights"], _flat(m), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ranks[f"{name}/loss"], h.history["loss"], rtol=1e-12)
    np.testing.assert_array_equal(ranks[f"{name}/accuracy"], h.history["accuracy"])
    # the ranks hold the same model, bit for bit
    assert ranks[f"{name}/rank_spread"] == 0.0


@pytest.mark.parametrize("name", ["mlp", "sync", "cnn"])
def test_predict_and_evaluate_gather_in_the_original_order(ranks, name):
    build, make, kw = C.FIT[name]
    x, y = make()
    m = C.compile_(build())
    m.fit(x, y, verbose=0, **kw)
    np.testing.assert_allclose(ranks[f"{name}/predict"], m.predict(x, batch_size=16, verbose=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ranks[f"{name}/evaluate"], m.evaluate(x, y, batch_size=16, verbose=0), rtol=1e-10)


def test_plain_batch_norm_normalizes_each_shard_alone(ranks):
    """synchronized=False: each rank's statistics are its shard's, i.e. ghost batches of half the global batch."""
    m, h, x, y = _reference("plain", model=C.mlp("plain", virtual_batch_size=16))
    np.testing.assert_allclose(ranks["plain/weights"], _flat(m), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ranks["plain/loss"], h.history["loss"], rtol=1e-12)
    # ... and not what one process with the global batch's statistics gives
    one, _, _, _ = _reference("plain")
    assert np.max(np.abs(ranks["plain/weights"] - _flat(one))) > 1e-3


def test_synchronized_is_plain_batch_norm_in_one_process(numpy_kernels):
    x, y = C.data()
    runs = []
    for bn in ("sync", "plain"):
        m = C.compile_(C.mlp(bn), normlab.distributed.DataParallel())  # one rank: the strategy changes nothing
        m.fit(x, y, batch_size=32, epochs=2, seed=1, verbose=0)
        runs.append(_flat(m))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_synchronized_row_kernels_on_two_ranks_train_as_one_process(tmp_path):
    """The numba path: synchronized BN on its row kernels, fused with relu, against one process's plain BN."""
    pytest.importorskip("numba")
    from normlab.kernels import _backend

    proc = run_mpi(HERE / "_worker.py", "kernels", tmp_path, timeout=300, numba=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(tmp_path / "kernels.npz") as f:
        res = {k: f[k] for k in f.files}
    previous = _backend.use_numba(True)
    try:
        for name in ("sync", "cnn"):
            m, h, _, _ = _reference(name)
            assert res[f"{name}/fused"]
            np.testing.assert_allclose(res[f"{name}/weights"], _flat(m), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(res[f"{name}/loss"], h.history["loss"], rtol=1e-12)
    finally:
        _backend.use_numba(previous)
    np.testing.assert_allclose(res["grad/ana_dx"], res["grad/num_dx"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res["grad/ana_params"], res["grad/num_params"], rtol=1e-6, atol=1e-8)


def test_a_checkpoint_resumes_bit_for_bit_on_as_many_ranks_and_closely_on_one(ranks):
    np.testing.assert_array_equal(ranks["resume/weights"], ranks["sync/weights"])
    x, y = C.data()
    r = normlab.load_model(ranks["_out"] / "sync_2epochs.npz")
    r.fit(x, y, batch_size=32, epochs=3, initial_epoch=2, seed=1, verbose=0)
    np.testing.assert_allclose(_flat(r), ranks["sync/weights"], rtol=1e-10, atol=1e-12)


def test_a_generator_builds_the_same_model_on_every_rank(ranks):
    """Built on the first batch, without a seed: rank 0's weights are broadcast once it is."""
    assert ranks["stream/rank_spread"] == 0.0


def test_train_on_batch_splits_the_global_batch(ranks, numpy_kernels):
    x, y = C.data()
    m = C.compile_(C.mlp("sync"))
    m.build((None, 6))
    m.set_weights(C.fixed_weights(m))
    expected = m.train_on_batch(x[:33], y[:33])
    np.testing.assert_allclose(ranks["tob/result"], expected, rtol=1e-12)
    np.testing.assert_allclose(ranks["tob/weights"], _flat(m), rtol=1e-12, atol=1e-14)


def test_synchronized_statistics_of_large_offsets_in_float32(ranks):
    """1e4 + noise in float32: Chan's combination of shard moments gives the float64 statistics of the union."""
    x = ranks["offset/shards"].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(ranks["offset/mean"], x.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(ranks["offset/var"], x.var(axis=0), rtol=1e-5)
    xhat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-3)
    np.testing.assert_allclose(ranks["offset/y"].reshape(-1, 3), xhat, atol=2e-5)
    # the naive E[x^2] - E[x]^2 in float32 loses the small feature's variance entirely
    x32 = ranks["offset/shards"].reshape(-1, 3)
    naive = (x32 * x32).mean(axis=0) - x32.mean(axis=0) ** 2
    assert abs(naive[1] - x.var(axis=0)[1]) > 10 * x.var(axis=0)[1]


def test_synchronized_batch_norm_gradient_across_two_ranks(ranks):
    """float64 central differences of the global loss, including inputs on the other rank."""
    np.testing.assert_allclose(ranks["grad/ana_dx"], ranks["grad/num_dx"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ranks["grad/ana_params"], ranks["grad/num_params"], rtol=1e-6, atol=1e-8)


class _Running(normlab.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen, self.epoch = [], 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([self.epoch, batch, logs["loss"], logs["accuracy"]])


def test_the_logs_are_summed_over_the_ranks_at_every_step_a_callback_reads(ranks):
    """A callback with its own on_train_batch_end sees every step's running logs over all ranks."""
    cb = _Running()
    m, h, x, y = _reference("sync", callbacks=[cb])
    np.testing.assert_allclose(ranks["reader/batch_logs"], np.array(cb.seen), rtol=1e-12)
    np.testing.assert_allclose(ranks["reader/loss"], h.history["loss"], rtol=1e-12)
    assert ranks["reader/log_sums"] == 3 * 4  # 3 epochs of 4 steps
    assert ranks["reader/agreements"] == 3 * (4 + 1)  # after every step, and at each epoch's end


def test_without_per_batch_callbacks_the_logs_are_summed_once_per_epoch(ranks):
    """The same epoch logs (the same running sums) from one sum per epoch; stopping agreed twice per epoch."""
    m, h, x, y = _reference("sync")
    np.testing.assert_allclose(ranks["quiet/loss"], h.history["loss"], rtol=1e-12)
    np.testing.assert_array_equal(ranks["quiet/accuracy"], h.history["accuracy"])
    np.testing.assert_array_equal(ranks["quiet/loss"], ranks["reader/loss"])  # bit for bit: the same sums
    assert ranks["quiet/log_sums"] == 3
    assert ranks["quiet/agreements"] == 3 * 2  # after each epoch's first step, and at its end
    assert ranks["early/log_sums"] == 3  # EarlyStopping's per-batch hook reads no logs


def test_a_stop_set_on_one_rank_stops_every_rank_at_the_same_step(ranks):
    # rank 1 alone, in on_train_batch_end of epoch 1, batch 1: both ranks took 4 + 2 steps
    np.testing.assert_array_equal(ranks["stop_batch/steps"].ravel(), [6, 6])
    assert ranks["stop_batch/rank_spread"] == 0.0
    # rank 0 alone, in on_epoch_begin of epoch 1 (no per-batch hook): both stop after that epoch's first step
    np.testing.assert_array_equal(ranks["stop_epoch/steps"].ravel(), [5, 5])
    assert ranks["stop_epoch/rank_spread"] == 0.0


def test_only_rank_0_prints_and_writes(ranks):
    out = ranks["_stdout"]
    assert [line.split(" - ")[0] for line in out.splitlines() if line.startswith("Epoch ")] == \
        ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    rows = (ranks["_out"] / "mlp.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]


@pytest.mark.parametrize("mode, message", [
    ("raise", "rank 1 of 2 failed in Sequential.fit with ValueError: boom on rank 1 at batch 1"),
    ("stall", "waited 3 s in"),
    # each rank checks only its part of x for NaN and inf: the rank that holds it ends the job
    ("nan", "rank 1 of 2 failed in Sequential.fit with ValueError: Sequential.fit: 'x' holds NaN or inf"),
])
def test_a_failing_or_stalled_rank_ends_the_whole_job(tmp_path, mode, message):
    start = time.monotonic()
    proc = run_mpi(HERE / "_worker.py", mode, tmp_path, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "fit returned" not in proc.stdout
    assert "rank 0 of 2 failed" not in proc.stderr  # rank 0's part (and its checks) passed
    assert time.monotonic() - start < 50  # the stalled rank sleeps 60 s: the job did not wait for it


@pytest.mark.parametrize("numba", [False, True])
def test_gradient_parts_and_persistent_collectives_give_the_same_bits(tmp_path, numba):
    """The gradients summed in parts started at each synchronized BN's backward meeting, on persistent
    collectives, against one allreduce after the backward pass on nonblocking ones: bit for bit, the same
    on both ranks, and as one process on the global batch (float64 summation order)."""
    if numba:
        pytest.importorskip("numba")
    proc = run_mpi(HERE / "_worker.py", "overlap", tmp_path, timeout=300, numba=numba)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "persistent request" not in proc.stderr  # every persistent request was freed before MPI finalized
    with np.load(tmp_path / "overlap.npz") as f:
        res = {k: f[k] for k in f.files}
    from normlab.kernels import _backend

    previous = _backend.use_numba(numba)
    try:
        for name, parts, widths in (("deep", 4, 3), ("cnn", 2, 1), ("sync", 2, 1)):
            base = f"{name}/buckets=0,persistent=0"
            assert res[base + "/parts"].size == 0 and res[base + "/bound"] == 0
            # "deep": a part at each of its three batch norms, then the rest; one part above the one batch norm
            split = res[f"{name}/buckets=1,persistent=1/parts"]
            assert len(split) == parts and split[-1][0] == 0 and (split[:-1, 0] == split[1:, 1]).all()
            # one persistent gather of the statistics and one sum per width of batch norm
            assert res[f"{name}/buckets=1,persistent=1/bound"] == 2 * widths
            for key in (f"{name}/buckets=1,persistent=1", f"{name}/buckets=0,persistent=1"):
                np.testing.assert_array_equal(res[key + "/weights"], res[base + "/weights"])
                np.testing.assert_array_equal(res[key + "/loss"], res[base + "/loss"])
                assert res[key + "/rank_spread"] == 0.0
            m, h, _, _ = _reference(name)
            np.testing.assert_allclose(res[base + "/weights"], _flat(m), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(res[base + "/loss"], h.history["loss"], rtol=1e-12)
    finally:
        _backend.use_numba(previous)
