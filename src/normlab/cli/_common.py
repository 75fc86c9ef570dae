"""What the subcommands share: argument types, plain-text help, errors and output."""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys

__all__ = [
    "CommandError",
    "UsageError",
    "Interrupted",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "one_line",
    "check_writable",
    "finite_float",
    "plain",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "say",
    "add_command",
    "missing_extra",
    "report_error",
    "warm_up",
]

#: print that reaches a pipe at once (``normlab demo | cat`` shows progress as it goes)
say = functools.partial(print, flush=True)


#: exit statuses, the same in every subcommand: a usage error is what was typed (an option, a
#: config file or its contents); a failure is what the command met while running (data files,
#: outputs that cannot be written, missing optional dependencies)
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class CommandError(Exception):
    """A runtime failure of a subcommand: ``main`` prints its message on one line and returns 1."""

    exit_status = EXIT_FAILURE


class UsageError(CommandError):
    """A mistake in what was typed (a config file and its contents included): one line, exit status 2.

    Unlike argparse's own errors, no usage is printed: the line names the file,
    the key and what was expected, which the usage would not.
    """

    exit_status = EXIT_USAGE


class Interrupted(CommandError):
    """Ctrl-C, after the command has put away what it could: its message on one line, exit status 130."""

    exit_status = EXIT_INTERRUPTED


def one_line(text: str) -> str:
    """``text`` on one line: a line ending in ':' runs into the next, other lines are joined by '; '."""
    lines = [re.sub(r"\s{2,}", " ", l.strip()) for l in str(text).strip().splitlines() if l.strip()]
    out = ""
    for line in lines:
        if out:
            out += " " if out.endswith(":") else ("; " if not out.endswith((".", ";")) else " ")
        out += line
    return out


def check_writable(path, what: str, *, folder: bool = False) -> None:
    """Raise :class:`CommandError` unless the file (or, with ``folder``, the folder) ``path`` can be written.

    Nothing is created: the first existing folder on the way to ``path``
    must be a writable folder, and ``path`` itself, if it exists, a writable
    file (a folder). Called before any long work, so that an output that
    cannot be written fails in a second, not after training.
    """
    from pathlib import Path

    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise CommandError(f"{path}: the {what} is a file, not a folder.")
        if not folder and path.is_dir():
            raise CommandError(f"{path}: the {what} is a folder, not a file name.")
        if not os.access(path, os.W_OK | (os.X_OK if folder else 0)):
            raise CommandError(f"{path}: the {what} cannot be written (permission denied).")
        if folder:
            return
    elif path.is_symlink():
        raise CommandError(f"{path}: the {what} is a broken link.")
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: mkdir would fail on it
            raise CommandError(f"{path}: cannot create the folder of the {what}: {parent} is a broken link.")
        parent = parent.parent
    if not parent.is_dir():
        raise CommandError(f"{path}: cannot create the {what}{'' if folder else ' or its folder'}: {parent} is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"{path}: the {what} cannot be written: no permission to write in {parent}.")


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_INTERPRETED = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")


def plain(text: str | None) -> str | None:
    """``text`` (a docstring) without reST markup, for ``--help``.

    ``:func:`normlab.load_model``` becomes ``normlab.load_model``, double and
    single back-quoted literals lose their quotes, and a paragraph ending
    in ``::`` (a literal block follows) ends in ``:``.
    """
    if text is None:
        return None
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.M)


def _checked_int(text: str, low: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"must be {what}, got {v}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _checked_int(text, 1, ">= 1")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _checked_int(text, 0, ">= 0")


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    v = finite_float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def add_command(sub, name: str, *, help: str, description: str | None, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser: plain-text description, and its own usage on errors.

    The parser is stored in the parsed arguments (``args.command_parser``), so
    that an unknown option is reported with the usage of the subcommand it was
    given to, not the top level's.
    """
    p = sub.add_parser(
        name,
        help=plain(help),
        description=plain(description),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )
    p.set_defaults(command_parser=p)
    return p


# optional dependencies by the top-level module an ImportError names
_EXTRAS = {
    "sklearn": ("scikit-learn", "normlab[datasets]"),
    "matplotlib": ("matplotlib", "normlab[plot]"),
    "numba": ("numba", "normlab[fast]"),
    "tomli": ("tomli", "tomli"),
    "threadpoolctl": ("threadpoolctl", "threadpoolctl"),
}


def missing_extra(exc: ImportError) -> str | None:
    """One line saying what to install for ``exc``, or None if it is not a missing optional dependency.

    normlab's own messages for missing extras already say what to install;
    a bare ``ModuleNotFoundError`` for a known optional module gets one.
    """
    name = (getattr(exc, "name", None) or "").split(".")[0]
    cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else None
    if not name and cause is not None:
        name = (getattr(cause, "name", None) or "").split(".")[0]
    message = str(exc)
    if "pip install" in message:
        # keep normlab's sentence up to the install command, without the nested import error
        return re.sub(r" \([^()]*could not be imported: .*?\)", "", message).strip()
    if name in _EXTRAS:
        package, spec = _EXTRAS[name]
        return f"this needs {package}, which is not installed: pip install \"{spec}\""
    return None


def report_error(prog: str, message: str) -> None:
    """Write ``prog: message`` on stderr, on one line."""
    print(f"{prog}: {one_line(message)}", file=sys.stderr, flush=True)


def warm_up(work, prog: str, always: bool = False) -> None:
    """Run ``work()`` (a step or two of the command's networks) under the compile notice.

    With numba on, the kernels the command needs are compiled (first run) or
    loaded from numba's cache (later runs) here, before any timing or
    progress display starts; if anything compiles, one line on stderr says so
    and how long it took. Without numba (or with ``NORMLAB_DISABLE_NUMBA=1``)
    there is nothing to compile, and ``work`` runs only if ``always``.
    """
    from ..kernels._backend import numba_enabled

    if not numba_enabled():
        if always:
            work()
        return
    from ..kernels._compile_notice import compile_notice

    with compile_notice(prefix=prog):
        work()
