"""``buttress lab``: run, validate and list failure scenarios.

* ``buttress lab run SCENARIO [--pipeline mod:attr] [--seeds N] [--workers M] [--out DIR]``
* ``buttress lab validate SCENARIO...``
* ``buttress lab list``
* ``buttress lab demo`` (what ``make demo`` runs)

``SCENARIO`` is a path to a TOML file or the name of a bundled scenario (``lab list``).
Exit codes: 0 success, 1 failure, 2 bad input (scenario file or arguments, or a run that
livelocks), 130 interrupted (Ctrl-C; an output directory the run created and left empty
is removed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ScenarioError

__all__ = ["BUNDLED", "register", "resolve_scenario"]

BUNDLED = Path(__file__).with_name("scenarios")
"""Directory of the scenarios shipped inside the package (``lab list``)."""

DEMO = "demo-zone-outage"


def register(sub: Any) -> None:
    """Add the ``lab`` subcommand tree to the ``buttress`` parser."""
    lab = sub.add_parser("lab", help="run failure scenarios in virtual time (the lab)")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")
    lab.set_defaults(func=lambda args: (lab.print_help(), 2)[1])

    run = lab_sub.add_parser("run", help="run a scenario and write the report")
    run.add_argument("scenario", help="scenario TOML file, or a bundled scenario's name")
    _run_options(run)
    run.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="also compare this Python pipeline (a buttress Pipeline, or a callable "
        "returning one); may be repeated",
    )
    run.add_argument(
        "--real",
        action="store_true",
        help="run in wall-clock time against real HTTP servers on 127.0.0.1",
    )
    run.set_defaults(func=_cmd_run)

    validate = lab_sub.add_parser("validate", help="check scenario files without running")
    validate.add_argument("scenario", nargs="+")
    validate.set_defaults(func=_cmd_validate)

    lst = lab_sub.add_parser("list", help="list the bundled scenarios")
    lst.set_defaults(func=_cmd_list)

    demo = lab_sub.add_parser(
        "demo", help="run the bundled zone-outage demo (naive retries vs buttress defaults)"
    )
    _run_options(demo)
    demo.set_defaults(func=_cmd_demo)


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (default: the file's)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: CPU count, at most 4)",
    )
    parser.add_argument("--out", default=None, help="output directory (default lab-results/NAME)")
    parser.add_argument("--no-report", action="store_true", help="skip report.html/report.png")


def _example_dirs() -> list[Path]:
    """``examples/scenarios`` under the working directory and, for a source checkout
    (editable install), under the repository that holds this package."""
    dirs = [Path("examples") / "scenarios"]
    checkout = Path(__file__).resolve().parents[3] / "examples" / "scenarios"
    if checkout.is_dir() and all(checkout.resolve() != d.resolve() for d in dirs):
        dirs.append(checkout)
    return [d for d in dirs if d.is_dir()]


def _scenario_paths() -> list[Path]:
    paths = sorted(BUNDLED.glob("*.toml"))
    seen = {p.stem for p in paths}
    for examples in _example_dirs():
        for path in sorted(examples.glob("*.toml")):
            if path.stem not in seen:
                seen.add(path.stem)
                paths.append(path)
    return paths


def resolve_scenario(name: str) -> Path:
    """A path for ``name``: an existing file, else a bundled or example scenario's name."""
    p = Path(name)
    if p.exists() or p.suffix == ".toml":
        return p
    for candidate in _scenario_paths():
        if candidate.stem == name:
            return candidate
    return p


def _err(exc: ScenarioError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _cmd_validate(args: argparse.Namespace) -> int:
    from .scenario import load_scenario

    code = 0
    for name in args.scenario:
        try:
            sc = load_scenario(resolve_scenario(name))
        except ScenarioError as exc:
            code = _err(exc)
            continue
        print(
            f"ok: {sc.source}: {sc.name} ({len(sc.pipelines)} pipelines, "
            f"{len(sc.faults)} faults, {sc.seeds} seeds)"
        )
    return code


def _cmd_list(args: argparse.Namespace) -> int:
    from .scenario import load_scenario

    for path in _scenario_paths():
        try:
            sc = load_scenario(path)
        except ScenarioError as exc:
            print(f"{path}: INVALID: {exc.message}")
            continue
        print(f"{path.stem:32s} {sc.description}")
        print(f"{'':32s} reproduces: {sc.reproduces or '-'}  ({path})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    args.scenario = str(BUNDLED / f"{DEMO}.toml")
    args.pipeline = []
    args.real = False
    code = _cmd_run(args)
    if code == 0:
        out = Path(args.out) if args.out else Path("lab-results") / DEMO
        reading = demo_reading(out / "results.json")
        if reading:
            print(reading)
    return code


def demo_reading(results: Path) -> str:
    """A plain-language reading of the demo's results, computed from ``results.json``.

    The table answers "how much"; new users also ask "so what": with a third of the
    capacity gone, no retry policy can add goodput, and the demo's point is which policy
    turns the outage into a retry storm. Returns ``""`` if the file cannot be read.
    """
    try:
        data = json.loads(results.read_text())
    except (OSError, ValueError):
        return ""
    parts = []
    for pipeline in data.get("pipelines", []):
        faults = pipeline.get("faults") or [{}]
        fault = faults[0]
        seeds = len(pipeline.get("runs", [])) or data.get("seeds", 0)
        recovered = fault.get("recovered_seeds")
        parts.append(
            f"{pipeline['name']}: load {pipeline['amplification']['mean']:.2f}x, "
            f"{pipeline['wasted_fraction']['mean']:.0%} of the dependency's work wasted, "
            + (
                f"recovered in {recovered}/{seeds} seed(s)"
                if recovered is not None and fault.get("recovery_judged", True)
                else "recovery not judged"
            )
        )
    if not parts:
        return ""
    return (
        "\nreading: "
        + "; ".join(parts)
        + ".\nA zone outage removes capacity, and no retry policy can add it back: the"
        " goodput ceiling is what the surviving zones serve. What a policy decides is"
        " whether the outage ends when the zone returns, or a retry storm keeps the"
        " dependency down after it (load x and wasted work above)."
    )


def _progress() -> tuple[Callable[[int, int], None], Callable[[], None]]:
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        start = time.monotonic()

        def plain(done: int, total: int) -> None:
            end = "\n" if done == total else "\r"
            print(f"  runs {done}/{total}  {time.monotonic() - start:5.1f}s", end=end, flush=True)

        return plain, lambda: None
    bar = Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
        transient=True,
    )
    task_id: list[Any] = []

    def update(done: int, total: int) -> None:
        if not task_id:
            bar.start()
            task_id.append(bar.add_task("runs", total=total))
        bar.update(task_id[0], completed=done)

    return update, bar.stop


def _cpu_seconds() -> float:
    """CPU seconds used by this process and its finished children (the worker pool)."""
    total = time.process_time()
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix: this process only
        return total
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + usage.ru_utime + usage.ru_stime


def _out_problem(out: Path) -> str | None:
    """Why ``out`` cannot become the output directory, checked without creating anything."""
    if out.exists():
        return None if out.is_dir() else "it exists and is not a directory"
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{str(parent)!r} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{str(parent)!r} is not writable"
    return None


def _cmd_run(args: argparse.Namespace) -> int:
    from .scenario import PipelineSpec, load_scenario

    try:
        scenario = load_scenario(resolve_scenario(args.scenario))
        extra = []
        for ref in args.pipeline:
            if ":" not in ref:
                raise ScenarioError("--pipeline", "", f"expected MODULE:ATTRIBUTE, got {ref!r}")
            extra.append(PipelineSpec(name=ref.rpartition(":")[2], python=ref))
        if args.seeds is not None and args.seeds < 1:
            raise ScenarioError("--seeds", "", f"expected an integer >= 1, got {args.seeds}")
        if args.workers is not None and args.workers < 1:
            raise ScenarioError("--workers", "", f"expected an integer >= 1, got {args.workers}")
        extras = tuple(extra)
        if extras:
            import random

            from .pipelines import build_pipeline
            from .sim import SimClock

            sys.path.insert(0, os.getcwd())
            for spec in extras:
                build_pipeline(spec, SimClock(), random.Random(0), file="--pipeline")
    except ScenarioError as exc:
        return _err(exc)
    # check the output directory first (a bad --out must not cost a whole simulation), but
    # create it only when the run starts: a refused run leaves no empty directory behind
    out = Path(args.out) if args.out else Path("lab-results") / scenario.name
    problem = _out_problem(out)
    if problem is not None:
        msg = f"cannot create the output directory {str(out)!r} ({problem})"
        return _err(ScenarioError("--out", "", msg))

    created: list[Path] = []  # directories this run created (removed again if left empty)

    def start() -> None:
        missing = out
        while not missing.exists() and missing != missing.parent:
            created.append(missing)
            missing = missing.parent
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the output directory {str(out)!r} ({exc.strerror or exc})"
            raise ScenarioError("--out", "", msg) from None

    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    try:
        return _simulate(args, scenario, extras, out, start, workers)
    except ScenarioError as exc:
        _remove_empty(created)
        return _err(exc)
    except KeyboardInterrupt:
        _remove_empty(created)
        print("interrupted (Ctrl-C): run stopped", file=sys.stderr)
        return 130


def _remove_empty(created: list[Path]) -> None:
    """Remove the directories a stopped run created, innermost first, if still empty."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return


def _simulate(
    args: argparse.Namespace,
    scenario: Any,
    extras: tuple[Any, ...],
    out: Path,
    start: Callable[[], None],
    workers: int,
) -> int:
    from .report import MissingExtra, print_table, write_html, write_json
    from .runner import run_scenario

    if getattr(args, "real", False):
        from .real import BUSY_LAG, run_real

        update, stop = _progress()
        wall = time.perf_counter()
        try:
            results = run_real(
                scenario, seeds=args.seeds, extra=extras, progress=update, on_start=start
            )
        finally:
            stop()
        print(
            f"ran {len(results['pipelines'])} pipeline(s) for real (HTTP on 127.0.0.1) in "
            f"{time.perf_counter() - wall:.1f}s; offered rate scaled by "
            f"{results['real']['rate_scale']:g}"
        )
        busy = {
            name: lag for name, lag in results["real"]["loop_lag"].items() if lag["max"] >= BUSY_LAG
        }
        if busy:
            worst = ", ".join(
                f"{name} {lag['max'] * 1000:.0f} ms (p99 {lag['p99'] * 1000:.0f} ms)"
                for name, lag in busy.items()
            )
            print(
                f"note: the event loop stalled for up to {worst}: the machine was too busy "
                "for real time, and a stall is a fault of its own; rerun on a quieter machine",
                file=sys.stderr,
            )
    else:
        update, stop = _progress()
        started = _cpu_seconds()
        wall = time.perf_counter()
        try:
            results = run_scenario(
                scenario,
                seeds=args.seeds,
                workers=workers,
                extra=extras,
                progress=update,
                on_start=start,
            )
        finally:
            stop()
        print(
            f"simulated {len(results['pipelines'])} pipeline(s) x {results['scenario']['seeds']} "
            f"seed(s) in {time.perf_counter() - wall:.1f}s wall "
            f"({_cpu_seconds() - started:.1f}s CPU, worker processes included)"
        )
    print_table(results)
    json_path = write_json(results, out / "results.json")
    print(f"results: {json_path}")
    if not args.no_report:
        try:
            html_path, png_path = write_html(results, out)
        except MissingExtra as exc:
            print(f"note: {exc}", file=sys.stderr)
        else:
            print(f"report:  {html_path}")
            print(f"plot:    {png_path}")
    return 0
