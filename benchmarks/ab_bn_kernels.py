"""A/B timing of the batch-norm numba kernels: a git revision against the working tree.

On a shared, noisy machine two benchmark runs minutes apart can differ by 30 %;
alternating the two versions in one process, round by round, and comparing the
minimum over rounds is much steadier. The old
``src/normlab/kernels/_batchnorm_numba.py`` (and the ``_bn_*_numba.py``
modules it re-exports) is read with ``git show REV:...``, loaded as a separate module (compiled without numba's cache) and run on the
same arrays as the current one; the outputs must agree bit for bit, or the
comparison is refused (a change that alters results needs its own tests).

::

    PYTHONPATH=src python benchmarks/ab_bn_kernels.py --rev HEAD~3
    PYTHONPATH=src python benchmarks/ab_bn_kernels.py --rev HEAD --shapes 65536,64 8192,512
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KERNEL = "src/normlab/kernels/_batchnorm_numba.py"
SHAPES = ((65536, 64), (8192, 512), (1024, 1024), (60, 100))


def load_revision(rev: str):
    """The kernel module as it was at ``rev``, importable next to the current one.

    Since the kernels were split by concept, ``_batchnorm_numba.py`` re-exports
    them from ``_bn_*_numba.py`` beside it: every such module of ``rev`` is
    loaded too, as one package of its own (its imports of each other stay
    inside it; the other kernel modules are the current ones).
    """
    import re

    root = Path(__file__).resolve().parents[1]
    folder = str(Path(KERNEL).parent)
    listed = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{folder}"], cwd=root, check=True,
                            capture_output=True, text=True).stdout.split()
    names = [Path(KERNEL).stem] + sorted(n[:-3] for n in listed if re.fullmatch(r"_bn_(?!sync)\w+_numba\.py", n))
    pkg = f"_old_bn_kernels_{abs(hash(rev))}"
    where = Path(tempfile.mkdtemp()) / pkg
    where.mkdir()
    (where / "__init__.py").write_text("")
    for name in names:
        text = subprocess.run(["git", "show", f"{rev}:{folder}/{name}.py"], cwd=root, check=True,
                              capture_output=True, text=True).stdout

        def absolute(m, names=names):
            return f"from {pkg}.{m.group(1)} import" if m.group(1) in names else f"from normlab.kernels.{m.group(1)} import"

        text = re.sub(r"from \.(\w+) import", absolute, text).replace("cache=True", "cache=False")
        (where / f"{name}.py").write_text(text)
    sys.path.insert(0, str(where.parent))
    try:
        return importlib.import_module(f"{pkg}.{names[0]}")
    finally:
        sys.path.remove(str(where.parent))


def step(kernels, x, dy, state):
    """One training forward and backward of a plain batch norm (gamma, beta, moving statistics)."""
    g, b, mm, mv, out, dx, mean, inv, dg, db = state
    kernels.train_forward_step(x, g, b, 1e-3, 0.99, 1.0, mm, mv, out, mean, inv)
    kernels.train_backward_step(dy, x, mean, inv, g, dx, dg, db, False)


def compare(old, new, shape, rounds: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]

    def fresh_state():
        return (rng.uniform(0.5, 1.5, c).astype(np.float32), rng.standard_normal(c).astype(np.float32),
                np.zeros(c, np.float32), np.ones(c, np.float32), np.empty_like(x), np.empty_like(x),
                np.empty(c), np.empty(c), np.empty(c, np.float32), np.empty(c, np.float32))

    s_old = fresh_state()
    s_new = tuple(a.copy() for a in s_old)
    step(old, x, dy, s_old)
    step(new, x, dy, s_new)
    for a, b in zip(s_old, s_new):
        if not np.array_equal(a, b):
            raise SystemExit(f"{shape}: the two versions give different results; no timing comparison")
    n = max(1, int(2e6 // x.size))
    times = {"old": [], "new": []}
    for _ in range(rounds):
        for name, kernels, state in (("old", old, s_old), ("new", new, s_new)):
            t0 = time.perf_counter()
            for _ in range(n):
                step(kernels, x, dy, state)
            times[name].append((time.perf_counter() - t0) / n)
    return {k: (min(v), float(np.median(v))) for k, v in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", default="HEAD", help="git revision of the old kernels (default HEAD)")
    p.add_argument("--shapes", nargs="*", help="shapes as m,c (default: %s)" % " ".join(f"{m},{c}" for m, c in SHAPES))
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from normlab.kernels import _batchnorm_numba as new

    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    old = load_revision(args.rev)
    with threadpool_limits(1):
        print(f"batch norm kernels, training forward + backward, float32: {args.rev} (old) vs working tree (new)")
        print(f"{'shape':>14}  {'old min':>11}  {'new min':>11}  {'old median':>11}  {'new median':>11}  old/new (min)")
        for shape in shapes:
            r = compare(old, new, shape, args.rounds)
            (o_min, o_med), (n_min, n_med) = r["old"], r["new"]
            print(f"{str(shape):>14}  {o_min * 1e6:9.1f}us  {n_min * 1e6:9.1f}us  {o_med * 1e6:9.1f}us  "
                  f"{n_med * 1e6:9.1f}us  {o_min / n_min:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
