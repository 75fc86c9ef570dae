"""Merge several JSON files of ``benchmarks/run.py`` into Markdown tables of medians.

The machine is shared and noisy: one run's medians can move by 10-50 %.
Each cell here is the median over the runs of that cell, and the last
column lists every run's ratio so the spread stays visible::

    python benchmarks/aggregate.py benchmarks/results/t1_f1.json benchmarks/results/t1_f2.json ...
"""

from __future__ import annotations

import argparse
import json
import statistics


def _time(seconds) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e6:.0f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _median(cells, key):
    values = [c[key] for c in cells]
    # runs without torch have no torch time or ratio
    return None if any(v is None for v in values) else statistics.median(values)


def aggregate(runs: list[dict]) -> str:
    """The two tables (training step, BatchNormalization alone) as Markdown."""
    if not runs:
        raise ValueError("aggregate: no runs given.")
    lines = []
    if runs[0].get("train_step"):
        lines += [
            "| net | batch | normlab train_on_batch | normlab _train_step | torch eager "
            "| torch / train_on_batch | torch / _train_step | torch / _train_step, each run |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for j, row in enumerate(runs[0]["train_step"]):
            cells = [r["train_step"][j] for r in runs]

            def med(key, cells=cells):
                return _median(cells, key)

            each = ", ".join(_ratio(c["ratio_train_step"]) for c in cells)
            net = "BN" if row["variant"] == "bn" else row["variant"]
            lines.append(
                f"| {net} | {row['batch']} | {_time(med('normlab_train_on_batch_s'))} "
                f"| {_time(med('normlab_train_step_s'))} | {_time(med('torch_s'))} "
                f"| {_ratio(med('ratio_train_on_batch'))} | {_ratio(med('ratio_train_step'))} | {each} |"
            )
        lines.append("")
    if runs[0].get("batchnorm"):
        lines += [
            "| shape normlab (native) | shape torch (native) | normlab | torch eager | torch / normlab "
            "| normlab / bound (5 passes) | normlab / bound (8 passes) | torch / normlab, each run |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for j, row in enumerate(runs[0]["batchnorm"]):
            cells = [r["batchnorm"][j] for r in runs]

            def med(key, cells=cells):
                return _median(cells, key)

            each = ", ".join(_ratio(c["ratio"]) for c in cells)
            lines.append(
                f"| {tuple(row['normlab_shape'])} | {tuple(row['torch_shape'])} | {_time(med('normlab_s'))} "
                f"| {_time(med('torch_s'))} | {_ratio(med('ratio'))} | {_ratio(med('normlab_over_bound_min'))} "
                f"| {_ratio(med('normlab_over_bound_stream'))} | {each} |"
            )
    return "\n".join(lines)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="JSON files written by benchmarks/run.py --json")
    args = p.parse_args(argv)
    runs = []
    for path in args.files:
        with open(path, encoding="utf-8") as fh:
            runs.append(json.load(fh))
    text = aggregate(runs)
    print(text)
    return text


if __name__ == "__main__":
    main()
