"""Concurrency proof (issue 3): one breaker, bulkhead and limiter hammered together.

8 threads, and separately 10,000 asyncio tasks, run through a pipeline of a
`CircuitBreaker`, a `Bulkhead` and a `RateLimiter` with random failures, delays and
cancellations. At every step inside the call: the bulkhead's bound holds and the breaker's
half-open trials never exceed ``half_open_calls``. After everything finished: no slot is
held, nobody is queued, no trial slot is held.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading

import pytest

from buttress import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Pipeline,
    RateLimitedError,
    RateLimiter,
)


class Boom(Exception):
    pass


def _strategies(max_queued: int = 8) -> tuple[CircuitBreaker, Bulkhead, RateLimiter]:
    breaker = CircuitBreaker(
        on=Boom,
        failure_ratio=0.5,
        window=20,
        min_throughput=10,
        break_duration=0.002,
        half_open_calls=2,
    )
    bulkhead = Bulkhead(4, max_queued=max_queued, max_wait=0.05 if max_queued < 100 else None)
    limiter = RateLimiter(50_000, 200, max_wait=0.002)
    return breaker, bulkhead, limiter


def test_threads_breaker_bulkhead_limiter() -> None:
    breaker, bulkhead, limiter = _strategies()
    p = Pipeline(breaker, bulkhead, limiter)
    lock = threading.Lock()
    active = [0]
    violations: list[str] = []
    outcomes: dict[str, int] = {}

    def work(rng: random.Random) -> None:
        with lock:
            active[0] += 1
            if active[0] > 4:
                violations.append(f"active={active[0]}")
            m = breaker.metrics
            if m.half_open_in_flight > 2:
                violations.append(f"trials={m.half_open_in_flight}")
        try:
            if rng.random() < 0.3:
                threading.Event().wait(rng.random() * 0.001)
            if rng.random() < 0.35:
                raise Boom
        finally:
            with lock:
                active[0] -= 1

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            try:
                p.call(work, rng)
                kind = "ok"
            except Boom:
                kind = "failed"
            except CircuitOpenError:
                kind = "open"
            except BulkheadFullError:
                kind = "full"
            except RateLimitedError:
                kind = "limited"
            with lock:
                outcomes[kind] = outcomes.get(kind, 0) + 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(old)
    assert violations == []
    assert sum(outcomes.values()) == 8 * 300
    assert outcomes.get("ok", 0) > 0
    assert outcomes.get("failed", 0) > 0
    assert outcomes.get("open", 0) > 0
    snap = bulkhead.snapshot()
    assert (snap.in_use, snap.queued) == (0, 0)
    assert breaker.metrics.half_open_in_flight == 0


@pytest.mark.asyncio
async def test_asyncio_10000_tasks_breaker_bulkhead_limiter() -> None:
    breaker, bulkhead, limiter = _strategies(max_queued=10_000)  # every task queues
    # the bulkhead outermost: the breaker decides when a task gets its slot (outside it,
    # the breaker would admit all 10,000 at once, before any outcome is known)
    p = Pipeline(bulkhead, breaker, limiter)
    rng = random.Random(11)
    active = [0]
    violations: list[str] = []

    async def work(steps: int, fail: bool) -> None:
        active[0] += 1
        if active[0] > 4 or bulkhead.snapshot().in_use > 4:
            violations.append(f"active={active[0]}")
        if breaker.metrics.half_open_in_flight > 2:
            violations.append(f"trials={breaker.metrics.half_open_in_flight}")
        try:
            for _ in range(steps):
                await asyncio.sleep(0)
            if fail:
                raise Boom
        finally:
            active[0] -= 1

    async def one(steps: int, fail: bool) -> str:
        try:
            await p.acall(work, steps, fail)
        except Boom:
            return "failed"
        except CircuitOpenError:
            return "open"
        except BulkheadFullError:
            return "full"
        except RateLimitedError:
            return "limited"
        return "ok"

    # failures come in waves (10 % then 80 %), so the breaker opens, probes and closes
    tasks = [
        asyncio.ensure_future(
            one(rng.randrange(4), rng.random() < (0.8 if (i // 500) % 2 else 0.1))
        )
        for i in range(10_000)
    ]
    for t in rng.sample(tasks, 100):  # some are cancelled before they start
        t.cancel()
    for _ in range(200):  # others while queued, waiting for a permit or running
        await asyncio.sleep(0)
        alive = [t for t in tasks if not t.done()]
        if not alive:
            break
        for t in rng.sample(alive, min(3, len(alive))):
            t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    others = [r for r in results if not isinstance(r, (str, asyncio.CancelledError))]
    assert others == []
    assert cancelled > 0
    counts = {k: results.count(k) for k in ("ok", "failed", "open", "full", "limited")}
    assert counts["ok"] > 0, counts
    assert counts["open"] > 0, counts
    assert counts["failed"] > 0, counts
    assert violations == []
    snap = bulkhead.snapshot()
    assert (snap.in_use, snap.queued) == (0, 0)
    assert breaker.metrics.half_open_in_flight == 0
