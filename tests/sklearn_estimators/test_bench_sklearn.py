"""Smoke test of benchmarks/bench_sklearn.py: structure only, tiny sizes, no timing assertions."""

import math
import os
import sys

import numpy as np

import pytest

pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import bench_sklearn  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_small_and_large_rows_and_table():
    small = bench_sklearn.bench_small(names=("diabetes",), folds=2, max_iter=2)
    assert {(r["dataset"], r["library"]) for r in small} == {
        ("diabetes", lib) for lib in ("scikit-learn", "normlab", "normlab, batch_norm=False")}
    for r in small:
        assert len(r["scores"]) == 2 and all(math.isfinite(s) for s in r["scores"])
        assert r["epochs_mean"] == 2 and r["fit_s_mean"] > 0 and r["cpu_s_mean"] > 0
    large = bench_sklearn.bench_large(n_train=600, n_test=200, n_features=8, epochs=1, repeats=1)
    assert [r["variant"] for r in large][0] == "scikit-learn (float64)"
    assert all(r["epochs"] == 1 and 0 <= r["accuracy"] <= 1 and r["speedup_vs_sklearn"] > 0
               and r["wall_speedup_vs_sklearn"] > 0 for r in large)
    meta = {"large": dict(n_train=600, n_test=200, n_features=8, epochs=1, repeats=1)}
    table = bench_sklearn.format_markdown(small, large, meta)
    assert "| diabetes | R^2 | scikit-learn |" in table and "| diabetes | R^2 | normlab |" in table and "sklearn CPU time / this" in table


def test_repeated_cv_pairs_each_variant_with_scikit_learn_on_the_same_folds():
    small = bench_sklearn.bench_small(names=("wine",), folds=2, max_iter=2, seeds=(0, 1))
    by = {r["library"]: r for r in small}
    ref = np.reshape(by["scikit-learn"]["scores"], (2, 2))
    for lib in ("normlab", "normlab, batch_norm=False"):
        r = by[lib]
        assert len(r["scores"]) == 4 and r["seeds"] == 2
        per_seed = (np.reshape(r["scores"], (2, 2)) - ref).mean(axis=1)
        assert r["diff_mean"] == pytest.approx(per_seed.mean())
        assert r["diff_se"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)
    assert by["scikit-learn"]["diff_mean"] == 0.0
    assert "2 seed(s) x 2-fold CV" in bench_sklearn.format_markdown(small, [], {})
