"""Hedge happy path: the primary answers before the delay, so no hedge ever starts.

What a `Hedge` costs when it does nothing visible: the primary still runs as a separate
task (asyncio, trio) or on a worker thread (sync), because the caller must be able to
start a second attempt while the first is running. Compared in the same run with the bare
call, an empty pipeline, and the hand-rolled equivalent (``asyncio.create_task`` plus
``asyncio.wait(timeout=...)``; a `ThreadPoolExecutor` submit plus ``wait(timeout=...)``).

Method: a tight loop, garbage collection paused, a warm-up that checks the returned value,
rounds run round-robin over all subjects; per subject the median and minimum of the
per-round per-call figures, in ns/call. The clock is **process CPU time**
(``time.process_time_ns``, all threads of this process) by default: every subject here
goes through the event loop's selector or a thread hand-off, and on a loaded shared
machine each such syscall can lose the CPU for a whole time slice, which makes wall-clock
figures measure the neighbours. ``--wall`` uses ``time.perf_counter_ns`` instead.

Run: ``.venv/bin/python bench/bench_hedge.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from buttress import Hedge, Pipeline


def target() -> int:
    return 1


async def atarget() -> int:
    return 1


def adaptive() -> Any:
    # min_delay keeps the adaptive delay far above this target's latency: happy path only
    return Hedge.percentile(0.95, min_delay=1.0)


def sync_subjects(pool: concurrent.futures.ThreadPoolExecutor) -> dict[str, Callable[[], Any]]:
    def hand_rolled() -> int:
        future = pool.submit(target)
        done, _ = concurrent.futures.wait([future], timeout=1.0)
        return next(iter(done)).result()  # type: ignore[no-any-return]

    return {
        "bare call": target,
        "Pipeline() (empty)": Pipeline()(target),
        "hand-rolled: ThreadPoolExecutor submit + wait(timeout)": hand_rolled,
        "Pipeline(Hedge(delay=1.0))": Pipeline(Hedge(delay=1.0))(target),
        "Pipeline(Hedge(delay=Hedge.percentile(0.95)))": Pipeline(Hedge(delay=adaptive()))(target),
    }


def async_subjects() -> dict[str, Callable[[], Awaitable[Any]]]:
    async def hand_rolled() -> int:
        task = asyncio.get_running_loop().create_task(atarget())
        done, _ = await asyncio.wait({task}, timeout=1.0)
        return next(iter(done)).result()

    return {
        "bare await": atarget,
        "Pipeline() (empty)": Pipeline()(atarget),
        "hand-rolled: create_task + asyncio.wait(timeout)": hand_rolled,
        "Pipeline(Hedge(delay=1.0))": Pipeline(Hedge(delay=1.0))(atarget),
        "Pipeline(Hedge(delay=Hedge.percentile(0.95)))": Pipeline(Hedge(delay=adaptive()))(atarget),
    }


def trio_subjects() -> dict[str, Callable[[], Awaitable[Any]]]:
    async def hand_rolled() -> int:
        box: list[int] = []

        async def run() -> None:
            box.append(await atarget())

        async with trio.open_nursery() as nursery:
            with trio.move_on_after(1.0):
                nursery.start_soon(run)
        return box[0]

    return {
        "bare await": atarget,
        "Pipeline() (empty)": Pipeline()(atarget),
        "hand-rolled: nursery + start_soon + move_on_after": hand_rolled,
        "Pipeline(Hedge(delay=1.0))": Pipeline(Hedge(delay=1.0))(atarget),
    }


CLOCK = time.process_time_ns


def time_sync(fn: Callable[[], Any], n: int) -> float:
    start = CLOCK()
    for _ in range(n):
        fn()
    return (CLOCK() - start) / n


async def time_async(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    start = CLOCK()
    for _ in range(n):
        await fn()
    return (CLOCK() - start) / n


def report(title: str, results: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    base = statistics.median(results[next(iter(results))])
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"  {name:<58} median {median:>9.0f} ns/call  min {min(values):>9.0f}"
            f"  (+{median - base:,.0f} ns over the first row)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    parser.add_argument("--wall", action="store_true", help="wall-clock time, not CPU time")
    opts = parser.parse_args()
    global CLOCK
    if opts.wall:
        CLOCK = time.perf_counter_ns
    print(f"clock: {'wall (perf_counter_ns)' if opts.wall else 'process CPU time'}")
    rounds, n = (2, 200) if opts.quick else (7, 3000)
    gc.disable()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            subjects = sync_subjects(pool)
            for fn in subjects.values():
                assert fn() == 1
            results: dict[str, list[float]] = {name: [] for name in subjects}
            for _ in range(rounds):
                for name, fn in subjects.items():
                    results[name].append(time_sync(fn, n))
            report("sync (threads)", results)

        async def run_async(subjects: dict[str, Callable[[], Awaitable[Any]]]) -> None:
            for fn in subjects.values():
                assert await fn() == 1
            res: dict[str, list[float]] = {name: [] for name in subjects}
            for _ in range(rounds):
                for name, fn in subjects.items():
                    res[name].append(await time_async(fn, n))
            report(title, res)

        title = "asyncio"
        asyncio.run(run_async(async_subjects()))
        title = "trio"

        async def trio_main() -> None:
            await run_async(trio_subjects())

        trio.run(trio_main)
    finally:
        gc.enable()


if __name__ == "__main__":
    main()
