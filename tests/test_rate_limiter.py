"""RateLimiter strategy: exact timing on a manual clock, waiting, keys, stores, runtimes."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import trio
import trio.testing

from buttress import (
    ConfigurationError,
    Key,
    Pipeline,
    RateLimitedError,
    RateLimiter,
    RejectedError,
    Retry,
    StoreError,
    scope,
)
from buttress.events import CallRejected, RateLimitWaited, StoreFailed, StoreRecovered
from buttress.stores import BucketStore, MemoryBucketStore
from buttress.testing import ManualClock, RecordingListener

TENANT = Key[Any]("tenant")
COST = Key[float]("cost", default=1.0)


def ok() -> str:
    return "ok"


async def aok() -> str:
    return "ok"


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "parameter"),
    [
        ((0, 1), {}, "rate"),
        ((-1, 1), {}, "rate"),
        ((float("nan"), 1), {}, "rate"),
        ((float("inf"), 1), {}, "rate"),
        (("10", 1), {}, "rate"),
        ((1, 0.5), {}, "burst"),
        ((1, 0), {}, "burst"),
        ((1, float("inf")), {}, "burst"),
        ((1, 1), {"max_wait": -1}, "max_wait"),
        ((1, 1), {"max_wait": timedelta(seconds=-1)}, "max_wait"),
        ((1, 1), {"max_wait": float("nan")}, "max_wait"),
        ((1, 2), {"cost": 0}, "cost"),
        ((1, 2), {"cost": 3}, "cost"),
        ((1, 1), {"key": "tenant"}, "key"),
        ((1, 1), {"max_keys": 0}, "max_keys"),
        ((1, 1), {"store": object()}, "store"),
        ((1, 1), {"fail_open": "yes"}, "fail_open"),
        ((1, 1), {"name": ""}, "name"),
    ],
)
def test_bad_settings_raise_configuration_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        RateLimiter(*args, **kwargs)
    assert info.value.parameter == parameter


def test_settings_are_kept() -> None:
    r = RateLimiter(2, 5, max_wait=timedelta(milliseconds=500), name="api")
    assert (r.rate, r.burst, r.max_wait, r.interval, r.name) == (2.0, 5.0, 0.5, 0.5, "api")
    assert RateLimiter(1, 1).max_wait == 0.0
    assert RateLimiter(1, 1, max_wait=None).max_wait is None
    assert "RateLimiter(2.0, 5.0" in repr(r)


# -- sync, exact on a manual clock ------------------------------------------------------------


def test_burst_then_exact_retry_after(clock: ManualClock, events: RecordingListener) -> None:
    r = RateLimiter(4, 3, name="api")
    p = Pipeline(r, clock=clock, name="svc", listeners=[events])
    assert [p.call(ok) for _ in range(3)] == ["ok"] * 3
    with pytest.raises(RateLimitedError) as info:
        p.call(ok)
    err = info.value
    assert isinstance(err, RejectedError)
    assert (err.strategy, err.retry_after) == ("api", 0.25)
    [event] = events.of_type(CallRejected)
    assert (event.reason, event.retry_after, event.key, event.pipeline) == (
        "rate_limited",
        0.25,
        None,
        "svc",
    )
    clock.advance(0.2)
    with pytest.raises(RateLimitedError) as info:
        p.call(ok)
    assert info.value.retry_after == pytest.approx(0.05)
    clock.advance(0.05)
    assert p.call(ok) == "ok"  # exactly at retry_after
    assert r.available(clock.now()) == 0.0
    clock.advance(10)
    assert r.available(clock.now()) == 3.0


def test_steady_rate(clock: ManualClock) -> None:
    p = Pipeline(RateLimiter(10, 1), clock=clock)
    admitted = 0
    for _ in range(1000):  # 10 attempts per permit interval
        try:
            p.call(ok)
            admitted += 1
        except RateLimitedError:
            pass
        clock.advance(0.01)
    assert admitted == 100


def test_max_wait_queues_instead_of_rejecting(
    clock: ManualClock, events: RecordingListener
) -> None:
    r = RateLimiter(2, 1, max_wait=1.0)
    p = Pipeline(r, clock=clock, listeners=[events])
    assert p.call(ok) == "ok"
    assert p.call(ok) == "ok"  # waits 0.5 s (the manual clock advances)
    assert clock.sleeps == [0.5]
    assert clock.now() == 0.5
    [waited] = events.of_type(RateLimitWaited)
    assert (waited.wait, waited.time) == (0.5, 0.5)


def test_wait_longer_than_max_wait_is_rejected_with_exact_retry_after(clock: ManualClock) -> None:
    r = RateLimiter(1, 1, max_wait=0.5)
    p = Pipeline(r, clock=clock)
    p.call(ok)
    with pytest.raises(RateLimitedError) as info:
        p.call(ok)
    assert info.value.retry_after == 1.0  # the permit is free in 1 s
    assert clock.sleeps == []
    clock.advance(0.5)
    assert p.call(ok) == "ok"  # now the wait (0.5) fits
    assert clock.sleeps == [0.5]


def test_wait_is_bounded_by_the_context_deadline(
    clock: ManualClock, events: RecordingListener
) -> None:
    r = RateLimiter(1, 1, max_wait=None)  # as long as the deadline allows
    p = Pipeline(r, clock=clock, listeners=[events])
    p.call(ok)
    with scope(timeout=0.5, clock=clock), pytest.raises(RateLimitedError, match="deadline"):
        p.call(ok)
    assert [e.reason for e in events.of_type(CallRejected)] == ["deadline"]
    with scope(timeout=2.0, clock=clock):
        assert p.call(ok) == "ok"
    assert clock.sleeps == [1.0]


def test_unbounded_wait_without_deadline(clock: ManualClock) -> None:
    p = Pipeline(RateLimiter(0.1, 1, max_wait=None), clock=clock)
    p.call(ok)
    p.call(ok)
    p.call(ok)
    assert clock.sleeps == [10.0, 10.0]


def test_retry_outside_waits_retry_after(clock: ManualClock) -> None:
    p = Pipeline(
        Retry(on=RateLimitedError, attempts=2, backoff=0.0, budget=None),
        RateLimiter(4, 1),
        clock=clock,
    )
    p.call(ok)
    assert p.call(ok) == "ok"
    assert clock.sleeps == [0.25]


def test_cost_per_call(clock: ManualClock) -> None:
    p = Pipeline(RateLimiter(1, 3, cost=2), clock=clock)
    p.call(ok)
    with pytest.raises(RateLimitedError) as info:
        p.call(ok)
    assert info.value.retry_after == 1.0


def test_cost_from_context_and_impossible_cost(clock: ManualClock) -> None:
    p = Pipeline(RateLimiter(1, 3, cost=lambda ctx: ctx.get(COST), max_wait=None), clock=clock)
    with scope(properties={COST: 3.0}):
        p.call(ok)
    with scope(properties={COST: 4.0}), pytest.raises(RateLimitedError) as info:
        p.call(ok)  # more than the burst: never admissible, even with an unbounded wait
    assert info.value.retry_after is None
    assert clock.sleeps == []
    with scope(properties={COST: -1.0}), pytest.raises(ConfigurationError):
        p.call(ok)


def test_wall_clock_steps_do_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter runs on the monotonic clock: wall-clock jumps neither refill nor drain."""
    jumps = itertools.cycle([1e9, -1e9, 4e9, 0.0])
    monkeypatch.setattr(time, "time", lambda: next(jumps))
    monkeypatch.setattr(time, "time_ns", lambda: int(next(jumps) * 1e9))
    p = Pipeline(RateLimiter(0.001, 2))  # one permit per 1000 s of monotonic time
    assert p.call(ok) == "ok"
    assert p.call(ok) == "ok"
    for _ in range(5):
        with pytest.raises(RateLimitedError):
            p.call(ok)


# -- per key ----------------------------------------------------------------------------------


def test_keys_are_independent(clock: ManualClock, events: RecordingListener) -> None:
    r = RateLimiter(1, 1, key=lambda ctx: ctx.get(TENANT))
    p = Pipeline(r, clock=clock, listeners=[events])
    for tenant in ("a", "b", "c"):
        with scope(properties={TENANT: tenant}):
            p.call(ok)
    with scope(properties={TENANT: "a"}), pytest.raises(RateLimitedError, match="'a'"):
        p.call(ok)
    [event] = events.of_type(CallRejected)
    assert event.key == "a"
    assert r.available(clock.now(), key="a") == 0.0
    assert r.available(clock.now(), key="zzz") == 1.0


def test_keyed_memory_is_bounded(clock: ManualClock) -> None:
    r = RateLimiter(1, 1, key=lambda ctx: ctx.get(TENANT), max_keys=100)
    p = Pipeline(r, clock=clock)
    for i in range(5000):
        with scope(properties={TENANT: i}):
            p.call(ok)
    assert r._table is not None
    assert len(r._table) == 100
    assert r._table.evictions == 4900


# -- stores -----------------------------------------------------------------------------------


def test_memory_store_is_a_bucket_store_shared_by_name(clock: ManualClock) -> None:
    store = MemoryBucketStore(clock)
    assert isinstance(store, BucketStore)
    one = Pipeline(RateLimiter(1, 2, store=store, name="shared"), clock=clock)
    two = Pipeline(RateLimiter(1, 2, store=store, name="shared"), clock=clock)
    other = Pipeline(RateLimiter(1, 2, store=store, name="other"), clock=clock)
    one.call(ok)
    two.call(ok)
    with pytest.raises(RateLimitedError) as info:
        one.call(ok)
    assert info.value.retry_after == 1.0
    other.call(ok)  # another name, another bucket
    assert len(store) == 2


def test_store_with_keys_and_waiting(clock: ManualClock) -> None:
    store = MemoryBucketStore(clock)
    p = Pipeline(
        RateLimiter(2, 1, key=lambda ctx: ctx.get(TENANT), store=store, max_wait=1.0),
        clock=clock,
    )
    with scope(properties={TENANT: "a"}):
        p.call(ok)
        p.call(ok)
    with scope(properties={TENANT: "b"}):
        p.call(ok)
    assert clock.sleeps == [0.5]
    assert store.bucket_take("rate_limiter", "a", 1, 2, 1, 0.0) == 0.5  # reserved until 1.0
    clock.advance(0.5)
    assert store.bucket_take("rate_limiter", "a", 1, 2, 1, 0.0) == 0.0


class _FlakyStore:
    description = "flaky"

    def __init__(self, clock: ManualClock) -> None:
        self.inner = MemoryBucketStore(clock)
        self.broken = False

    def bucket_take(self, *args: Any) -> float:
        if self.broken:
            raise ConnectionError("down")
        return self.inner.bucket_take(*args)

    async def abucket_take(self, *args: Any) -> float:
        return self.bucket_take(*args)


def test_store_failure_falls_back_to_local_bucket(
    clock: ManualClock, events: RecordingListener
) -> None:
    store = _FlakyStore(clock)
    p = Pipeline(RateLimiter(1, 1, store=store), clock=clock, listeners=[events])
    p.call(ok)
    store.broken = True
    assert p.call(ok) == "ok"  # local bucket (fail-open) admits
    with pytest.raises(RateLimitedError):
        p.call(ok)  # ... and then limits locally
    assert len(events.of_type(StoreFailed)) == 1
    store.broken = False
    clock.advance(2.0)
    p.call(ok)
    assert len(events.of_type(StoreRecovered)) == 1


def test_store_failure_fail_closed_raises(clock: ManualClock) -> None:
    store = _FlakyStore(clock)
    store.broken = True
    p = Pipeline(RateLimiter(1, 1, store=store, fail_open=False), clock=clock)
    with pytest.raises(StoreError):
        p.call(ok)


# -- asyncio ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_asyncio_burst_wait_and_reject(clock: ManualClock, events: RecordingListener) -> None:
    p = Pipeline(RateLimiter(4, 2, max_wait=0.25), clock=clock, listeners=[events])
    assert [await p.acall(aok) for _ in range(2)] == ["ok", "ok"]
    assert await p.acall(aok) == "ok"  # waited 0.25
    assert clock.sleeps == [0.25]
    assert [e.wait for e in events.of_type(RateLimitWaited)] == [0.25]
    strict = Pipeline(RateLimiter(4, 2), clock=clock)
    await strict.acall(aok)
    await strict.acall(aok)
    with pytest.raises(RateLimitedError) as info:
        await strict.acall(aok)
    assert info.value.retry_after == 0.25


@pytest.mark.asyncio
async def test_asyncio_keyed_and_store(clock: ManualClock) -> None:
    store = MemoryBucketStore(clock)
    p = Pipeline(RateLimiter(1, 1, key=lambda ctx: ctx.get(TENANT), store=store), clock=clock)
    with scope(properties={TENANT: "a"}):
        await p.acall(aok)
        with pytest.raises(RateLimitedError):
            await p.acall(aok)
    with scope(properties={TENANT: "b"}):
        await p.acall(aok)


@pytest.mark.asyncio
async def test_asyncio_cancelled_waiter_forfeits_its_reservation() -> None:
    r = RateLimiter(1, 1, max_wait=5.0)
    p = Pipeline(r)  # system clock: the waiter really sleeps, and is cancelled
    await p.acall(aok)
    waiting = asyncio.ensure_future(p.acall(aok))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # the cancelled waiter's permit stays reserved (never refunded): the next one is ~2 s out
    assert r._bucket.wait_time(time.monotonic()) > 1.5


@pytest.mark.asyncio
@pytest.mark.realtime
async def test_asyncio_10000_tasks_never_exceed_the_schedule() -> None:
    rate, burst, max_wait = 20_000.0, 100.0, 0.05
    r = RateLimiter(rate, burst, max_wait=max_wait)
    p = Pipeline(r)
    rng = random.Random(5)
    start = time.monotonic()
    retry_afters: list[float | None] = []

    async def one() -> str:
        try:
            await p.acall(aok)
        except RateLimitedError as exc:
            retry_afters.append(exc.retry_after)
            return "rejected"
        return "ok"

    tasks = [asyncio.ensure_future(one()) for _ in range(10_000)]
    await asyncio.sleep(0)
    for t in rng.sample(tasks, 200):
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - start
    admitted = results.count("ok")
    cancelled = sum(isinstance(x, asyncio.CancelledError) for x in results)
    assert admitted + results.count("rejected") + cancelled == 10_000
    assert admitted > burst
    assert all(x is not None and x > 0 for x in retry_afters)
    # every admission (immediate or reserved) fits the bucket's schedule
    assert admitted + cancelled <= burst + rate * (elapsed + max_wait) + 1


# -- threads ----------------------------------------------------------------------------------


def test_threads_admissions_fit_burst_plus_rate() -> None:
    rate, burst = 2000.0, 50.0
    p = Pipeline(RateLimiter(rate, burst))
    admitted = [0]
    lock = threading.Lock()
    start = time.monotonic()

    def worker() -> None:
        for _ in range(2000):
            try:
                p.call(ok)
            except RateLimitedError:
                continue
            with lock:
                admitted[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - start
    assert admitted[0] >= burst
    assert admitted[0] <= burst + rate * elapsed + 1


# -- trio -------------------------------------------------------------------------------------


def test_trio_burst_wait_and_reject() -> None:
    clock = ManualClock()
    waiting = Pipeline(RateLimiter(2, 1, max_wait=0.5), clock=clock)
    strict = Pipeline(RateLimiter(2, 1), clock=clock)

    async def main() -> None:
        assert await waiting.acall(aok) == "ok"
        assert await waiting.acall(aok) == "ok"  # waits 0.5 on the manual clock
        assert await strict.acall(aok) == "ok"
        with pytest.raises(RateLimitedError) as info:
            await strict.acall(aok)
        assert info.value.retry_after == 0.5

    trio.run(main)
    assert clock.sleeps == [0.5]


def test_trio_real_wait_on_a_mock_clock() -> None:
    p = Pipeline(RateLimiter(1, 1, max_wait=None))

    async def main() -> None:
        await p.acall(aok)
        with trio.move_on_after(0.5) as cs:  # trio's clock: the 1 s wait is cancelled
            await p.acall(aok)
        assert cs.cancelled_caught

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
