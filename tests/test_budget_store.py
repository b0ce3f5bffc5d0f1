"""Retry budgets shared through a store (memory stand-in and a real redis-server)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress import (
    ConfigurationError,
    RatioBudget,
    StoreError,
    TokenBucketBudget,
    add_listener,
    remove_listener,
)
from buttress.events import StoreFailed, StoreRecovered
from buttress.stores import MemoryBudgetStore, RedisStore
from buttress.stores.memory import budget_step
from buttress.testing import ManualClock, RecordingListener


def test_two_processes_share_one_token_bucket() -> None:
    store = MemoryBudgetStore(ManualClock())
    a = TokenBucketBudget(20, retry_cost=5, name="svc", store=store)
    b = TokenBucketBudget(20, retry_cost=5, name="svc", store=store)
    taken = [a.try_withdraw(0), b.try_withdraw(0), a.try_withdraw(0), b.try_withdraw(0)]
    assert taken == [True, True, True, True]
    assert not a.try_withdraw(0)
    assert not b.try_withdraw(0)
    # five first-try successes in b refund 5 tokens at b's next exchange
    for _ in range(5):
        b.record_first_try(True)
    assert b.try_withdraw(0)
    assert not a.try_withdraw(0)


def test_shared_ratio_budget_counts_every_process_requests() -> None:
    clock = ManualClock()
    store = MemoryBudgetStore(clock)
    procs = [RatioBudget(0.1, min_retries_per_second=0, name="r", store=store) for _ in range(4)]
    for p in procs:
        for _ in range(25):
            p.on_first_failure()
    # deposits are handed over with withdrawals: each process flushes its 25 requests
    got = sum(p.try_withdraw(0.0) for p in procs for _ in range(3))
    # 4 x 25 = 100 requests x 0.1 = 10 retries in total, but only as deposits arrive:
    # process 1 has 2.5 tokens when it asks, etc. -> 2 + 3 + 2 + 3 = 10 at most
    assert 8 <= got <= 10
    assert not any(p.try_withdraw(0.0) for p in procs)


def test_store_failure_falls_back_to_local_budget() -> None:
    class Broken:
        description = "broken"

        def budget_withdraw(self, *a: Any) -> Any:
            raise ConnectionError("down")

        def budget_deposit(self, *a: Any) -> Any:
            raise ConnectionError("down")

    events = RecordingListener()
    add_listener(events)
    try:
        b = TokenBucketBudget(10, retry_cost=5, name="fo", store=Broken())
        assert b.try_withdraw(0.0)
        assert b.try_withdraw(0.5)
        assert not b.try_withdraw(0.7)  # the local balance is used meanwhile
        failed = events.of_type(StoreFailed)
        assert len(failed) == 1  # the store is skipped until store_retry passes
        assert failed[0].fail_open
        b.store = MemoryBudgetStore(ManualClock())
        assert b.try_withdraw(2.0)
        assert events.of_type(StoreRecovered)
        closed = TokenBucketBudget(10, name="fc", store=Broken(), fail_open=False)
        with pytest.raises(StoreError):
            closed.try_withdraw(0.0)
    finally:
        remove_listener(events)


def test_invalid_store() -> None:
    with pytest.raises(ConfigurationError):
        RatioBudget(store=object())
    with pytest.raises(ConfigurationError):
        TokenBucketBudget(store=MemoryBudgetStore(), store_retry=0)


@given(
    st.lists(
        st.tuples(st.floats(0, 5), st.integers(0, 50)),
        max_size=30,
    )
)
def test_property_store_arithmetic_matches_the_local_ratio_budget(
    steps: list[tuple[float, int]],
) -> None:
    local = RatioBudget(0.2, min_retries_per_second=1.0, window=10.0)
    balance: float | None = None
    last: float | None = None
    now = 0.0
    for advance, requests in steps:
        now += advance
        for _ in range(requests):
            local.on_first_failure()
        balance = budget_step("ratio", (0.2, 1.0, 10.0), balance, last, now, requests)
        last = now
        assert math.isclose(local.level(now), balance, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.redis
def test_redis_budget_shared_between_processes(redis_url: str) -> None:
    s1, s2 = RedisStore(redis_url, timeout=2), RedisStore(redis_url, timeout=2)
    try:
        a = TokenBucketBudget(20, retry_cost=5, name="shared", store=s1)
        b = TokenBucketBudget(20, retry_cost=5, name="shared", store=s2)
        assert [a.try_withdraw(0), b.try_withdraw(0), a.try_withdraw(0), b.try_withdraw(0)] == [
            True
        ] * 4
        assert not a.try_withdraw(0)
        b.record_retry_success()  # refunds 5 at b's next exchange
        assert b.level(0) == pytest.approx(5.0)
        assert a.try_withdraw(0)
        assert s1._sync().ttl("buttress:{shared}:budget") > 0  # expires by itself
        r1 = RatioBudget(0.5, min_retries_per_second=0, name="ratio", store=s1)
        for _ in range(6):
            r1.on_first_failure()
        # 6 x 0.5 = 3 tokens, decaying slowly with the server's TIME (window 10 s)
        assert r1.try_withdraw(0)
        assert r1.try_withdraw(0)
        assert sum(r1.try_withdraw(0) for _ in range(5)) <= 1
        r2 = RatioBudget(0.5, min_retries_per_second=0, name="ratio", store=s2)
        assert not r2.try_withdraw(0)  # the other process sees the same, spent balance
    finally:
        s1.close()
        s2.close()


def test_repeated_exchange_is_not_counted_twice() -> None:
    store = MemoryBudgetStore(ManualClock())
    assert store.budget_withdraw("n", "bucket", (100.0,), "c1", 0.0, 100.0) == (True, 0.0)
    assert store.budget_deposit("n", "bucket", (100.0,), "c1", 30.0) == 30.0
    assert store.budget_deposit("n", "bucket", (100.0,), "c1", 30.0) == 30.0  # a repeat
    assert store.budget_deposit("n", "bucket", (100.0,), "c2", 5.0) == 35.0  # another client


@pytest.mark.redis
def test_redis_repeated_exchange_is_not_counted_twice(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=2)
    try:
        assert store.budget_withdraw("n", "bucket", (100.0,), "c1", 0.0, 100.0) == (True, 0.0)
        assert store.budget_deposit("n", "bucket", (100.0,), "c1", 30.0) == 30.0
        assert store.budget_deposit("n", "bucket", (100.0,), "c1", 30.0) == 30.0
        assert store.budget_deposit("n", "bucket", (100.0,), "c2", 5.0) == 35.0
    finally:
        store.close()
