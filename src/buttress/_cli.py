"""The ``buttress`` command line (also ``python -m buttress``).

Subcommands register themselves: each module in `_COMMAND_MODULES` that exists defines
``register(subparsers)``, adding its parser with ``set_defaults(func=...)``; ``func(args)``
returns the exit code. Exit codes: 0 success, 1 failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

_COMMAND_MODULES = (
    "buttress._demo",
    "buttress.lab.cli",
    "buttress.telemetry.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="buttress",
        description="buttress: resilience strategies and the failure lab.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of buttress is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
