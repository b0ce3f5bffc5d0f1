"""Run every (pipeline, seed) of a scenario, in worker processes, and aggregate.

Runs are independent and deterministic; their results are collected in a fixed order
(pipelines as listed, seeds ascending) whatever order the workers finish in, so the
aggregate and ``results.json`` are byte-identical for the same scenario and seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from typing import Any

from .errors import ScenarioError
from .run import percentile, run_one
from .scenario import PipelineSpec, Scenario

__all__ = ["SCHEMA_VERSION", "aggregate", "run_scenario"]

SCHEMA_VERSION = 1


def _job(args: tuple[Scenario, PipelineSpec, int]) -> dict[str, Any]:
    scenario, spec, seed = args
    return run_one(scenario, spec, seed)


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is handled by the parent, which stops the workers."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_names(scenario: Scenario, specs: tuple[PipelineSpec, ...]) -> list[str]:
    """The pipelines' names, in order.

    Raises:
        ScenarioError: Two pipelines (of the scenario or ``--pipeline``) share a name; their
            results would be merged.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ScenarioError(scenario.source, "pipelines", f"duplicate pipeline names: {names}")
    return names


def run_scenario(
    scenario: Scenario,
    *,
    seeds: int | None = None,
    workers: int = 1,
    extra: tuple[PipelineSpec, ...] = (),
    progress: Callable[[int, int], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run every pipeline of ``scenario`` (plus ``extra``) over ``seeds`` seeds.

    Args:
        scenario: The validated scenario.
        seeds: Number of seeds (0..seeds-1); default the scenario's ``seeds``.
        workers: Worker processes (1 = run in this process).
        extra: More pipelines (``--pipeline``), appended after the scenario's own.
        progress: Called as ``progress(done, total)`` after each run.
        on_start: Called once the arguments are validated, before the first run (the
            CLI creates its output directory there, so a refused run leaves none).

    Returns:
        The results document (see docs/lab.md for the schema).

    Raises:
        ScenarioError: A pipeline cannot be built, or two pipelines share a name.
    """
    n = seeds if seeds is not None else scenario.seeds
    specs = (*scenario.pipelines, *extra)
    names = check_names(scenario, specs)
    if on_start is not None:
        on_start()
    jobs = [(scenario, spec, seed) for spec in specs for seed in range(n)]
    total = len(jobs)
    results: list[dict[str, Any]] = []
    if workers <= 1 or total <= 1:
        for i, job in enumerate(jobs):
            results.append(_job(job))
            if progress is not None:
                progress(i + 1, total)
    else:
        ctx = get_context("spawn")
        pool = ProcessPoolExecutor(
            max_workers=min(workers, total), mp_context=ctx, initializer=_ignore_sigint
        )
        try:
            for i, res in enumerate(pool.map(_job, jobs)):
                results.append(res)
                if progress is not None:
                    progress(i + 1, total)
        except KeyboardInterrupt:
            # Ctrl-C: the workers ignore SIGINT (no traceback from each of them); stop
            # them here rather than wait for the runs they are in the middle of
            procs = dict(getattr(pool, "_processes", None) or {})
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs.values():
                proc.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    by_pipeline: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for res in results:
        by_pipeline[res["pipeline"]].append(res)
    scenario_out = replace(scenario, pipelines=specs)
    return aggregate(scenario_out, n, by_pipeline)


# -- aggregation --------------------------------------------------------------------------


def _stats(values: list[float | None]) -> dict[str, float | None]:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return {"mean": None, "p5": None, "p95": None}
    return {
        "mean": _r(sum(vals) / len(vals)),
        "p5": _r(percentile(vals, 5.0)),
        "p95": _r(percentile(vals, 95.0)),
    }


def _r(x: float | None) -> float | None:
    if x is None or math.isnan(x):
        return None
    return round(x, 6)


_SCALARS = (
    "goodput",
    "success_rate",
    "amplification",
    "wasted_seconds",
    "wasted_fraction",
    "makespan",
    "server_requests",
    "first_tries",
    "cross_zone_share",
)


def _mean_series(runs: list[dict[str, Any]], key: str) -> list[float | None]:
    columns = [r["series"][key] for r in runs]
    out: list[float | None] = []
    for i in range(len(columns[0])):
        vals = [col[i] for col in columns if col[i] is not None]
        out.append(_r(sum(vals) / len(vals)) if vals else None)
    return out


def _pipeline_summary(
    scenario: Scenario, spec: PipelineSpec, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    from .pipelines import BASELINES

    description = spec.description
    if not description and spec.baseline is not None:
        description = BASELINES[spec.baseline][0]
    summary: dict[str, Any] = {
        "name": spec.name,
        "description": description,
        "source": (
            f"baseline:{spec.baseline}"
            if spec.baseline
            else f"python:{spec.python}"
            if spec.python
            else "strategies"
        ),
    }
    for key in _SCALARS:
        summary[key] = _stats([r[key] for r in runs])
    summary["latency"] = {
        q: _stats([r["latency"][q] for r in runs]) for q in ("p50", "p99", "p999")
    }
    reasons = sorted({k for r in runs for k in r["rejections"]})
    summary["rejections"] = {
        k: _r(sum(r["rejections"].get(k, 0) for r in runs) / len(runs)) for k in reasons
    }
    faults = []
    for i, f in enumerate(scenario.faults):
        per = [r["faults"][i] for r in runs]
        faults.append(
            {
                "index": i,
                "kind": f.kind,
                "start": f.start,
                "end": f.end,
                "amplification_during": _stats([p["amplification_during"] for p in per]),
                "amplification_after": _stats([p["amplification_after"] for p in per]),
                "burst_after": _stats([p["burst_after"] for p in per]),
                "success_during": _stats([p["success_during"] for p in per]),
                "healthy_keys_success_during": _stats(
                    [p["healthy_keys_success_during"] for p in per]
                ),
                "peak_load_during": _stats([p["peak_load_during"] for p in per]),
                "loads_per_key": _stats([p["loads_per_key"] for p in per]),
                "max_loads_per_key": _stats([p["max_loads_per_key"] for p in per]),
                "time_to_recover": _stats([p["time_to_recover"] for p in per]),
                "recovered_fraction": _r(sum(1 for p in per if p["recovered"]) / len(per)),
                "recovered_seeds": sum(1 for p in per if p["recovered"]),
                # False: the run ends too soon after the fault to hold recovery_hold
                "recovery_judged": all(p["recovery_judged"] for p in per),
            }
        )
    summary["faults"] = faults
    series = {"t": runs[0]["series"]["t"]}
    for key in ("first_tries", "offered", "goodput", "success", "p50", "p99"):
        series[key] = _mean_series(runs, key)
    summary["series"] = series
    summary["timelines"] = runs[0]["timelines"]
    summary["runs"] = [
        {k: v for k, v in r.items() if k not in ("series", "timelines", "pipeline")} for r in runs
    ]
    return summary


def aggregate(
    scenario: Scenario, seeds: int, by_pipeline: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Build the results document from per-run dicts (see docs/lab.md, results.json)."""
    return {
        "schema": "buttress.lab.results",
        "schema_version": SCHEMA_VERSION,
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "reproduces": scenario.reproduces,
            "file": scenario.source,
            "duration": scenario.duration,
            "window": scenario.window,
            "seeds": seeds,
            "recovery": {
                "threshold": scenario.recovery_threshold,
                "hold": scenario.recovery_hold,
                "bin": scenario.recovery_bin,
                "within": scenario.recover_within,
            },
            "faults": [
                {"kind": f.kind, "start": f.start, "end": f.end, "mode": f.mode}
                for f in scenario.faults
            ],
        },
        "pipelines": [
            _pipeline_summary(scenario, spec, by_pipeline[spec.name]) for spec in scenario.pipelines
        ],
    }
