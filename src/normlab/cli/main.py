"""``normlab``: entry point; each subcommand lives in its own module.

Exit status, the same in every subcommand:

* 0: done.
* 2: a usage error, a mistake in what was typed: an unknown option or a bad
  value on the command line (argparse prints the subcommand's usage, then
  the error), or a config file that is missing, unreadable, not TOML, or
  holds an unknown key, a value of the wrong type or out of range (one line
  naming the file, the key and what was expected).
* 1: a failure while running: data files missing or not what they should
  be, an output that cannot be written, a missing optional dependency (one
  line saying what and where).
* 130: interrupted with Ctrl-C (one line; ``normlab train`` keeps a
  checkpoint to resume from).

No user mistake shows a traceback; one is shown only for a bug.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import bench, demo, experiment, train, warmup
from ._common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CommandError, missing_extra, report_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normlab",
        description="normlab: batch normalization and the toolkit around it, on NumPy.",
        epilog="Run normlab COMMAND --help for a command's options. Exit status: 0 done, "
        "1 failed while running, 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(sub)
    train.add_parser(sub)
    experiment.add_parser(sub)
    bench.add_parser(sub)
    warmup.add_parser(sub)
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
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except CommandError as e:
        if e.exit_status == EXIT_INTERRUPTED:
            print(file=sys.stderr)  # off the line of the terminal's ^C
        report_error(own.prog, str(e))
        return e.exit_status
    except ImportError as e:
        hint = missing_extra(e)
        if hint is None:
            raise
        report_error(own.prog, hint)
    except KeyboardInterrupt:
        print(f"\n{own.prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OSError as e:
        # a file the command met while running (a disk full, a folder that became read-only)
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        report_error(own.prog, f"{where}{e.strerror or e}")
    return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
