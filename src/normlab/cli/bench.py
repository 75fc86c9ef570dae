"""``normlab bench``: run the benchmark suite (``benchmarks/run.py`` of the source tree).

Times one training step of the BN paper's MNIST network (with and without
batch normalization) and the BatchNormalization layer alone against PyTorch
CPU eager, torch channels-last, torch.compile and jax.jit (those installed),
in one process at a pinned thread count (``--threads 1 2``: one run per
count), with the matrix-product and memory-bandwidth floors; then the cold
start (a fresh process to the end of the first training step, with an empty
and a warm numba cache, against torch and jax). The benchmarks live in
the repository's ``benchmarks/`` folder, not in the installed package: run
from a checkout (they are found next to ``src/``, in the current folder or in
``--path``). Every option is passed on to ``benchmarks/run.py``; the common
ones are listed here, the rest are in ``python benchmarks/run.py --help``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from ._common import CommandError, add_command, check_writable, positive_int


def find_benchmarks(path=None) -> Path | None:
    """The folder holding ``benchmarks/run.py``'s parent (a repository root), or None."""
    candidates = []
    if path is not None:
        p = Path(path).expanduser().resolve()
        candidates += [p.parent if p.name == "benchmarks" else p]
    env = os.environ.get("NORMLAB_BENCHMARKS")
    if env:
        p = Path(env).expanduser().resolve()
        candidates.append(p.parent if p.name == "benchmarks" else p)
    here = Path(__file__).resolve()
    # src/normlab/cli/bench.py -> the repository root is three folders up from normlab/
    candidates.append(here.parents[3])
    candidates.append(Path.cwd())
    for root in candidates:
        if (root / "benchmarks" / "run.py").is_file():
            return root
    return None


def import_runner(root: Path):
    """Import ``benchmarks.run`` from ``root`` (and not another ``benchmarks`` package)."""
    root_s = os.fspath(root)
    loaded = sys.modules.get("benchmarks")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent != (root / "benchmarks").resolve():
        for name in [n for n in sys.modules if n == "benchmarks" or n.startswith("benchmarks.")]:
            del sys.modules[name]
    if root_s not in sys.path:
        sys.path.insert(0, root_s)
    return importlib.import_module("benchmarks.run")


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "bench",
        help="run the benchmark suite (normlab vs torch and jax: training step, BN layer, cold start)",
        description=__doc__,
    )
    p.add_argument("--quick", action="store_true", help="fast smoke run (a few seconds; numbers are noisy)")
    p.add_argument("--threads", type=positive_int, nargs="+", default=None,
                   help="thread limits to run at, e.g. 1 2 (normlab and numpy's BLAS, torch, jax; default 1)")
    p.add_argument("--only", choices=("train", "bn", "cold"), default=None,
                   help="run only the training-step, the BN or the cold-start benchmark")
    p.add_argument("--no-torch", action="store_true", help="time normlab alone")
    p.add_argument("--json", metavar="PATH", default=None, help="write the full results as JSON")
    p.add_argument("--markdown", metavar="PATH", default=None, help="write the tables as Markdown")
    p.add_argument("--path", metavar="DIR", default=None, help="the repository (or its benchmarks/ folder) to run from")
    p.set_defaults(func=_main, accepts_extra=True)


def _forward_argv(args) -> list[str]:
    argv = []
    if args.quick:
        argv.append("--quick")
    if args.threads is not None:
        argv += ["--threads", *(str(n) for n in args.threads)]
    if args.only:
        argv += ["--only", args.only]
    if args.no_torch:
        argv.append("--no-torch")
    if args.json:
        argv += ["--json", args.json]
    if args.markdown:
        argv += ["--markdown", args.markdown]
    return argv + list(getattr(args, "extra", []) or [])


def _main(args) -> int:
    if args.path is not None:
        given = Path(args.path).expanduser()
        if not (given / "benchmarks" / "run.py").is_file() and not (given / "run.py").is_file():
            raise CommandError(f"--path {args.path}: no benchmarks/run.py there; pass the repository (or its "
                               "benchmarks/ folder).")
    # the result files, before the benchmarks run rather than after
    for option in ("json", "markdown"):
        if getattr(args, option):
            check_writable(getattr(args, option), f"--{option} file")
    root = find_benchmarks(args.path)
    if root is None:
        raise CommandError(
            "the benchmark suite (benchmarks/run.py) was not found. It ships with the source "
            "repository, not with the installed package: run `normlab bench` from a checkout of normlab, "
            "or pass --path /path/to/normlab (or set NORMLAB_BENCHMARKS)."
        )
    try:
        runner = import_runner(root)
    except ImportError as e:
        raise CommandError(f"could not import benchmarks/run.py from {root}: {e}") from None
    argv = _forward_argv(args)
    build = getattr(runner, "build_parser", None)
    if build is not None:
        # the options passed on are checked here, so that a bad one is reported with
        # this command's name and the suite's full usage, before anything runs
        check = build()
        check.prog = args.command_parser.prog
        check.parse_args(argv)
    for option in ("json", "markdown"):
        if getattr(args, option):  # the suite writes its files without making their folder
            Path(getattr(args, option)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    runner.main(argv)
    return 0
