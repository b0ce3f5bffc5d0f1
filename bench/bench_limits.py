"""Overhead and memory of `Bulkhead` and `RateLimiter` (plain script, not a test).

    .venv/bin/python bench/bench_limits.py [--quick]

1. Bulkhead, async happy path (free slot, nobody waiting): the strategy step (acquire,
   await the function, release) against ``async with asyncio.Semaphore(n): await fn()``
   (target: at most 2x), plus the sync step against ``with threading.Semaphore(n)``.
2. RateLimiter admit (never limited): our step against `aiolimiter.AsyncLimiter`
   (``async with``) and `limits` in-memory strategies (``hit``), sync and async, unkeyed
   and keyed (target: within 2x of the peers), when the peers are installed
   (``pip install -r requirements-bench.txt``).
3. Memory: 100,000 distinct keys through a keyed RateLimiter and a keyed Bulkhead with
   ``max_keys=10_000`` (tracemalloc bytes after 10k, 50k, 100k keys: flat), against the
   same with an unbounded-in-practice ``max_keys``.

Each timing is the best of several interleaved rounds (min of per-call means), all
measured in this run; the ratios are what matter on a shared, noisy machine.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from buttress import Bulkhead, Key, Pipeline, RateLimiter, scope

QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 7
N = 20_000 if QUICK else 100_000


def interleaved(fns: list[Callable[[], object]], number: int) -> list[float]:
    """Best mean seconds per call of each sync function, rounds interleaved."""
    best = [float("inf")] * len(fns)
    order = list(range(len(fns)))
    for _ in range(ROUNDS):
        for i in order:
            fn = fns[i]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / number)
        order.reverse()
    return best


async def ainterleaved(fns: list[Callable[[], Awaitable[object]]], number: int) -> list[float]:
    """Best mean seconds per call of each async function, rounds interleaved."""
    best = [float("inf")] * len(fns)
    order = list(range(len(fns)))
    for _ in range(ROUNDS):
        for i in order:
            fn = fns[i]
            start = time.perf_counter()
            for _ in range(number):
                await fn()
            best[i] = min(best[i], (time.perf_counter() - start) / number)
        order.reverse()
    return best


def row(label: str, seconds: float, base: float | None = None) -> None:
    ratio = f"{seconds / base:6.2f}x" if base else ""
    print(f"  {label:58s} {seconds * 1e9:8.0f} ns  {ratio}")


async def afn() -> int:
    return 1


def fn() -> int:
    return 1


# -- 1. bulkhead --------------------------------------------------------------------------------


async def bench_bulkhead_async() -> float:
    sem = asyncio.Semaphore(10)
    step = Pipeline(Bulkhead(10))._async()
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}

    async def with_semaphore() -> int:
        async with sem:
            return await afn()

    def bulkhead() -> Awaitable[object]:
        return step(afn, args, kwargs)

    bare, semaphore, ours = await ainterleaved([afn, with_semaphore, bulkhead], N)
    print("Bulkhead, async happy path (acquire + await fn + release)")
    row("await fn() (bare)", bare)
    row("async with asyncio.Semaphore: await fn()", semaphore, semaphore)
    row("Bulkhead step", ours, semaphore)
    print(
        f"  overhead over bare: semaphore {(semaphore - bare) * 1e9:.0f} ns, "
        f"bulkhead {(ours - bare) * 1e9:.0f} ns"
    )
    return ours / semaphore


def bench_bulkhead_sync() -> float:
    sem = threading.Semaphore(10)
    step = Pipeline(Bulkhead(10))._sync()
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}

    def with_semaphore() -> int:
        with sem:
            return fn()

    def bulkhead() -> object:
        return step(fn, args, kwargs)

    bare, semaphore, ours = interleaved([fn, with_semaphore, bulkhead], N)
    print("Bulkhead, sync happy path")
    row("fn() (bare)", bare)
    row("with threading.Semaphore: fn()", semaphore, semaphore)
    row("Bulkhead step", ours, semaphore)
    return ours / semaphore


# -- 2. rate limiter ------------------------------------------------------------------------------

BIG = 1e12  # never limited during the run
TENANT = Key[str]("tenant", default="t1")


def bench_rate_sync() -> dict[str, float]:
    step = Pipeline(RateLimiter(BIG, BIG))._sync()
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    keyed = Pipeline(RateLimiter(BIG, BIG, key=lambda ctx: ctx.get(TENANT)))
    plain = Pipeline()

    fns: list[Callable[[], object]] = [fn, lambda: step(fn, args, kwargs)]
    labels = ["fn() (bare)", "RateLimiter step (sync)"]
    peers: dict[str, int] = {}
    try:
        from limits import RateLimitItemPerSecond, storage, strategies

        item = RateLimitItemPerSecond(10**12, 1)
        for name, cls in [
            ("FixedWindow", strategies.FixedWindowRateLimiter),
            ("MovingWindow", strategies.MovingWindowRateLimiter),
            ("SlidingWindowCounter", strategies.SlidingWindowCounterRateLimiter),
        ]:
            limiter = cls(storage.MemoryStorage())

            def hit(limiter: Any = limiter) -> object:
                if not limiter.hit(item):
                    raise RuntimeError("limited")
                return fn()

            peers[name] = len(fns)
            fns.append(hit)
            labels.append(f"limits {name}.hit + fn() (sync)")
    except ImportError:
        print("  (limits not installed: pip install -r requirements-bench.txt)")
    n = N // 4 if peers else N
    times = interleaved(fns, n)
    print("RateLimiter admit, sync (never limited)")
    fastest_peer = min((times[i] for i in peers.values()), default=None)
    for label, t in zip(labels, times):
        row(label, t, fastest_peer)
    ratios = {"sync_vs_fastest_limits": times[1] / fastest_peer} if fastest_peer else {}

    # keyed: ours goes through a pipeline (the key function reads the Context)
    kfns: list[Callable[[], object]] = [
        lambda: plain.call(fn),
        lambda: keyed.call(fn),
    ]
    klabels = ["Pipeline().call(fn) (no strategy)", "Pipeline(RateLimiter(key=...)).call(fn)"]
    if peers:
        from limits import RateLimitItemPerSecond, storage, strategies

        item = RateLimitItemPerSecond(10**12, 1)
        fixed = strategies.FixedWindowRateLimiter(storage.MemoryStorage())

        def keyed_hit() -> object:
            if not fixed.hit(item, "t1"):
                raise RuntimeError("limited")
            return fn()

        kfns.append(keyed_hit)
        klabels.append("limits FixedWindow.hit(item, key) + fn()")
    with scope(properties={TENANT: "t1"}):
        ktimes = interleaved(kfns, n)
    print("RateLimiter admit, sync, keyed")
    for label, t in zip(klabels, ktimes):
        row(label, t, ktimes[2] if peers else None)
    if peers:
        ratios["keyed_overhead_vs_limits_fixed"] = (ktimes[1] - ktimes[0]) / ktimes[2]
    return ratios


async def bench_rate_async() -> dict[str, float]:
    step = Pipeline(RateLimiter(BIG, BIG))._async()
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    fns: list[Callable[[], Awaitable[object]]] = [afn, lambda: step(afn, args, kwargs)]
    labels = ["await fn() (bare)", "RateLimiter step (async)"]
    peers: list[int] = []
    try:
        from aiolimiter import AsyncLimiter

        al = AsyncLimiter(10**12, 1)

        async def aiolimited() -> object:
            async with al:
                return await afn()

        peers.append(len(fns))
        fns.append(aiolimited)
        labels.append("aiolimiter: async with AsyncLimiter: await fn()")
    except ImportError:
        print("  (aiolimiter not installed: pip install -r requirements-bench.txt)")
    try:
        from limits import RateLimitItemPerSecond
        from limits.aio import storage as astorage
        from limits.aio import strategies as astrategies

        item = RateLimitItemPerSecond(10**12, 1)
        fixed = astrategies.FixedWindowRateLimiter(astorage.MemoryStorage())

        async def limits_hit() -> object:
            if not await fixed.hit(item):
                raise RuntimeError("limited")
            return await afn()

        peers.append(len(fns))
        fns.append(limits_hit)
        labels.append("limits.aio FixedWindow.hit + await fn()")
    except ImportError:
        print("  (limits not installed)")
    times = await ainterleaved(fns, N // 4 if peers else N)
    fastest = min((times[i] for i in peers), default=None)
    print("RateLimiter admit, async (never limited)")
    for label, t in zip(labels, times):
        row(label, t, fastest)
    return {"async_vs_fastest_peer": times[1] / fastest} if fastest else {}


# -- 3. memory ----------------------------------------------------------------------------------


def bench_memory() -> None:
    print("Memory: 100,000 distinct keys (tracemalloc, bytes held by the strategy)")
    keys = 100_000
    checkpoints = (10_000, 50_000, 100_000)
    for label, make, call in [
        (
            "RateLimiter(key=..., max_keys=10_000)",
            lambda m: RateLimiter(1.0, 5.0, key=lambda ctx: ctx.get(TENANT), max_keys=m),
            "call",
        ),
        (
            "Bulkhead(key=..., max_keys=10_000)",
            lambda m: Bulkhead(4, key=lambda ctx: ctx.get(TENANT), max_keys=m),
            "call",
        ),
    ]:
        for max_keys in (10_000, 1_000_000):
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            strategy = make(max_keys)
            pipeline = Pipeline(strategy)
            sizes = []
            for i in range(keys):
                with scope(properties={TENANT: f"tenant-{i}"}):
                    getattr(pipeline, call)(fn)
                if i + 1 in checkpoints:
                    sizes.append(tracemalloc.get_traced_memory()[0] - base)
            tracemalloc.stop()
            shown = label if max_keys == 10_000 else label.replace("10_000", "1_000_000")
            text = ", ".join(f"{k // 1000}k: {s / 1e6:6.2f} MB" for k, s in zip(checkpoints, sizes))
            print(f"  {shown:45s} {text}")
            del strategy, pipeline


def main() -> None:
    print(f"Python {sys.version.split()[0]}, {'quick' if QUICK else 'full'} run\n")
    ratios: dict[str, float] = {}
    ratios["bulkhead_async_vs_semaphore"] = asyncio.run(bench_bulkhead_async())
    print()
    ratios["bulkhead_sync_vs_threading_semaphore"] = bench_bulkhead_sync()
    print()
    ratios.update(bench_rate_sync())
    print()
    ratios.update(asyncio.run(bench_rate_async()))
    print()
    bench_memory()
    print("\nRatios (ours / reference, lower is better):")
    for name, value in ratios.items():
        print(f"  {name:45s} {value:5.2f}")


if __name__ == "__main__":
    main()
