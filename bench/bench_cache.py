"""Cache-aside benchmarks (plain script, not a test).

    .venv/bin/python bench/bench_cache.py [--quick]

1. Hit cost: ``@cached`` (local tier) against ``cachetools.cached(TTLCache)`` on the same
   function, rounds interleaved, best of several (target: within 2x).
2. In-process stampede: 1,000 concurrent misses on one key, as 1,000 threads and as 1,000
   asyncio tasks (target: exactly 1 load each).
3. XFetch on a hot key: Poisson reads at 100/s, a load taking 0.1 s, TTL 60 s, run in
   virtual time (a `ManualClock` driving the real `CacheAside` async path on asyncio):
   loads per expiry and hard misses, with XFetch (beta 1) and without (beta 0).

The cross-process stampede (4 processes x 250 with the Redis lock) is in
``bench/bench_redis.py``.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import timeit
from collections.abc import Callable

from buttress import CacheAside, Pipeline, cached
from buttress.events import CacheMiss, Event
from buttress.testing import ManualClock

QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 7


def interleaved(fns: list[Callable[[], object]], number: int) -> list[float]:
    """Best mean seconds per call of each function, rounds interleaved (fair under load)."""
    best = [float("inf")] * len(fns)
    order = list(range(len(fns)))
    for _ in range(ROUNDS * 2):
        for i in order:
            best[i] = min(best[i], timeit.timeit(fns[i], number=number) / number)
        order.reverse()
    return best


def bench_hit() -> dict[str, float]:
    import cachetools

    @cached(3600)
    def ours(item: int) -> int:
        return item * 2

    @cached(3600, key="item:{item}")
    def ours_template(item: int) -> int:
        return item * 2

    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=3600))
    def peer(item: int) -> int:
        return item * 2

    for f in (ours, ours_template, peer):
        f(7)
    n = 50_000 if QUICK else 200_000
    t_ours, t_tpl, t_peer = interleaved(
        [lambda: ours(7), lambda: ours_template(7), lambda: peer(7)], n
    )
    print("1. in-memory hit (one key, warm)")
    print(f"   cachetools.cached(TTLCache)   {t_peer * 1e9:7.0f} ns/call")
    print(
        f"   @cached (default key)         {t_ours * 1e9:7.0f} ns/call   ratio {t_ours / t_peer:.2f}x"
    )
    print(
        f"   @cached (key template)        {t_tpl * 1e9:7.0f} ns/call   ratio {t_tpl / t_peer:.2f}x"
    )
    return {"peer": t_peer, "ours": t_ours, "template": t_tpl}


def bench_stampede_in_process() -> tuple[int, int]:
    loads = [0]
    gate = threading.Event()

    @cached(60)
    def slow(item: int) -> int:
        loads[0] += 1
        gate.wait(10)
        return item

    barrier = threading.Barrier(1001)
    results: list[int] = []

    def worker() -> None:
        barrier.wait()
        results.append(slow(1))

    threads = [threading.Thread(target=worker) for _ in range(1000)]
    for t in threads:
        t.start()
    barrier.wait()
    while not slow.cache._flights:  # type: ignore[attr-defined]
        pass
    timer = threading.Timer(0.2, gate.set)
    timer.start()
    for t in threads:
        t.join()
    thread_loads = loads[0]
    assert len(results) == 1000
    assert set(results) == {1}

    aloads = [0]

    @cached(60)
    async def aslow(item: int) -> int:
        aloads[0] += 1
        await asyncio.sleep(0.05)
        return item

    async def main() -> list[int]:
        return await asyncio.gather(*(aslow(1) for _ in range(1000)))

    out = asyncio.run(main())
    assert out == [1] * 1000
    print("2. in-process stampede: 1,000 concurrent misses on one key")
    print(f"   threads: {thread_loads} load(s); asyncio tasks: {aloads[0]} load(s)")
    return thread_loads, aloads[0]


async def xfetch_sim(beta: float, seed: int, cycles: int) -> tuple[float, float, int]:
    """Virtual-time run; returns (loads per expiry, hard misses per expiry, reads)."""
    clock = ManualClock()
    ttl, rate, load_time = 60.0, 100.0, 0.1
    misses: list[float] = []

    def listener(event: Event) -> None:
        if isinstance(event, CacheMiss):
            misses.append(event.time)

    spec = CacheAside(ttl, beta=beta, key="hot")
    pipe = Pipeline(spec, clock=clock, random=random.Random(seed), listeners=[listener])
    loads = [0]

    async def load() -> int:
        loads[0] += 1
        end = clock.now() + load_time
        while clock.now() < end:
            await asyncio.sleep(0)
        return loads[0]

    rng = random.Random(seed + 1)
    horizon = ttl * cycles
    t = 0.0
    tasks = []
    reads = 0
    while t < horizon:
        t += rng.expovariate(rate)
        clock.set(t)
        tasks.append(asyncio.ensure_future(pipe.acall(load)))
        reads += 1
        for _ in range(3):
            await asyncio.sleep(0)
    clock.advance(1.0)
    for _ in range(10):
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    steady_misses = [m for m in misses if m > load_time]  # the cold start is not steady state
    expiries = horizon / ttl
    return (loads[0] - 1) / (expiries - 1), len(steady_misses) / (expiries - 1), reads


def bench_xfetch() -> dict[str, tuple[float, float]]:
    cycles = 20 if QUICK else 60
    print(
        f"3. XFetch on a hot key: 100 reads/s (Poisson), load 0.1 s, TTL 60 s, {cycles} expiries,"
    )
    print("   virtual time, real CacheAside (single-flight in process)")
    out = {}
    for beta in (0.0, 1.0):
        per, miss, reads = asyncio.run(xfetch_sim(beta, seed=42, cycles=cycles))
        out[str(beta)] = (per, miss)
        print(
            f"   beta={beta:<3}  loads per expiry {per:5.3f}   hard misses per expiry {miss:6.2f}   ({reads} reads)"
        )
    return out


if __name__ == "__main__":
    hit = bench_hit()
    bench_stampede_in_process()
    bench_xfetch()
    ok = hit["ours"] <= 2.0 * hit["peer"]
    print(f"\nhit target (<= 2x cachetools): {'met' if ok else 'NOT met'}")
