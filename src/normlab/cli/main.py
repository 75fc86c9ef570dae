"""``normlab``: entry point; each subcommand lives in its own module.

Exit status: 0 on success, 2 for a usage error (an unknown option, a bad
value: the subcommand's usage is printed), 1 for a failure while running
(a missing file or optional dependency, an invalid config: one message on
stderr, no traceback), 130 when interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import bench, demo, experiment, train
from ._common import CommandError, missing_extra, report_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normlab",
        description="normlab: batch normalization and the toolkit around it, on NumPy.",
        epilog="Run normlab COMMAND --help for a command's options. Exit status: 0 done, "
        "1 failed while running, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(sub)
    train.add_parser(sub)
    experiment.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Usage errors raise ``SystemExit(2)`` from argparse, with the usage of the
    subcommand concerned.
    """
    parser = build_parser()
    # only `normlab bench` takes options it does not list (passed on to benchmarks/run.py)
    args, extra = parser.parse_known_args(argv)
    own = getattr(args, "command_parser", None) or parser
    if extra:
        if not getattr(args, "accepts_extra", False):
            own.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
    if not getattr(args, "func", None):
        own.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CommandError as e:
        report_error(own.prog, e)
    except ImportError as e:
        hint = missing_extra(e)
        if hint is None:
            raise
        report_error(own.prog, hint)
    except KeyboardInterrupt:
        print(f"\n{own.prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
