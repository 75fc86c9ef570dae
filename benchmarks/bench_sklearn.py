"""normlab.sklearn against scikit-learn's own MLPClassifier / MLPRegressor, in the same run.

Two parts (``PYTHONPATH=src python benchmarks/bench_sklearn.py --help``):

1. **Bundled data sets** (digits, breast cancer, wine; diabetes for
   regression): 5-fold cross-validation (stratified for classifiers,
   shuffled, seed 0) of ``make_pipeline(StandardScaler(), estimator)``, both
   estimators with their defaults (``hidden_layer_sizes=(100,)``, relu,
   Adam at 1e-3, ``batch_size="auto"``, ``max_iter=200`` with the
   ``tol``/``n_iter_no_change`` stopping rule) and ``random_state=0``.
   normlab also runs with ``batch_norm=False`` (scikit-learn's architecture
   exactly). Regression targets are standardized for both
   (``TransformedTargetRegressor(..., transformer=StandardScaler())``).
   Reported: the mean and standard deviation over the folds of the accuracy
   (R^2 for diabetes), the mean fit time per fold and the mean epochs run.
   On every fold both estimators fit the same split, in alternating order.
   ``--seeds N`` repeats the whole CV with seeds 0..N-1 (folds and
   estimators) and reports each normlab variant's paired difference from
   scikit-learn with its standard error over the seeds.
2. **A large synthetic set**: ``make_classification(250_000, 50,
   n_informative=30, random_state=0)``, 200k rows to fit on and 50k held out;
   one hidden layer of 100 relu units, ``batch_size=200`` (scikit-learn's
   "auto"), exactly ``--epochs`` epochs (``tol=0``, so neither stops early).
   Reported: the median fit time over ``--repeats`` rounds (each round fits
   every variant once, in alternating order), held-out accuracy, and the
   ratio of scikit-learn's time to each variant's (> 1: normlab faster).

Times are the process's CPU time (``time.process_time``: every thread of
the process, BLAS and numba included) and wall time. On a shared machine the
wall time of one fit varied 4x between rounds in our runs while the CPU time
stayed within ~20%, so the ratio is taken on CPU time; both are printed.

Both libraries run with the BLAS pinned to ``--threads`` threads (1 by
default); the machine may be shared, so medians and the same-round
interleaving matter more than any single time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "src"))

from benchmarks._timing import machine_info, pinned_threads  # noqa: E402

SMALL = ("digits", "breast_cancer", "wine", "diabetes")


def _load(name: str):
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(return_X_y=True)


def _pipeline(estimator, regression: bool):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if regression:
        estimator = TransformedTargetRegressor(estimator, transformer=StandardScaler())
    return make_pipeline(StandardScaler(), estimator)


def _epochs_run(pipe) -> int:
    est = pipe[-1]
    est = getattr(est, "regressor_", est)
    return int(est.n_iter_)


def bench_small(names=SMALL, folds: int = 5, max_iter: int = 200, seeds=(0,)) -> list[dict]:
    """Cross-validated score and fit time of both libraries on scikit-learn's bundled data sets.

    Each seed ``s`` is one repetition: the folds are shuffled with ``s`` and
    every estimator gets ``random_state=s``. Besides the mean and spread of
    the scores over every fold of every seed, each normlab row gets its
    paired difference with scikit-learn (the same folds): the mean over the
    seeds of the per-seed mean difference, and its standard error over the
    seeds (0 with one seed), which says whether a difference is more than
    the luck of the folds and initializations.
    """
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.neural_network import MLPClassifier as SkC, MLPRegressor as SkR

    from normlab.sklearn import MLPClassifier as NlC, MLPRegressor as NlR

    rows = []
    for name in names:
        X, y = _load(name)
        regression = name == "diabetes"
        nl = NlR if regression else NlC
        makers = {"scikit-learn": (SkR if regression else SkC), "normlab": nl,
                  "normlab, batch_norm=False": lambda **kw: nl(batch_norm=False, **kw)}
        result = {lib: {"score": [], "fit_s": [], "cpu_s": [], "epochs": []} for lib in makers}
        for seed in seeds:
            cv = (KFold if regression else StratifiedKFold)(n_splits=folds, shuffle=True, random_state=seed)
            for k, (tr, te) in enumerate(cv.split(X, y)):
                order = list(makers) if k % 2 == 0 else list(makers)[::-1]
                for lib in order:
                    pipe = _pipeline(makers[lib](random_state=seed, max_iter=max_iter), regression)
                    t0, c0 = time.perf_counter(), time.process_time()
                    pipe.fit(X[tr], y[tr])
                    result[lib]["cpu_s"].append(time.process_time() - c0)
                    result[lib]["fit_s"].append(time.perf_counter() - t0)
                    result[lib]["score"].append(float(pipe.score(X[te], y[te])))
                    result[lib]["epochs"].append(_epochs_run(pipe))
        reference = np.reshape(result["scikit-learn"]["score"], (len(seeds), folds))
        for lib, r in result.items():
            per_seed = (np.reshape(r["score"], (len(seeds), folds)) - reference).mean(axis=1)
            rows.append({
                "dataset": name, "library": lib, "metric": "R^2" if regression else "accuracy",
                "score_mean": float(np.mean(r["score"])), "score_std": float(np.std(r["score"])),
                "diff_mean": float(per_seed.mean()),
                "diff_se": float(per_seed.std(ddof=1) / np.sqrt(len(seeds))) if len(seeds) > 1 else 0.0,
                "seeds": len(seeds), "folds": folds,
                "fit_s_mean": float(np.mean(r["fit_s"])), "cpu_s_mean": float(np.mean(r["cpu_s"])),
                "epochs_mean": float(np.mean(r["epochs"])),
                "scores": r["score"], "fit_s": r["fit_s"],
            })
    return rows


def _large_variants(epochs: int) -> dict:
    from sklearn.neural_network import MLPClassifier as SkC

    from normlab.sklearn import MLPClassifier as NlC

    common = dict(hidden_layer_sizes=(100,), max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1, random_state=0)
    return {
        "scikit-learn (float64)": lambda: SkC(batch_size=200, **common),
        "normlab, batch norm (default)": lambda: NlC(batch_size=200, **common),
        "normlab, no batch norm": lambda: NlC(batch_size=200, batch_norm=False, **common),
    }


def bench_large(n_train: int = 200_000, n_test: int = 50_000, n_features: int = 50, epochs: int = 10,
                repeats: int = 3) -> list[dict]:
    """Fit time at equal epochs and held-out accuracy on ``make_classification``."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_train + n_test, n_features, n_informative=min(30, n_features - 2), random_state=0)
    Xtr, ytr, Xte, yte = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    variants = _large_variants(epochs)
    times = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    acc = {}
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for v in order:
            est = variants[v]()
            t0, c0 = time.perf_counter(), time.process_time()
            est.fit(Xtr, ytr)
            cpu[v].append(time.process_time() - c0)
            times[v].append(time.perf_counter() - t0)
            acc[v] = (float(est.score(Xte, yte)), int(est.n_iter_))
    ref = statistics.median(cpu["scikit-learn (float64)"])
    ref_wall = statistics.median(times["scikit-learn (float64)"])
    return [{"variant": v, "cpu_s_median": statistics.median(cpu[v]), "cpu_s": cpu[v],
             "fit_s_median": statistics.median(t), "fit_s": t, "accuracy": acc[v][0], "epochs": acc[v][1],
             "speedup_vs_sklearn": ref / statistics.median(cpu[v]),
             "wall_speedup_vs_sklearn": ref_wall / statistics.median(t)} for v, t in times.items()]


def format_markdown(small: list[dict], large: list[dict], meta: dict) -> str:
    lines = []
    if small:
        lines += [f"{small[0]['seeds']} seed(s) x {small[0]['folds']}-fold CV:", "",
                  "| data set | metric | estimator | score (mean ± sd over folds) | minus scikit-learn's "
                  "(paired; ± s.e. over seeds) | fit CPU s/fold | fit wall s/fold | epochs run |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in small:
            diff = "" if r["library"] == "scikit-learn" else f"{r['diff_mean']:+.4f} ± {r['diff_se']:.4f}"
            lines.append(f"| {r['dataset']} | {r['metric']} | {r['library']} | {r['score_mean']:.4f} ± "
                         f"{r['score_std']:.4f} | {diff} | {r['cpu_s_mean']:.2f} | {r['fit_s_mean']:.2f} | "
                         f"{r['epochs_mean']:.0f} |")
        lines.append("")
    if large:
        lines += [f"make_classification, {meta['large']['n_train']:,} x {meta['large']['n_features']} "
                  f"(held-out {meta['large']['n_test']:,}), {meta['large']['epochs']} epochs, batch 200, "
                  f"hidden (100,), median of {meta['large']['repeats']}:", "",
                  "| variant | fit CPU time (s) | sklearn CPU time / this | fit wall time (s) | "
                  "sklearn wall / this | held-out accuracy |", "|---|---|---|---|---|---|"]
        for r in large:
            lines.append(f"| {r['variant']} | {r['cpu_s_median']:.2f} | {r['speedup_vs_sklearn']:.2f}x | "
                         f"{r['fit_s_median']:.2f} | {r['wall_speedup_vs_sklearn']:.2f}x | {r['accuracy']:.4f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("small", "large"), help="run one part")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of both libraries (default 1)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the large comparison (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="rounds of the large comparison (default 5)")
    p.add_argument("--seeds", type=int, default=1,
                   help="repetitions of the bundled sets' CV, seeds 0..N-1 for folds and estimators (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 folds, 20 epochs, 20k rows, 2 epochs")
    p.add_argument("--json", help="write the results here")
    return p


def run(args) -> dict:
    quick = args.quick
    meta = {"machine": machine_info(), "threads": args.threads, "quick": quick}
    import sklearn

    meta["sklearn"] = sklearn.__version__
    small, large = [], []
    with pinned_threads(args.threads), warnings.catch_warnings():
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        if args.only in (None, "small"):
            small = bench_small(folds=2 if quick else 5, max_iter=20 if quick else 200,
                                seeds=tuple(range(args.seeds)))
        if args.only in (None, "large"):
            sizes = dict(n_train=20_000, n_test=5_000, epochs=2, repeats=1) if quick else \
                dict(n_train=200_000, n_test=50_000, epochs=args.epochs, repeats=args.repeats)
            meta["large"] = dict(sizes, n_features=50)
            large = bench_large(n_features=50, **sizes)
    return {"meta": meta, "small": small, "large": large}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    print(format_markdown(result["small"], result["large"], result["meta"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
