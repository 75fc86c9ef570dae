"""What the subcommands share: argument types, plain-text help, errors and output."""

from __future__ import annotations

import argparse
import functools
import re
import sys

__all__ = [
    "CommandError",
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


class CommandError(Exception):
    """A runtime failure of a subcommand: ``main`` prints its message on one line and returns 1."""


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


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
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
    """Write ``prog: message`` on stderr."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


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
