"""Type-checked use of the public API, as users write it (checked by mypy --strict)."""

from __future__ import annotations

from buttress import Fallback, Pipeline, Retry, Timeout, backoff, on_result

pipeline = Pipeline(
    Fallback(on=TimeoutError, value=0),
    Retry(
        on=(ConnectionError, on_result(lambda r: r == -1)),
        attempts=3,
        backoff=backoff.exponential(0.1, cap=2.0),
    ),
    Timeout(1.0),
    name="typed",
)


@pipeline
def add(a: int, b: int) -> int:
    return a + b


@pipeline
async def aadd(a: int, b: int) -> int:
    return a + b


def use() -> int:
    total: int = add(1, 2)
    total += pipeline.call(add, 3, b=4)
    return total


async def ause() -> int:
    return await aadd(1, 2) + await pipeline.acall(aadd, 1, b=2)


def use_limits() -> float:
    from datetime import timedelta

    from buttress import Bulkhead, Key, RateLimiter
    from buttress.stores import MemoryBucketStore

    tenant = Key[str]("tenant", default="anonymous")
    bulkhead = Bulkhead(8, max_queued=16, max_wait=timedelta(milliseconds=250))
    limiter = RateLimiter(
        50.0,
        10,
        max_wait=0.1,
        key=lambda ctx: ctx.get(tenant),
        cost=lambda ctx: 2.0,
        store=MemoryBucketStore(),
    )
    limited = Pipeline(limiter, bulkhead, name="limited")
    limited.call(add, 1, 2)
    snap = bulkhead.snapshot()
    in_use: int = snap.in_use + snap.queued + snap.available
    return limiter.available(limited.clock.now(), key="acme") + in_use
