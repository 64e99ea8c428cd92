"""The ``unitls`` command line tool: ``unitls demo|connect|serve|engines|bench``.

Every failure ends with one line on stderr (``unitls: error: ...``) and a documented exit code;
set ``UNITLS_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from ._cli.common import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CLIError,
    error_line,
    one_line,
)

_COMMANDS = ("demo", "connect", "serve", "engines", "bench")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints a usage block first)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {one_line(message)} (try --help)\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from ._cli import bench, connect, demo, engines, serve

    parser = _Parser(
        prog="unitls",
        description="PEP 748 unified TLS: try, inspect and benchmark the TLS engines.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"unitls {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (demo, connect, serve, engines, bench):
        module.add_parser(sub)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    # One line per distinct warning: --insecure triggers several identical SecurityWarnings.
    text = f"unitls: warning: {one_line(message)}"
    if text not in _seen_warnings:
        _seen_warnings.add(text)
        sys.stderr.write(text + "\n")


_seen_warnings: set[str] = set()


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (see ``unitls --help``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        error_line(f"choose a command: {', '.join(_COMMANDS)} (try --help)")
        return EXIT_USAGE
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            handler: Any = args.handler
            return int(handler(args))
    except CLIError as exc:
        error_line(str(exc))
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write("unitls: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `unitls engines | head`): not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("UNITLS_DEBUG"):
            raise
        from ._cli.common import cli_error_from

        err = cli_error_from(exc)
        error_line(str(err))
        return err.code
    finally:
        warnings.showwarning = old_show


def _entry(argv: Sequence[str] | None = None) -> None:
    sys.exit(main(list(argv) if argv is not None else None))


if __name__ == "__main__":
    _entry()
