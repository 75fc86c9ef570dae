"""Run the normlab benchmark suite against its peers (same process, same thread count).

Usage::

    PYTHONPATH=src python benchmarks/run.py              # full run, 1 thread, every peer installed, cold start
    PYTHONPATH=src python benchmarks/run.py --quick      # smoke run, a few seconds (torch eager only)
    PYTHONPATH=src python benchmarks/run.py --threads 1 2 --json out.json --markdown out.md

The peers: torch eager always (where installed); ``--peers`` adds torch
channels-last, torch.compile and jax.jit (all three by default in a full run).
With several thread counts each runs in a process of its own (jax fixes its
thread pool when imported); the JSON file then holds ``{"runs": [...]}``.

Also importable: ``benchmarks.run.run_benchmarks(...)`` returns the result dict.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``normlab`` importable
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, _root)
    try:
        import normlab  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(_root, "src"))
    __package__ = "benchmarks"

from . import _timing
from ._timing import FULL, QUICK, TimingConfig, machine_info, measure_bandwidth, pinned_threads
from ._peers import set_jax_threads
from .bench_bn import SHAPES, bench_bn
from .bench_cold_start import bench_cold_start
from .bench_train_step import BATCHES, bench_train_step
from .report import format_markdown, format_text, write_json, write_markdown

__all__ = ["run_benchmarks", "main", "build_parser"]


def run_benchmarks(
    *,
    threads: int = 1,
    quick: bool = False,
    use_torch: bool = True,
    which: tuple = ("train", "bn"),
    batches=BATCHES,
    variants=("bn", "plain"),
    shapes=SHAPES,
    cfg: TimingConfig | None = None,
    seed: int = 0,
    command: str | None = None,
    peers: tuple = (),
    cold_rounds: int = 3,
    warmup: bool = False,
) -> dict:
    """Run the selected benchmarks and return ``{"meta", "train_step", "batchnorm", "bandwidth", "cold_start"}``.

    ``which``: any of ``"train"``, ``"bn"``, ``"cold"``; ``peers``: any of
    ``"channels_last"``, ``"compile"``, ``"jax"``.
    """
    set_jax_threads(threads)
    t_start = time.perf_counter()
    cfg = cfg or (QUICK if quick else FULL)
    use_torch = bool(use_torch and _timing.torch_available())
    res: dict = {
        "meta": {
            "threads": int(threads),
            "quick": bool(quick),
            "torch": use_torch,
            "timing": cfg.as_dict(),
            "machine": machine_info(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": command,
            "ratio": "torch_time / normlab_time (> 1 means normlab is faster)",
            "loadavg_before": _loadavg(),
            "peers": list(peers),
        },
        "train_step": [],
        "batchnorm": [],
        "bandwidth": None,
        "cold_start": None,
    }
    with pinned_threads(threads):
        if "train" in which:
            res["train_step"] = bench_train_step(batches, variants, cfg, use_torch=use_torch, seed=seed, peers=peers)
        if "bn" in which:
            bw = measure_bandwidth(mib=32.0 if quick else 256.0, repeats=3 if quick else 7)
            res["bandwidth"] = bw
            res["batchnorm"] = bench_bn(shapes, cfg, use_torch=use_torch, bandwidth_Bps=bw["bandwidth_Bps"], seed=seed,
                                        peers=peers)
    if "cold" in which:  # fresh processes, each pinned through its environment
        cold_peers = (("torch",) if use_torch else ()) + tuple(p for p in peers if p in ("compile", "jax"))
        res["cold_start"] = bench_cold_start(cold_rounds, threads, peers=cold_peers, warmup=warmup)
    res["meta"]["loadavg_after"] = _loadavg()
    res["meta"]["elapsed_s"] = time.perf_counter() - t_start
    return res


def _loadavg():
    """1-minute load average (other processes compete for the cores), or None."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _shape_arg(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.strip("()[] ").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}; write e.g. 1024,1024") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Time normlab against PyTorch CPU eager in one process at a pinned thread count: one "
        "training step of the BN paper's MNIST MLP (with and without BatchNormalization) and the "
        "BatchNormalization layer alone (forward + backward, with a memory-bandwidth roofline). "
        "Prints medians and ratios torch/normlab (> 1: normlab faster).",
    )
    p.add_argument("--threads", type=int, nargs="+", default=[1],
                   help="thread limit of normlab (and numpy's BLAS), torch and jax; several: one run each (default 1)")
    p.add_argument("--quick", action="store_true", help="fast smoke run (a few seconds; numbers are noisy)")
    p.add_argument("--repeats", type=int, help="timed repeats per case (default 7, quick 3)")
    p.add_argument("--target-time", type=float, help="seconds per repeat (default 0.2, quick 0.005)")
    p.add_argument("--only", choices=("train", "bn", "cold"),
                   help="run only the training step, the BN layer or the cold start")
    p.add_argument("--peers", nargs="+", choices=("channels_last", "compile", "jax", "none"),
                   help="peers beside torch eager (default: all three in a full run, none with --quick)")
    p.add_argument("--cold-rounds", type=int, default=None, help="rounds of the cold-start benchmark (default 3)")
    p.add_argument("--warmup", action="store_true",
                   help="cold start: also time `normlab warmup` and the first step after it")
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="training-step batch sizes")
    p.add_argument("--variants", nargs="+", choices=("bn", "plain"), default=["bn", "plain"])
    p.add_argument("--shapes", type=_shape_arg, nargs="+", default=list(SHAPES),
                   help="BN shapes, channels-last, e.g. 60,100 64,32,32,64")
    p.add_argument("--no-torch", action="store_true", help="time normlab alone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the full results (all repeats) as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown")
    return p


def _per_thread_runs(args, argv_list) -> dict:
    """Run the suite once per thread count, each in a process of its own; returns ``{"runs": [...]}``."""
    import json
    import subprocess
    import tempfile

    rest, skip = [], False
    for a in argv_list:  # the same options, without --threads / --json / --markdown and their values
        if skip:
            if a.startswith("-"):
                skip = False
            else:
                continue
        if a in ("--threads", "--json", "--markdown"):
            skip = True
            continue
        rest.append(a)
    runs = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for n in args.threads:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "run.json")
            env = dict(os.environ)
            import normlab

            # the same normlab and benchmarks as this process, whichever way they were found
            here = [os.path.dirname(os.path.dirname(os.path.abspath(normlab.__file__))), root]
            env["PYTHONPATH"] = os.pathsep.join(here + [env.get("PYTHONPATH", "")])
            subprocess.run([sys.executable, "-m", "benchmarks.run", "--threads", str(n), "--json", path, *rest],
                           check=True, env=env, cwd=root)
            with open(path) as fh:
                runs.append(json.load(fh))
        print()
    return {"runs": runs}


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if any(t < 1 for t in args.threads):
        raise SystemExit("--threads must be >= 1")
    argv_list = sys.argv[1:] if argv is None else list(argv)
    if len(args.threads) > 1:
        res = _per_thread_runs(args, argv_list)
        if args.json:
            write_json(res, args.json)
        if args.markdown:
            with open(args.markdown, "w") as fh:
                fh.write("\n".join(format_markdown(r) for r in res["runs"]))
        return res
    base = QUICK if args.quick else FULL
    cfg = TimingConfig(
        repeats=args.repeats or base.repeats,
        target_s=args.target_time or base.target_s,
        warmup=base.warmup,
        max_number=base.max_number,
        collect=base.collect,
    )
    if not args.no_torch and not _timing.torch_available():
        print("torch is not installed: timing normlab alone.", file=sys.stderr)
    if args.peers is None:
        peers = () if args.quick else ("channels_last", "compile", "jax")
    else:
        peers = tuple(p for p in args.peers if p != "none")
    if args.only:
        which = (args.only,)
    else:
        which = ("train", "bn") if args.quick else ("train", "bn", "cold")
    res = run_benchmarks(
        threads=args.threads[0],
        quick=args.quick,
        use_torch=not args.no_torch,
        which=which,
        batches=tuple(args.batches),
        variants=tuple(args.variants),
        shapes=tuple(args.shapes),
        cfg=cfg,
        seed=args.seed,
        command="PYTHONPATH=src python benchmarks/run.py " + " ".join(argv_list),
        peers=peers,
        cold_rounds=args.cold_rounds or (1 if args.quick else 3),
        warmup=args.warmup,
    )
    print(format_text(res))
    if args.json:
        write_json(res, args.json)
    if args.markdown:
        write_markdown(res, args.markdown)
    return res


if __name__ == "__main__":
    main()
