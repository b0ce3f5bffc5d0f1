"""Circuit breakers on Redis: the Lua machine against the pure one and the reference model
(count and time windows), shared state, fail-open."""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttress import (
    CircuitBreaker,
    CircuitOpenError,
    Pipeline,
    StoreError,
    add_listener,
    remove_listener,
)
from buttress._state.circuit import CircuitPolicy, CircuitState
from buttress.events import StoreFailed
from buttress.stores import RedisStore
from buttress.stores.memory import MemoryCircuit
from buttress.stores.redis_circuit import RedisCircuit
from buttress.testing import RecordingListener
from circuit_contract import make_circuit_machine

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str) -> Any:
    s = RedisStore(redis_url, timeout=2)
    yield s
    s.close()


OPS = st.lists(
    st.one_of(
        st.just(("acquire",)),
        st.tuples(st.just("record"), st.booleans(), st.booleans()),
        st.just(("release",)),
        st.just(("isolate",)),
        st.just(("close",)),
        st.just(("reset",)),
        st.just(("stale",)),  # record with an old token: ignored by both
    ),
    max_size=60,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(OPS, st.integers(1, 4), st.integers(1, 3))
def test_lua_machine_matches_the_pure_machine(
    store: RedisStore, ops: list[tuple[Any, ...]], min_throughput: int, half_open: int
) -> None:
    """With break 0 and no time limits every decision is time-independent: compare."""
    policy = CircuitPolicy(
        failure_ratio=0.5,
        consecutive_failures=3,
        window=4,
        min_throughput=min_throughput,
        slow_call_duration=1.0,
        slow_call_ratio=0.75,
        break_duration=0.0,
        break_reset_after=1e6,
        half_open_calls=half_open,
        half_open_max_duration=None,
    )
    store._sync().flushall()
    remote = store.circuit("diff", None, policy)
    local = CircuitState(policy)
    token = 0
    for op in ops:
        if op[0] == "acquire":
            a, b = remote.try_acquire(0.0), local.try_acquire(0.0)
            assert (a.permitted, a.trial, a.state, a.token, a.previous_state) == (
                b.permitted,
                b.trial,
                b.state,
                b.token,
                b.previous_state,
            )
            token = b.token
        elif op[0] in ("record", "stale"):
            failed, slow = (op[1], op[2]) if op[0] == "record" else (True, False)
            t = token if op[0] == "record" else token - 1
            duration = 2.0 if slow else 0.1
            snap = remote.record(t, failed, duration, 0.0)
            previous = local.record(t, failed, duration, 0.0)
            assert snap.previous_state == previous
        elif op[0] == "release":
            remote.release(token, 0.0)
            local.release(token, 0.0)
        else:
            snap = remote.transition(op[0], 0.0)
            previous = getattr(local, op[0])(0.0)
            assert snap.previous_state == previous
        r, p = remote.snapshot(0.0), local.snapshot(0.0)
        assert (
            r.state,
            r.generation,
            r.calls,
            r.failures,
            r.slow_calls,
            r.consecutive_failures,
            r.opens,
            r.half_open_in_flight,
            r.half_open_successes,
            r.half_open_failures,
        ) == (
            p.state,
            p.generation,
            p.calls,
            p.failures,
            p.slow_calls,
            p.consecutive_failures,
            p.opens,
            p.half_open_in_flight,
            p.half_open_successes,
            p.half_open_failures,
        )


def test_reopen_with_zero_break_reports_retry_after_zero(store: RedisStore) -> None:
    """A trial round held past half_open_max_duration reopens at once; with break 0 the
    rejection's retry_after is 0.0, as in the pure machine (Lua said None: the break had
    already elapsed, so its snapshot read the state as half-open)."""
    policy = CircuitPolicy(
        failure_ratio=None,
        consecutive_failures=1,
        window=4,
        break_duration=0.0,
        half_open_calls=1,
        half_open_max_duration=2.0,
    )
    store._sync().flushall()
    remote = RedisCircuit(store, "zero-break", None, policy, caller_clock=True)
    local = CircuitState(policy)
    for cell in (remote, local):
        first = cell.try_acquire(0.0)
        cell.record(first.token, True, 0.1, 0.0)  # opens, break 0
        assert cell.try_acquire(0.0).trial  # the break has elapsed: one trial
    a, b = remote.try_acquire(2.5), local.try_acquire(2.5)  # the trial overran: reopen
    assert (b.permitted, b.state, b.previous_state, b.retry_after) == (
        False,
        "open",
        "half_open",
        0.0,
    )
    assert (a.permitted, a.state, a.previous_state, a.retry_after) == (
        b.permitted,
        b.state,
        b.previous_state,
        b.retry_after,
    )


def test_open_in_one_process_rejects_in_the_other(redis_url: str) -> None:
    s1, s2 = RedisStore(redis_url, timeout=2), RedisStore(redis_url, timeout=2)
    try:
        kw: dict[str, Any] = {
            "on": ConnectionError,
            "consecutive_failures": 2,
            "break_duration": 30,
            "name": "payments",
        }
        p1 = Pipeline(CircuitBreaker(store=s1, **kw))
        p2 = Pipeline(CircuitBreaker(store=s2, **kw))
        assert p2.call(lambda: "ok") == "ok"

        def boom() -> None:
            raise ConnectionError

        for _ in range(2):
            with pytest.raises(ConnectionError):
                p1.call(boom)
        with pytest.raises(CircuitOpenError) as info:
            p2.call(lambda: "never runs")
        assert info.value.retry_after is not None
        assert 29 < info.value.retry_after <= 30
        # the TTL of the state keys bounds memory: they expire by themselves
        assert s1._sync().ttl("buttress:{payments}:cb:-") > 0
    finally:
        s1.close()
        s2.close()


def test_break_elapses_on_the_server_clock(store: RedisStore) -> None:
    breaker = CircuitBreaker(
        on=ConnectionError, consecutive_failures=1, break_duration=0.2, store=store, name="b"
    )
    pipe = Pipeline(breaker)

    def boom() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        pipe.call(boom)
    with pytest.raises(CircuitOpenError):
        pipe.call(lambda: 1)
    time.sleep(0.25)
    assert pipe.call(lambda: 1) == 1  # half-open trial succeeds -> closed
    assert breaker.state == "closed"


def test_per_key_breakers_are_separate(store: RedisStore) -> None:
    breaker = CircuitBreaker(
        on=ConnectionError,
        consecutive_failures=1,
        break_duration=30,
        key=lambda ctx: ctx.operation_key or "none",
        store=store,
        name="hosts",
    )
    s = store.circuit("hosts", "a", breaker.policy)
    assert s.try_acquire(0).permitted
    s.record(0, True, None, 0)
    assert not s.try_acquire(0).permitted
    assert store.circuit("hosts", "b", breaker.policy).try_acquire(0).permitted


# -- time windows -------------------------------------------------------------------------------


class _Contract:
    store: RedisStore | None = None


@pytest.fixture
def contract_store(redis_url: str) -> Any:
    _Contract.store = RedisStore(redis_url, timeout=2)
    yield _Contract.store
    _Contract.store.close()
    _Contract.store = None


def _on_caller_clock(policy: CircuitPolicy) -> RedisCircuit:
    assert _Contract.store is not None
    return RedisCircuit(_Contract.store, "contract", uuid4().hex, policy, caller_clock=True)


# The reference-model state machine the memory circuit runs (tests/circuit_contract.py), on
# the Lua script with the test's clock passed in: exact times, bucket edges included.
TestRedisCircuitTimeWindow = pytest.mark.usefixtures("contract_store")(
    make_circuit_machine(_on_caller_clock, windows="time", max_examples=80).TestCase
)
TestRedisCircuitCountWindow = pytest.mark.usefixtures("contract_store")(
    make_circuit_machine(_on_caller_clock, windows="count", max_examples=30).TestCase
)


def _timed(**kw: Any) -> CircuitPolicy:
    settings: dict[str, Any] = {
        "failure_ratio": 0.5,
        "window_duration": 4.0,
        "window_buckets": 4,
        "min_throughput": 2,
        "break_duration": 10.0,
    }
    settings.update(kw)
    return CircuitPolicy(**settings)


def test_time_window_buckets_roll_like_the_memory_window(store: RedisStore) -> None:
    policy = _timed(min_throughput=3)
    remote = RedisCircuit(store, "tw", None, policy, caller_clock=True)
    local = MemoryCircuit(policy)
    script = [
        (0.0, True),  # bucket 0
        (0.5, False),
        (1.0, False),  # bucket 1
        (3.9, False),  # bucket 3: the window holds buckets 0..3
        (4.0, False),  # bucket 4 drops bucket 0 (two calls, the failure among them)
        (5.5, True),  # bucket 5 drops bucket 1
        (9.5, True),  # a quiet spell longer than the window: only this call is left
    ]
    seen = []
    for now, failed in script:
        for c in (remote, local):
            assert c.try_acquire(now).permitted
            c.record(0, failed, None, now)
        r, m = remote.snapshot(now), local.snapshot(now)
        assert (r.state, r.calls, r.failures) == (m.state, m.calls, m.failures)
        seen.append((r.calls, r.failures))
    assert seen == [(1, 1), (2, 1), (3, 1), (4, 1), (3, 0), (3, 1), (1, 1)]
    # a snapshot alone expires buckets too, as in memory
    assert (remote.snapshot(12.9).calls, local.snapshot(12.9).calls) == (1, 1)
    assert (remote.snapshot(13.0).calls, local.snapshot(13.0).calls) == (0, 0)
    # memory stays bounded: one string of 18 bytes per bucket, and both keys expire
    client = store._sync()
    for i in range(200):
        remote.record(0, False, None, 20.0 + i * 0.7)
    state_key, window_key = remote.keys
    assert 0 < client.strlen(window_key) <= 18 * 4
    assert client.ttl(state_key) > 0
    assert client.ttl(window_key) > 0
    assert client.type(state_key) == b"hash"


def test_time_window_slow_ratio_min_throughput_and_half_open(store: RedisStore) -> None:
    policy = _timed(
        failure_ratio=None,
        slow_call_duration=1.0,
        slow_call_ratio=0.5,
        min_throughput=4,
        half_open_calls=2,
        break_duration=2.0,
    )
    remote = RedisCircuit(store, "slow", None, policy, caller_clock=True)
    for i, duration in enumerate([2.0, 2.0, 0.1]):
        snap = remote.record(0, False, duration, 0.1 * i)
        assert snap.state == "closed"  # 3 calls < min_throughput 4
    snap = remote.record(0, False, 1.5, 0.3)
    assert (snap.state, snap.previous_state, snap.slow_calls, snap.calls) == (
        "open",
        "closed",
        3,
        4,
    )
    rejected = remote.try_acquire(1.3)
    assert (rejected.permitted, rejected.retry_after) == (False, 1.0)
    first, second = remote.try_acquire(2.3), remote.try_acquire(2.3)
    assert first.trial and second.trial and first.previous_state == "open"
    remote.record(first.token, False, 0.1, 2.4)
    snap = remote.record(second.token, False, 0.1, 2.5)
    assert (snap.state, snap.previous_state, snap.calls) == ("closed", "half_open", 0)
    # the closed window starts empty: one slow call among the old buckets does not reopen
    assert remote.record(snap.generation, False, 2.0, 2.6).state == "closed"


def test_time_window_on_the_server_clock(store: RedisStore) -> None:
    """Without a test clock the buckets roll on Redis' TIME (a real, short window)."""
    policy = _timed(window_duration=0.4, window_buckets=2, min_throughput=3)
    circuit = store.circuit("server-clock", None, policy)
    for _ in range(2):
        assert circuit.try_acquire(0).permitted
        circuit.record(0, True, None, 0)
    assert circuit.snapshot(0).calls == 2
    time.sleep(0.45)  # longer than the window: both failures are gone
    assert circuit.snapshot(0).calls == 0
    snap = circuit.record(0, True, None, 0)  # 1 call < min_throughput: still closed
    assert (snap.state, snap.calls, snap.failures) == ("closed", 1, 1)


def test_two_stores_share_one_time_window_breaker(redis_url: str) -> None:
    s1, s2 = RedisStore(redis_url, timeout=2), RedisStore(redis_url, timeout=2)
    try:
        kw: dict[str, Any] = {
            "on": ConnectionError,
            "failure_ratio": 0.5,
            "window_duration": 30,
            "window_buckets": 6,
            "min_throughput": 4,
            "break_duration": 30,
            "name": "tw-shared",
        }
        b1, b2 = CircuitBreaker(store=s1, **kw), CircuitBreaker(store=s2, **kw)
        p1, p2 = Pipeline(b1), Pipeline(b2)

        def boom() -> None:
            raise ConnectionError

        assert [p2.call(lambda: "ok"), p2.call(lambda: "ok")] == ["ok", "ok"]
        with pytest.raises(ConnectionError):
            p1.call(boom)
        assert b1.metrics.calls == 3  # the successes made through the other store count
        with pytest.raises(ConnectionError):
            p1.call(boom)  # 2 of 4 calls failed: the shared breaker opens
        with pytest.raises(CircuitOpenError) as info:
            p2.call(lambda: "never runs")
        assert info.value.retry_after is not None
        assert 29 < info.value.retry_after <= 30
        assert b2.state == "open"
        assert s1._sync().ttl("buttress:{tw-shared}:cbr:-") > 0
    finally:
        s1.close()
        s2.close()


async def test_time_window_breaker_async(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=2)
    try:
        breaker = CircuitBreaker(
            on=ConnectionError,
            failure_ratio=1.0,
            window_duration=10,
            min_throughput=2,
            break_duration=30,
            store=store,
            name="tw-async",
        )
        pipe = Pipeline(breaker)

        async def boom() -> None:
            raise ConnectionError

        for _ in range(2):
            with pytest.raises(ConnectionError):
                await pipe.acall(boom)
        with pytest.raises(CircuitOpenError):
            await pipe.acall(boom)
        assert breaker.metrics.failures == 2
    finally:
        await store.aclose()
        store.close()


def test_a_window_of_another_shape_is_cleared_not_misread(store: RedisStore) -> None:
    """The same breaker name deployed with other window settings: no error, empty window."""
    count = CircuitPolicy(failure_ratio=0.5, window=4, min_throughput=2)
    timed = _timed(min_throughput=2)
    other_buckets = _timed(min_throughput=2, window_buckets=2)
    a = RedisCircuit(store, "shape", None, count, caller_clock=True)
    b = RedisCircuit(store, "shape", None, timed, caller_clock=True)
    c = RedisCircuit(store, "shape", None, other_buckets, caller_clock=True)
    a.record(0, True, None, 0.0)
    assert a.snapshot(0.0).failures == 1
    assert b.snapshot(0.0).calls == 0  # the ring is not read as buckets
    b.record(0, True, None, 0.0)
    b.record(0, False, None, 0.0)
    assert (b.snapshot(0.0).calls, b.snapshot(0.0).failures) == (2, 1)
    assert c.snapshot(0.0).calls == 0
    assert a.snapshot(0.0).calls == 0  # the buckets are not read as a ring
    assert a.snapshot(0.0).state == "closed"


def test_redis_down_falls_back_to_local_state() -> None:
    from redis_fixture import free_port

    events = RecordingListener()
    add_listener(events)
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        pipe = Pipeline(
            CircuitBreaker(on=ConnectionError, consecutive_failures=2, store=store, name="fo")
        )
        assert pipe.call(lambda: "answer") == "answer"

        def boom() -> None:
            raise ConnectionError

        for _ in range(2):
            with pytest.raises(ConnectionError):
                pipe.call(boom)
        with pytest.raises(CircuitOpenError):  # the local fallback state opened
            pipe.call(lambda: 1)
        assert events.of_type(StoreFailed)
        closed = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, fail_open=False)
        with pytest.raises(StoreError):
            Pipeline(CircuitBreaker(store=closed, name="fc")).call(lambda: 1)
        closed.close()
    finally:
        remove_listener(events)
        store.close()


def test_time_window_falls_back_to_a_local_time_window_when_redis_is_down() -> None:
    from redis_fixture import free_port

    events = RecordingListener()
    add_listener(events)
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    closed = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, fail_open=False)
    try:
        breaker = CircuitBreaker(
            on=ConnectionError,
            failure_ratio=0.5,
            window_duration=30,
            min_throughput=4,
            store=store,
            name="tw-fo",
        )
        pipe = Pipeline(breaker)
        assert [pipe.call(lambda: "ok") for _ in range(2)] == ["ok", "ok"]

        def boom() -> None:
            raise ConnectionError

        for _ in range(2):
            with pytest.raises(ConnectionError):
                pipe.call(boom)
        with pytest.raises(CircuitOpenError):  # 2 of 4 failed in the local time window
            pipe.call(lambda: 1)
        assert (breaker.metrics.calls, breaker.metrics.failures) == (4, 2)
        assert events.of_type(StoreFailed)
        with pytest.raises(StoreError):
            Pipeline(CircuitBreaker(window_duration=30, store=closed, name="tw-fc")).call(lambda: 1)
    finally:
        remove_listener(events)
        store.close()
        closed.close()
