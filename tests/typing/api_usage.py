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


def use_breaker() -> float:
    from datetime import timedelta

    from buttress import CircuitBreaker, CircuitOpenError, Key, on_exception
    from buttress.stores import CircuitStore, MemoryCircuitStore

    host = Key[str]("host", default="-")
    store: CircuitStore = MemoryCircuitStore()
    breaker = CircuitBreaker(
        on=(on_exception(CircuitBreaker.default_failure), on_result(lambda r: r is None)),
        failure_ratio=0.5,
        window_duration=timedelta(seconds=30),
        min_throughput=10,
        slow_call_duration=2.0,
        break_duration=backoff.exponential(5.0, 2.0, cap=300.0, jitter="none"),
        half_open_calls=3,
        half_open_success_ratio=0.67,
        store=store,
    )
    per_host = CircuitBreaker(key=lambda ctx: ctx.get(host), consecutive_failures=5)
    guarded = Pipeline(Retry(on=CircuitOpenError), breaker, per_host, name="guarded")
    guarded.call(add, 1, 2)
    state: str = breaker.state + per_host.state_of("a")
    breaker.isolate()
    breaker.close()
    per_host.reset("a")
    m = breaker.metrics
    retry_after: float | None = m.retry_after
    return m.failure_ratio + m.slow_ratio + m.calls + len(state) + (retry_after or 0.0)
