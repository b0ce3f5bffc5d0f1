"""Rate-limiter buckets (GCRA) on Redis: semantics, and four processes sharing one limit."""

from __future__ import annotations

import math
import multiprocessing
import time
from typing import Any

import pytest

from buttress.stores import RedisStore

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str) -> Any:
    s = RedisStore(redis_url, timeout=2)
    yield s
    s.close()


def test_burst_then_exact_wait(store: RedisStore) -> None:
    taken = [store.bucket_take("api", "", 1, 10, 5, 0) for _ in range(5)]
    assert taken == [0.0] * 5  # a full burst
    wait = store.bucket_take("api", "", 1, 10, 5, 0)
    assert 0.05 < wait <= 0.1  # about one interval (minus the time the calls took)
    assert store.bucket_take("api", "other-key", 1, 10, 5, 0) == 0.0  # keys are separate
    time.sleep(wait + 0.01)
    assert store.bucket_take("api", "", 1, 10, 5, 0) == 0.0


def test_reservation_and_impossible_requests(store: RedisStore) -> None:
    for _ in range(2):
        assert store.bucket_take("r", "", 1, 10, 2, 0) == 0.0
    reserved = store.bucket_take("r", "", 1, 10, 2, 1.0)  # fits in max_wait: reserved
    assert 0 < reserved <= 0.1
    second = store.bucket_take("r", "", 1, 10, 2, math.inf)
    assert reserved < second <= 0.2 + 1e-6  # queued behind the first reservation
    assert store.bucket_take("r", "", 3, 10, 2, math.inf) == math.inf  # > burst: never
    ttl = store._sync().pttl("buttress:{r}:rl:")
    assert 0 < ttl <= 1500  # expires once full again (<= 0.4 s here, + 1 s slack)


def test_rate_limiter_strategy_shares_its_bucket(redis_url: str) -> None:
    from buttress import Pipeline, RateLimitedError, RateLimiter

    s1, s2 = RedisStore(redis_url, timeout=2), RedisStore(redis_url, timeout=2)
    try:
        p1 = Pipeline(RateLimiter(1, 4, store=s1, name="api"))
        p2 = Pipeline(RateLimiter(1, 4, store=s2, name="api"))
        assert [p1.call(lambda: 1), p2.call(lambda: 2), p1.call(lambda: 3), p2.call(lambda: 4)]
        with pytest.raises(RateLimitedError) as info:
            p1.call(lambda: 5)  # the burst of 4 was shared by both processes
        assert info.value.retry_after is not None
        assert 0 < info.value.retry_after <= 1.0
    finally:
        s1.close()
        s2.close()


def limiter_worker(url: str, start: Any, seconds: float, out: Any) -> None:
    from buttress import Pipeline, RateLimitedError, RateLimiter

    s = RedisStore(url, timeout=5)
    pipe = Pipeline(RateLimiter(RATE, BURST, store=s, name="shared"))
    start.wait()
    admissions: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            pipe.call(time.monotonic)
        except RateLimitedError:
            continue
        admissions.append(time.monotonic())  # one clock for every process here
    s.close()
    out.put(admissions)


RATE = 100.0
BURST = 50.0  # absorbs scheduling gaps of up to 0.5 s on a loaded machine


@pytest.mark.slow
def test_four_processes_share_one_limit(redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=limiter_worker, args=(redis_url, start, 4.0, out)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    out.close()
    out.join_thread()
    times = sorted(t for r in reports for t in r)
    assert all(r for r in reports)  # every process got some
    # GCRA: a full bucket at the first admission, then `rate` per second
    limit = BURST + RATE * (times[-1] - times[0])
    admitted = len(times)
    assert admitted <= limit + 1
    assert abs(admitted - limit) <= 0.01 * limit, (admitted, limit)
