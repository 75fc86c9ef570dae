"""``benchmarks/bench_distributed.py --floor-worker`` under ``mpiexec -n 2``: the lockstep floor meets where a
synchronized run meets (it refuses to report a run whose batch norms never reached the meetings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")
pytest.importorskip("numba")

sys.path.insert(0, str(Path(__file__).parent))
from test_data_parallel import run_mpi  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_distributed.py"


@pytest.mark.parametrize("meet", ["fbg", "n"])
def test_floor_worker_reports_a_step_with_its_meetings(meet):
    proc = run_mpi(BENCH, "--model", "mlp", "--batch", "64", "--steps", "3", "--floor-worker", "--meet", meet,
                   timeout=240, numba=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints
    r = json.loads(lines[0])
    assert r["ranks"] == 2 and r["step_ms"] > 0 and r["samples_per_s"] > 0
    if meet == "n":
        assert r["polling_ms_per_step"] == 0  # no meeting, no wait
