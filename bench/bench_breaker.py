"""Closed-breaker happy path: buttress `CircuitBreaker` against peer breakers, same run.

Installs nothing. Peers are timed when importable in this interpreter
(``pip install -r requirements-bench.txt`` adds circuitbreaker and pybreaker; hyx,
aiobreaker and purgatory are picked up if present). Method (as in PEERS.md section 3):
a tight loop of calls timed with the thread's CPU clock (``time.thread_time_ns``: time
descheduled by other processes is not counted), garbage collection paused,
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
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from buttress import CircuitBreaker, Key, Pipeline, scope


def target() -> int:
    return 1


async def atarget() -> int:
    return 1


def sync_subjects() -> dict[str, Callable[[], Any]]:
    subjects: dict[str, Callable[[], Any]] = {"bare call": target}

    def floor() -> int:
        return target()

    subjects["hand-written wrapper (floor)"] = floor
    subjects["buttress empty Pipeline() decorator"] = Pipeline()(target)
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
    subjects["buttress empty Pipeline() decorator"] = Pipeline()(atarget)
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
        t0 = time.thread_time_ns()
        for _ in range(n):
            fn()
        return (time.thread_time_ns() - t0) / n
    finally:
        gc.enable()


async def time_async(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    gc.disable()
    try:
        t0 = time.thread_time_ns()
        for _ in range(n):
            await fn()
        return (time.thread_time_ns() - t0) / n
    finally:
        gc.enable()


def report(title: str, results: dict[str, list[float]]) -> None:
    """Print per-subject median and minimum, and ratios to the fastest peer.

    On a loaded machine the minimum over many short rounds is the steadier estimate of a
    subject's own cost, so ratios are given on minima and on medians. "marginal" is the
    cost above the hand-written one-line wrapper (the floor), for every subject: a
    pipeline of admission strategies only publishes no Context (see `buttress.Pipeline`),
    so it does not pay the empty pipeline's ``ContextVar`` push.
    """
    med = {k: statistics.median(v) for k, v in results.items()}
    low = {k: min(v) for k, v in results.items()}
    peers = [k for k in results if k.startswith("peer:")]
    best_med = min((med[k] for k in peers), default=None)
    best_low = min((low[k] for k in peers), default=None)
    floor = low.get("hand-written wrapper (floor)", 0.0)
    best_marginal = min((low[k] - floor for k in peers), default=None)
    print(f"\n{title}")
    header = f"{'subject':<50} {'median':>8} {'min':>8} {'med/peer':>9} {'min/peer':>9}"
    print(header + f" {'marginal':>9} {'marg/peer':>9}")
    for name in results:
        r_med = f"{med[name] / best_med:.2f}" if best_med else "-"
        r_low = f"{low[name] / best_low:.2f}" if best_low else "-"
        marginal: float | None = (
            low[name] - floor if name.startswith(("peer:", "buttress")) else None
        )
        m = f"{marginal:9.0f}" if marginal is not None else f"{'':>9}"
        rm = (
            f"{marginal / best_marginal:9.2f}"
            if marginal is not None and best_marginal
            else f"{'':>9}"
        )
        print(f"{name:<50} {med[name]:>8.0f} {low[name]:>8.0f} {r_med:>9} {r_low:>9} {m} {rm}")
    if best_med is None:
        print("(no peer breaker installed: pip install -r requirements-bench.txt)")


def memory_per_key(total: int = 100_000, max_keys: int = 10_000) -> None:
    """Per-key breakers: memory after ``max_keys`` keys and after ``total`` distinct keys."""
    host = Key[int]("host")
    breaker = CircuitBreaker(key=lambda ctx: ctx.get(host), max_keys=max_keys)
    p = Pipeline(breaker)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    marks = {}
    for i in range(total):
        with scope(properties={host: i}):
            p.call(target)
        if i + 1 in (max_keys, total // 2, total):
            gc.collect()
            marks[i + 1] = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(f"\nper-key memory (count window of 100 calls, max_keys={max_keys:,})")
    for n, used in marks.items():
        print(
            f"  after {n:>7,} distinct keys: {used / 1e6:6.2f} MB ({used / max_keys:,.0f} B/key held)"
        )
    assert len(breaker.keys()) == max_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument(
        "--part", choices=("all", "sync", "async", "memory"), default="all", help="what to run"
    )
    opts = parser.parse_args()
    n_sync = 20_000 if opts.quick else 10_000
    n_async = 5_000 if opts.quick else 4_000
    rounds = 2 if opts.quick else opts.rounds
    print(
        f"Python {sys.version.split()[0]}, {rounds} rounds, {n_sync} sync / {n_async} async calls"
    )

    if opts.part in ("all", "sync"):
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

    if opts.part in ("all", "async"):
        title = "async (asyncio), closed breaker, successful call (ns per call)"
        report(title, asyncio.run(run_async()))
    if opts.part in ("all", "memory"):
        memory_per_key(20_000 if opts.quick else 100_000, 2_000 if opts.quick else 10_000)


if __name__ == "__main__":
    main()
