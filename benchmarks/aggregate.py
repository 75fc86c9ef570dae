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
    # .get: runs recorded before a column existed have no value for it
    values = [c.get(key) for c in cells]
    # runs without torch have no torch time or ratio
    return None if any(v is None for v in values) else statistics.median(values)


def _table(runs, section, header, label, columns, each_key) -> list[str]:
    """One Markdown table: ``label(row)``, then ``fmt(median of key)`` per column, then each run's ratio."""
    lines = [header, "|" + "---:|" * (header.count("|") - 2) + "---|"]
    for j, row in enumerate(runs[0][section]):
        cells = [r[section][j] for r in runs]
        values = [fmt(_median(cells, key)) for key, fmt in columns]
        each = ", ".join(_ratio(c[each_key]) for c in cells)
        lines.append(f"| {label(row)} | " + " | ".join(values) + f" | {each} |")
    return lines


def aggregate(runs: list[dict]) -> str:
    """The two tables (training step, BatchNormalization alone) as Markdown."""
    if not runs:
        raise ValueError("aggregate: no runs given.")
    lines = []
    if runs[0].get("train_step"):
        lines += _table(
            runs, "train_step",
            "| net | batch | normlab train_on_batch | normlab _train_step | functional / Sequential | torch eager "
            "| torch / train_on_batch | torch / _train_step | matrix products alone "
            "| torch / products (ceiling) | torch / _train_step, each run |",
            lambda row: f"{'BN' if row['variant'] == 'bn' else row['variant']} | {row['batch']}",
            [("normlab_train_on_batch_s", _time), ("normlab_train_step_s", _time),
             ("functional_over_sequential", _ratio), ("torch_s", _time),
             ("ratio_train_on_batch", _ratio), ("ratio_train_step", _ratio),
             ("matrix_products_s", _time), ("ratio_ceiling", _ratio)],
            "ratio_train_step",
        )
        lines.append("")
    if runs[0].get("batchnorm"):
        lines += _table(
            runs, "batchnorm",
            "| shape normlab (native) | shape torch (native) | normlab | torch eager | torch / normlab "
            "| normlab / bound (5 passes) | normlab / bound (8 passes) | torch / normlab, each run |",
            lambda row: f"{tuple(row['normlab_shape'])} | {tuple(row['torch_shape'])}",
            [("normlab_s", _time), ("torch_s", _time), ("ratio", _ratio),
             ("normlab_over_bound_min", _ratio), ("normlab_over_bound_stream", _ratio)],
            "ratio",
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
