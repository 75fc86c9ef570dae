"""Smoke test of the benchmark suite (benchmarks/): quick mode, result structure only.

No timing assertions: the numbers of a quick run on a shared machine mean nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import _timing  # noqa: E402
from benchmarks.bench_bn import SHAPES, torch_shape  # noqa: E402
from benchmarks.bench_train_step import BATCHES  # noqa: E402
from benchmarks.report import format_markdown, format_text  # noqa: E402
from benchmarks.run import build_parser, main, run_benchmarks  # noqa: E402

HAS_TORCH = _timing.torch_available()


def _pos(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_result():
    return run_benchmarks(threads=1, quick=True, use_torch=HAS_TORCH, which=("train", "bn"))


def test_meta(quick_result):
    meta = quick_result["meta"]
    assert meta["threads"] == 1 and meta["quick"] is True
    assert meta["torch"] is HAS_TORCH
    assert meta["timing"]["repeats"] >= 1
    assert meta["machine"]["cpu"] and meta["machine"]["numpy"]


def test_train_step_rows(quick_result):
    rows = quick_result["train_step"]
    assert {(r["variant"], r["batch"]) for r in rows} == {(v, b) for v in ("bn", "plain") for b in BATCHES}
    for r in rows:
        assert _pos(r["normlab_train_on_batch_s"]) and _pos(r["normlab_train_step_s"])
        assert _pos(r["matrix_products_s"])
        assert math.isfinite(r["loss_normlab"])
        for t in r["timings"].values():
            assert len(t["per_call_s"]) == t["repeats"] and all(_pos(s) for s in t["per_call_s"])
            assert t["number"] >= 1
        if HAS_TORCH:
            assert _pos(r["torch_s"]) and _pos(r["ratio_train_on_batch"]) and _pos(r["ratio_train_step"])
            assert r["ratio_ceiling"] == pytest.approx(r["torch_s"] / r["matrix_products_s"])
            # same weights, same batch: the first-step losses agree; the gradient check is recorded
            assert r["loss_torch"] == pytest.approx(r["loss_normlab"], rel=1e-3)
            assert math.isfinite(r["grad_rel_err"]) and r["grad_rel_err"] >= 0
        else:
            assert r["torch_s"] is None and r["ratio_train_step"] is None


def test_batchnorm_rows(quick_result):
    rows = quick_result["batchnorm"]
    assert [tuple(r["shape"]) for r in rows] == [tuple(s) for s in SHAPES]
    bw = quick_result["bandwidth"]
    assert _pos(bw["bandwidth_Bps"])
    for r in rows:
        assert _pos(r["normlab_s"])
        assert r["torch_shape"] == list(torch_shape(r["shape"]))
        assert r["bytes_min"] < r["bytes_stream"]
        assert _pos(r["bound_min_s"]) and _pos(r["normlab_over_bound_min"])
        if HAS_TORCH:
            assert _pos(r["torch_s"]) and _pos(r["ratio"])
        else:
            assert r["torch_s"] is None and r["ratio"] is None
    assert torch_shape((64, 32, 32, 64)) == (64, 64, 32, 32)


def test_formatting(quick_result):
    text = format_text(quick_result)
    md = format_markdown(quick_result)
    assert "(8192, 512)" in text and "NHWC" in md
    assert "BN" in text and "plain" in text
    assert sum(line.startswith("|---:") for line in md.splitlines()) == 2


def test_cli_writers_and_no_torch(tmp_path, capsys):
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    res = main(["--quick", "--no-torch", "--batches", "60", "--variants", "bn", "--shapes", "60,100",
                "--json", str(js), "--markdown", str(md)])
    out = capsys.readouterr().out
    assert "normlab times only" in out
    assert res["meta"]["torch"] is False and res["batchnorm"][0]["torch_s"] is None
    data = json.loads(js.read_text())
    assert set(data) == {"meta", "train_step", "batchnorm", "bandwidth", "cold_start"}
    assert data["cold_start"] is None  # --quick leaves the cold start out
    assert data["batchnorm"][0]["shape"] == [60, 100]
    assert res["train_step"][0]["torch_s"] is None
    assert "| net |" in md.read_text()


def test_parser_help():
    text = build_parser().format_help()
    assert "--threads" in text and "--peers" in text and "cold" in text
    args = build_parser().parse_args(["--threads", "1", "2", "--peers", "jax", "compile", "--only", "cold"])
    assert args.threads == [1, 2] and args.peers == ["jax", "compile"] and args.only == "cold"


def test_cold_start_table_and_peer_columns(quick_result):
    res = json.loads(json.dumps(quick_result))
    res["cold_start"] = {"rounds": 2, "threads": 1, "median_s": {"normlab_cold": 5.0, "normlab_warm": 0.6},
                         "samples_s": {"normlab_cold": [4.0, 6.0], "normlab_warm": [0.5, 0.7]},
                         "same_loss_cold_warm": True}
    res["batchnorm"][0].update(jax_jit_s=1e-4, fastest_peer="jax_jit", ratio_fastest=2.0)
    text, md = format_text(res), format_markdown(res)
    assert "normlab, empty numba cache" in text and "5.00 s" in text and "4.00, 6.00" in text
    assert "bit for bit" in text and "**Cold start**" in md
    assert "jax.jit" in text and "fastest peer / normlab" in text


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
def test_cold_start_runs_a_fresh_process():
    from benchmarks.bench_cold_start import _TORCH, _env, _run

    seconds, loss = _run("COMPILE = False\n" + _TORCH, _env(1, None), timeout=300)
    assert seconds > 0 and math.isfinite(float(loss))


def test_aggregate_takes_medians_over_runs(quick_result, tmp_path):
    from benchmarks.aggregate import aggregate, main as aggregate_main

    slower = json.loads(json.dumps(quick_result))
    for r in slower["train_step"]:
        r["normlab_train_step_s"] *= 3
    path_a, path_b = tmp_path / "a.json", tmp_path / "b.json"
    path_a.write_text(json.dumps(quick_result))
    path_b.write_text(json.dumps(slower))
    text = aggregate_main([str(path_a), str(path_b), str(path_a)])
    assert text == aggregate([quick_result, slower, quick_result])
    lines = text.splitlines()
    assert len([l for l in lines if l.startswith("| BN |") or l.startswith("| plain |")]) == len(BATCHES) * 2
    assert len([l for l in lines if l.startswith("| (")]) == len(SHAPES)
    # the median of (t, 3t, t) is t
    first = quick_result["train_step"][0]
    expected = first["normlab_train_step_s"]
    shown = f"{expected * 1e6:.0f} us" if expected < 1e-3 else f"{expected * 1e3:.2f} ms"
    row = next(l for l in lines if l.startswith(f"| {'BN' if first['variant'] == 'bn' else 'plain'} | {first['batch']} |"))
    assert row.split(" | ")[3] == shown
    # a run recorded before the matrix-product column existed: that column reads n/a, the others still merge
    older = json.loads(json.dumps(quick_result))
    for r in older["train_step"]:
        del r["matrix_products_s"], r["ratio_ceiling"], r["functional_over_sequential"]
    row = next(l for l in aggregate([quick_result, older]).splitlines() if l.startswith("| BN |"))
    cells = row.split(" | ")
    assert cells[4] == "n/a"  # functional / Sequential
    assert cells[8:10] == ["n/a", "n/a"]


def test_ab_bn_kernels_compares_a_revision_with_the_working_tree():
    import shutil
    import subprocess

    from benchmarks import ab_bn_kernels as ab

    if shutil.which("git") is None or subprocess.run(
        ["git", "rev-parse", "--verify", "HEAD"], cwd=ROOT, capture_output=True
    ).returncode != 0:
        pytest.skip("not a git checkout")
    pytest.importorskip("numba")
    from normlab.kernels import _batchnorm_numba as new

    old = ab.load_revision("HEAD")
    assert old is not new and hasattr(old, "train_forward_step")
    # the revision's own kernels, not the current ones it re-exports (the kernels live in _bn_*_numba.py)
    assert not getattr(old.train_forward_step, "py_func", old.train_forward_step).__module__.startswith("normlab.")
    r = ab.compare(old, new, (16, 5), rounds=2)
    assert set(r) == {"old", "new"} and all(_pos(t) for pair in r.values() for t in pair)

    class Different:  # a "revision" whose results differ must be refused
        @staticmethod
        def train_forward_step(x, g, b, eps, mom, corr, mm, mv, out, mean, inv):
            new.train_forward_step(x, g, b, eps, mom, corr, mm, mv, out, mean, inv)
            out += 1

        train_backward_step = staticmethod(new.train_backward_step)

    with pytest.raises(SystemExit, match="different results"):
        ab.compare(Different, new, (16, 5), rounds=1)


def test_layernorm_benchmark_cases_compute_the_same_gradients(tmp_path):
    from benchmarks import bench_layernorm as bl

    cases = bl.make_cases((6, 10))
    outs = {name: fn() for name, fn in cases.items()}
    ref = outs["normlab_numpy"]
    for name, out in outs.items():
        dx = out if name != "torch" else out[0].numpy()
        assert dx.shape == (6, 10)
        assert abs(dx - ref).max() <= 1e-5 * max(1.0, abs(ref).max()), name
    assert ("torch" in cases) is HAS_TORCH
    gcases = bl.make_cases((2, 3, 3, 8), groups=4)
    gouts = {name: fn() for name, fn in gcases.items()}
    gref = gouts["normlab_numpy"]
    for name, out in gouts.items():
        dx = out if name != "torch" else np.moveaxis(out[0].numpy(), 1, -1)  # torch's native NCHW back to NHWC
        assert abs(dx - gref).max() <= 1e-5 * max(1.0, abs(gref).max()), name
    res = bl.main(["--quick", "--json", str(tmp_path / "ln.json")])
    assert [tuple(r["shape"]) for r in res["rows"]] == list(bl.SHAPES[:2]) + [(4, 8, 8, 16)]
    assert [r["layer"] for r in res["rows"]] == ["layer", "layer", "group"]
    assert all(_pos(r["normlab_numpy_s"]) for r in res["rows"])
    assert json.loads((tmp_path / "ln.json").read_text())["threads"] == 1


def test_ab_train_step_runs_a_revision_beside_the_work_tree():
    import shutil
    import subprocess

    from benchmarks import ab_train_step

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse", "HEAD"], cwd=root,
                                                     capture_output=True).returncode:
        pytest.skip("not a git checkout")
    res = ab_train_step.main(["--rev", "HEAD", "--batch", "4", "--rounds", "1"])
    assert set(res) == {"work tree / rev, Sequential", "work tree / rev, functional",
                        "functional / Sequential, work tree"}
    assert all(v > 0 for v in res.values())


def test_distributed_glue_times_dataparallel_against_the_floor_on_a_mirror():
    """bench_distributed --glue: DataParallel on a mirrored 2-rank communicator runs (its collectives all
    go through the mirror: nothing waits) beside the floor's model; CPU times per step come back."""
    pytest.importorskip("mpi4py")
    pytest.importorskip("numba")
    import types

    from benchmarks import bench_distributed as bd

    from normlab.kernels import batchnorm_rows as R

    kernels = (R.train_forward, R.train_backward)
    args = types.SimpleNamespace(model="mlp", batch=64, steps=3, rounds=1)
    r = bd.glue_ab(args)
    assert (R.train_forward, R.train_backward) == kernels  # the floor's meetings are gone with the run
    a, b = r["DataParallel, 2 mirrored ranks"], r["floor fbg, half the batch"]
    assert a > 0 and b > 0 and r["distribution_code_over_floor_cpu"] == pytest.approx(a / b)


def test_distributed_mirror_sums_and_gathers_as_two_equal_ranks():
    import numpy as np

    from benchmarks.bench_distributed import _MirrorComm

    c = _MirrorComm(3)
    buf = np.arange(4.0)
    c.Allreduce_init(None, [buf, None]).Start()
    np.testing.assert_array_equal(buf, 3 * np.arange(4.0))
    send, recv = np.array([1.0, 2.0]), np.zeros((3, 2))
    c.Allgather_init([send, None], [recv, None]).Start()
    np.testing.assert_array_equal(recv, np.tile(send, (3, 1)))
