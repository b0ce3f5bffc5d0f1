"""``buttress telemetry``: export the shipped Prometheus rules and Grafana dashboard."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._exceptions import ConfigurationError

__all__ = ["register"]


def _write(text: str, output: str | None, command: str) -> int:
    """Write ``text`` to ``output`` (stdout for ``None`` or ``-``); returns the exit code."""
    if output is None or output == "-":
        sys.stdout.write(text)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        print(
            f"buttress telemetry {command}: cannot write {output!r} ({exc.strerror or exc})",
            file=sys.stderr,
        )
        return 2
    return 0


def _export_rules(args: argparse.Namespace) -> int:
    from .alerts import alert_rules

    try:
        text = alert_rules(
            breaker_open_for=args.breaker_open_for,
            budget_for=args.budget_for,
            rejection_ratio=args.rejection_ratio,
            slo=args.slo,
        )
    except ConfigurationError as exc:
        print(f"buttress telemetry export-rules: {exc}", file=sys.stderr)
        return 2
    return _write(text, args.output, "export-rules")


def _export_dashboard(args: argparse.Namespace) -> int:
    from .alerts import dashboard

    return _write(dashboard(title=args.title), args.output, "export-dashboard")


def register(subparsers: Any) -> None:
    """Add the ``telemetry`` command (``export-rules``, ``export-dashboard``)."""
    parser = subparsers.add_parser(
        "telemetry", help="export Prometheus alert rules and the Grafana dashboard"
    )
    sub = parser.add_subparsers(dest="telemetry_command", metavar="SUBCOMMAND", required=True)
    rules = sub.add_parser("export-rules", help="write the Prometheus alerting rules (YAML)")
    rules.add_argument("-o", "--output", help="file to write (default: stdout)")
    rules.add_argument("--breaker-open-for", default="5m", help="duration (default 5m)")
    rules.add_argument("--budget-for", default="5m", help="duration (default 5m)")
    rules.add_argument("--rejection-ratio", type=float, default=0.05, help="default 0.05")
    rules.add_argument("--slo", type=float, default=0.999, help="availability SLO (0.999)")
    rules.set_defaults(func=_export_rules)
    board = sub.add_parser("export-dashboard", help="write the Grafana dashboard (JSON)")
    board.add_argument("-o", "--output", help="file to write (default: stdout)")
    board.add_argument("--title", default="buttress", help="dashboard title")
    board.set_defaults(func=_export_dashboard)
