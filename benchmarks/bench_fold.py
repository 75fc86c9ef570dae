"""Inference with batch norm folded into the preceding layer (``normlab.fold_batchnorm``).

Times ``model.predict`` of the BN benchmark network (784-100-100-100-10,
Dense without bias -> BatchNormalization -> sigmoid) before and after
folding, on a batch of 1024 and of 60; the folded model computes the same
predictions with three fewer layers.

    PYTHONPATH=src python benchmarks/bench_fold.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

if __package__ in (None, ""):
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, _root)
    sys.path.insert(1, os.path.join(_root, "src"))
    __package__ = "benchmarks"

from ._timing import FULL, QUICK, pinned_threads, time_interleaved


def bn_network(seed=0):
    import normlab
    from normlab.layers import Activation, BatchNormalization, Dense

    layers = []
    for _ in range(3):
        layers += [Dense(100, use_bias=False), BatchNormalization(), Activation("sigmoid")]
    layers.append(Dense(10, activation="softmax"))
    model = normlab.Sequential(layers)
    model.build((None, 784), seed=seed)
    return model


def bench_fold(batches=(60, 1024), cfg=FULL, seed=0) -> list[dict]:
    import normlab

    model = bn_network(seed)
    rng = np.random.default_rng(seed)
    for _ in range(5):  # move the moving statistics away from (0, 1)
        model(rng.random((256, 784), dtype=np.float32), training=True)
    folded = normlab.fold_batchnorm(model)
    rows = []
    for b in batches:
        x = rng.random((b, 784), dtype=np.float32)
        err = float(np.abs(folded.predict(x, batch_size=b) - model.predict(x, batch_size=b)).max())
        t = time_interleaved(
            {"bn": lambda: model.predict_on_batch(x), "folded": lambda: folded.predict_on_batch(x)}, cfg
        )
        rows.append({
            "batch": b,
            "bn_s": t["bn"]["median_s"],
            "folded_s": t["folded"]["median_s"],
            "speedup": t["bn"]["median_s"] / t["folded"]["median_s"],
            "max_abs_diff": err,
        })
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    with pinned_threads(a.threads):
        rows = bench_fold(cfg=QUICK if a.quick else FULL)
    print(f"predict_on_batch, BN network, {a.threads} thread(s)")
    print(f"{'batch':>6}{'with BN us':>12}{'folded us':>11}{'speedup':>9}{'max |diff|':>12}")
    for r in rows:
        print(f"{r['batch']:>6}{r['bn_s'] * 1e6:>12.1f}{r['folded_s'] * 1e6:>11.1f}{r['speedup']:>9.2f}{r['max_abs_diff']:>12.2e}")
    return rows


if __name__ == "__main__":
    main()
