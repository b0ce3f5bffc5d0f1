"""Closed-breaker happy path: buttress `CircuitBreaker` against peer breakers, same run.

Installs nothing. Peers are timed when importable in this interpreter
(``pip install -r requirements-bench.txt`` adds circuitbreaker and pybreaker; hyx,
aiobreaker and purgatory are picked up if present). Method (as in PEERS.md section 3):
a tight loop of calls timed with ``time.perf_counter_ns``, garbage collection paused,
a warm-up that checks the returned value, rounds run round-robin over all subjects so
machine noise hits them alike; per subject the median and minimum of the per-round
per-call figures are printed, with the ratio to the fastest peer breaker's median.

Run: ``.venv/bin/python bench/bench_breaker.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from buttress import CircuitBreaker, Pipeline


def target() -> int:
    return 1


async def atarget() -> int:
    return 1


def sync_subjects() -> dict[str, Callable[[], Any]]:
    subjects: dict[str, Callable[[], Any]] = {"bare call": target}

    def floor() -> int:
        return target()

    subjects["hand-written wrapper (floor)"] = floor
    subjects["buttress Pipeline(CircuitBreaker()) decorator"] = Pipeline(CircuitBreaker())(target)
    subjects["buttress CircuitBreaker(consecutive_failures=5)"] = Pipeline(
        CircuitBreaker(consecutive_failures=5, failure_ratio=None, break_duration=60)
    )(target)
    subjects["buttress CircuitBreaker(window_duration=30)"] = Pipeline(
        CircuitBreaker(window_duration=30)
    )(target)
    subjects["buttress CircuitBreaker(slow_call_duration=1)"] = Pipeline(
        CircuitBreaker(slow_call_duration=1.0)
    )(target)
    p = Pipeline(CircuitBreaker())

    def via_call() -> int:
        return p.call(target)

    subjects["buttress pipeline.call(fn)"] = via_call
    try:
        import circuitbreaker

        subjects["peer: circuitbreaker (decorator)"] = circuitbreaker.circuit(
            failure_threshold=5, recovery_timeout=60
        )(target)
    except ImportError:
        pass
    try:
        import pybreaker

        subjects["peer: pybreaker (decorator)"] = pybreaker.CircuitBreaker(
            fail_max=5, reset_timeout=60
        )(target)
    except ImportError:
        pass
    return subjects


def async_subjects() -> dict[str, Callable[[], Awaitable[Any]]]:
    subjects: dict[str, Callable[[], Awaitable[Any]]] = {"bare await": atarget}

    async def floor() -> int:
        return await atarget()

    subjects["hand-written wrapper (floor)"] = floor
    subjects["buttress Pipeline(CircuitBreaker()) decorator"] = Pipeline(CircuitBreaker())(atarget)
    subjects["buttress CircuitBreaker(window_duration=30)"] = Pipeline(
        CircuitBreaker(window_duration=30)
    )(atarget)
    try:
        import circuitbreaker

        subjects["peer: circuitbreaker (decorator)"] = circuitbreaker.circuit(
            failure_threshold=5, recovery_timeout=60
        )(atarget)
    except ImportError:
        pass
    try:
        from hyx.circuitbreaker import consecutive_breaker  # type: ignore[import-not-found]

        subjects["peer: hyx consecutive_breaker"] = consecutive_breaker(
            failure_threshold=5, recovery_time_secs=60
        )(atarget)
    except ImportError:
        pass
    return subjects


def time_sync(fn: Callable[[], Any], n: int) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        return (time.perf_counter_ns() - t0) / n
    finally:
        gc.enable()


async def time_async(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await fn()
        return (time.perf_counter_ns() - t0) / n
    finally:
        gc.enable()


def report(title: str, results: dict[str, list[float]]) -> None:
    peers = [statistics.median(v) for k, v in results.items() if k.startswith("peer:")]
    best = min(peers) if peers else None
    print(f"\n{title}")
    print(f"{'subject':<52} {'median ns':>10} {'min ns':>8} {'/ best peer':>12}")
    for name, values in results.items():
        med = statistics.median(values)
        ratio = f"{med / best:.2f}" if best else "-"
        print(f"{name:<52} {med:>10.0f} {min(values):>8.0f} {ratio:>12}")
    if best is None:
        print("(no peer breaker installed: pip install -r requirements-bench.txt)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    n_sync = 20_000 if opts.quick else 200_000
    n_async = 5_000 if opts.quick else 50_000
    rounds = 2 if opts.quick else opts.rounds
    print(
        f"Python {sys.version.split()[0]}, {rounds} rounds, {n_sync} sync / {n_async} async calls"
    )

    subjects = sync_subjects()
    for fn in subjects.values():
        assert fn() == 1
    results: dict[str, list[float]] = {k: [] for k in subjects}
    for _ in range(rounds):
        for name, fn in subjects.items():
            results[name].append(time_sync(fn, n_sync))
    report("sync, closed breaker, successful call (ns per call)", results)

    async def run_async() -> dict[str, list[float]]:
        asubjects = async_subjects()
        for fn in asubjects.values():
            assert await fn() == 1
        aresults: dict[str, list[float]] = {k: [] for k in asubjects}
        for _ in range(rounds):
            for name, fn in asubjects.items():
                aresults[name].append(await time_async(fn, n_async))
        return aresults

    report(
        "async (asyncio), closed breaker, successful call (ns per call)", asyncio.run(run_async())
    )


if __name__ == "__main__":
    main()
