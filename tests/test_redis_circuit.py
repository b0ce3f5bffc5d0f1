"""Circuit breakers on Redis: the Lua machine against the pure one, and shared state."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttress import (
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    Pipeline,
    StoreError,
    add_listener,
    remove_listener,
)
from buttress._state.circuit import CircuitPolicy, CircuitState
from buttress.events import StoreFailed
from buttress.stores import RedisStore
from buttress.testing import RecordingListener

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


def test_time_windows_are_refused(store: RedisStore) -> None:
    with pytest.raises(ConfigurationError, match="window_duration"):
        Pipeline(CircuitBreaker(window_duration=10, store=store, name="tw")).call(lambda: 1)


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
