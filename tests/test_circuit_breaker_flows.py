"""CircuitBreaker flows: async, trio, composition with Retry/Timeout, per-key, slot release."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from buttress import (
    CircuitBreaker,
    CircuitIsolatedError,
    CircuitOpenError,
    Key,
    Pipeline,
    Retry,
    Timeout,
    TimeoutRejectedError,
    backoff,
    on_result,
    scope,
)
from buttress.events import CallRejected, CircuitStateChanged
from buttress.testing import ManualClock, RecordingListener


def fail() -> None:
    raise ConnectionError("down")


async def afail() -> None:
    await asyncio.sleep(0)
    raise ConnectionError("down")


async def aok() -> str:
    await asyncio.sleep(0)
    return "ok"


def outcome(p: Pipeline, fn: Any) -> Any:
    try:
        return p.call(fn)
    except Exception as exc:
        return exc


async def aoutcome(p: Pipeline, fn: Any) -> Any:
    try:
        return await p.acall(fn)
    except Exception as exc:
        return exc


# -- async ---------------------------------------------------------------------------------


def test_async_full_cycle_exact(clock: ManualClock, events: RecordingListener) -> None:
    b = CircuitBreaker(consecutive_failures=2, failure_ratio=None, break_duration=4.0)
    p = Pipeline(b, clock=clock, listeners=[events])

    async def main() -> None:
        assert isinstance(await aoutcome(p, afail), ConnectionError)
        assert isinstance(await aoutcome(p, afail), ConnectionError)
        assert b.state == "open"
        clock.advance(1.0)
        err = await aoutcome(p, aok)
        assert isinstance(err, CircuitOpenError)
        assert err.retry_after == 3.0
        clock.advance(3.0)
        assert await p.acall(aok) == "ok"
        assert b.state == "closed"

    asyncio.run(main())
    assert [(e.time, e.from_state, e.to_state) for e in events.of_type(CircuitStateChanged)] == [
        (0.0, "closed", "open"),
        (4.0, "open", "half_open"),
        (4.0, "half_open", "closed"),
    ]


def test_async_failure_is_counted_after_the_await_not_on_the_coroutine(
    clock: ManualClock,
) -> None:
    b = CircuitBreaker(consecutive_failures=1)
    p = Pipeline(b, clock=clock)

    @p
    async def later_fails() -> None:
        await asyncio.sleep(0)
        raise ConnectionError

    async def main() -> None:
        coro = later_fails()
        assert b.state == "closed"  # nothing has run yet: a coroutine is not a result
        with pytest.raises(ConnectionError):
            await coro
        assert b.state == "open"

    asyncio.run(main())


def test_async_time_window_and_slow_calls(clock: ManualClock) -> None:
    b = CircuitBreaker(
        window_duration=10.0,
        min_throughput=2,
        failure_ratio=None,
        slow_call_duration=1.0,
        slow_call_ratio=0.5,
    )
    p = Pipeline(b, clock=clock)

    async def slow() -> str:
        clock.advance(2.0)
        await asyncio.sleep(0)
        return "slow"

    async def main() -> None:
        assert await p.acall(aok) == "ok"
        assert await p.acall(slow) == "slow"

    asyncio.run(main())
    assert b.state == "open"
    assert b.metrics.slow_ratio == 0.5


def test_trio_basic_flow(clock: ManualClock, events: RecordingListener) -> None:
    trio = pytest.importorskip("trio")
    b = CircuitBreaker(consecutive_failures=1, break_duration=2.0)
    p = Pipeline(b, clock=clock, listeners=[events])

    async def tfail() -> None:
        await trio.lowlevel.checkpoint()
        raise ConnectionError

    async def tok() -> str:
        await trio.lowlevel.checkpoint()
        return "ok"

    async def main() -> None:
        with pytest.raises(ConnectionError):
            await p.acall(tfail)
        with pytest.raises(CircuitOpenError) as info:
            await p.acall(tok)
        assert info.value.retry_after == 2.0
        clock.advance(2.0)
        assert await p.acall(tok) == "ok"

    trio.run(main)
    assert b.state == "closed"
    assert [e.to_state for e in events.of_type(CircuitStateChanged)] == [
        "open",
        "half_open",
        "closed",
    ]


def test_trio_cancelled_trial_releases_its_slot(clock: ManualClock) -> None:
    trio = pytest.importorskip("trio")
    b = CircuitBreaker(consecutive_failures=1, break_duration=0.0)
    p = Pipeline(b, clock=clock)

    async def main() -> None:
        with pytest.raises(ConnectionError):
            await p.acall(tfail)
        with trio.move_on_after(0.01):
            await p.acall(trio.sleep_forever)
        assert b.metrics.half_open_in_flight == 0
        assert await p.acall(tok) == "ok"

    async def tfail() -> None:
        raise ConnectionError

    async def tok() -> str:
        return "ok"

    trio.run(main)
    assert b.state == "closed"


# -- composition with Retry ------------------------------------------------------------------


def test_retry_outside_waits_for_retry_after_then_probes(clock: ManualClock) -> None:
    b = CircuitBreaker(consecutive_failures=1, break_duration=5.0)
    p = Pipeline(
        Retry(on=CircuitOpenError, attempts=4, backoff=backoff.constant(0.5), budget=None),
        b,
        clock=clock,
    )
    outcome(p, fail)  # ConnectionError is not retried; the breaker opens at t=0
    clock.advance(1.0)
    calls: list[float] = []

    def dependency() -> str:
        calls.append(clock.now())
        return "ok"

    assert p.call(dependency) == "ok"
    assert clock.sleeps == [4.0]  # exactly the remaining break, not the 0.5 s backoff
    assert calls == [5.0]  # the dependency saw one call: the half-open trial
    assert b.state == "closed"


def test_retry_outside_stops_when_retry_after_exceeds_its_limits(clock: ManualClock) -> None:
    b = CircuitBreaker(consecutive_failures=1, break_duration=60.0)
    p = Pipeline(
        Retry(on=CircuitOpenError, attempts=5, max_elapsed=10.0, budget=None), b, clock=clock
    )
    outcome(p, fail)
    calls: list[int] = []
    err = outcome(p, lambda: calls.append(1))
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after == 60.0
    assert any("max_elapsed" in note for note in err.__notes__)
    assert clock.sleeps == []  # did not wait, did not hammer
    assert calls == []


def test_retry_never_pushes_rejected_calls_into_the_dependency(clock: ManualClock) -> None:
    # An outage: every call fails. A Retry outside the breaker handles both errors.
    b = CircuitBreaker(consecutive_failures=3, failure_ratio=None, break_duration=10.0)
    p = Pipeline(
        Retry(
            on=(ConnectionError, CircuitOpenError),
            attempts=50,
            backoff=backoff.constant(0.1),
            budget=None,
        ),
        b,
        clock=clock,
    )
    calls: list[float] = []

    def down() -> None:
        calls.append(clock.now())
        raise ConnectionError

    err = outcome(p, down)
    assert isinstance(err, (ConnectionError, CircuitOpenError))
    # 3 calls trip it; then one trial per 10 s break; the rest wait for retry_after.
    assert calls[:3] == pytest.approx([0.0, 0.1, 0.2])
    gaps = [b_ - a for a, b_ in itertools.pairwise(calls[2:])]
    assert gaps == pytest.approx([10.0] * len(gaps))  # one trial per break, never sooner
    assert len(calls) == 3 + 23  # attempts 4..50 alternate: rejected (wait), trial
    assert b.state == "open"


def test_async_retry_outside_waits_for_retry_after(clock: ManualClock) -> None:
    b = CircuitBreaker(consecutive_failures=1, break_duration=3.0)
    p = Pipeline(
        Retry(on=CircuitOpenError, attempts=3, backoff=backoff.constant(0.1), budget=None),
        b,
        clock=clock,
    )

    async def main() -> None:
        assert isinstance(await aoutcome(p, afail), ConnectionError)
        assert await p.acall(aok) == "ok"

    asyncio.run(main())
    assert clock.sleeps == [3.0]


# -- half-open slot release ----------------------------------------------------------------


def _half_open(clock: ManualClock, **kw: Any) -> tuple[CircuitBreaker, Pipeline]:
    b = CircuitBreaker(consecutive_failures=1, break_duration=1.0, **kw)
    p = Pipeline(b, clock=clock)
    outcome(p, fail)
    clock.advance(1.0)
    assert b.state == "half_open"
    return b, p


def test_unhandled_exception_in_a_trial_releases_the_slot(clock: ManualClock) -> None:
    b, p = _half_open(clock, on=ConnectionError)

    def other() -> None:
        raise KeyError("not a failure")

    assert isinstance(outcome(p, other), KeyError)
    m = b.metrics
    assert (m.state, m.half_open_in_flight, m.half_open_failures) == ("half_open", 0, 0)
    assert outcome(p, lambda: "ok") == "ok"  # the slot is free: the next caller probes
    assert b.state == "closed"


def test_base_exception_in_a_sync_trial_releases_the_slot(clock: ManualClock) -> None:
    b, p = _half_open(clock)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        p.call(interrupted)
    assert b.metrics.half_open_in_flight == 0
    assert outcome(p, lambda: "ok") == "ok"


def test_cancelled_asyncio_trial_releases_the_slot(clock: ManualClock) -> None:
    b, p = _half_open(clock)

    async def main() -> None:
        entered = asyncio.Event()

        async def hang() -> None:
            entered.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(p.acall(hang))
        await entered.wait()
        assert b.metrics.half_open_in_flight == 1
        err = await aoutcome(p, aok)  # slot taken: rejected
        assert isinstance(err, CircuitOpenError)
        assert err.retry_after is None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        m = b.metrics
        assert (m.state, m.half_open_in_flight, m.half_open_failures) == ("half_open", 0, 0)
        assert await p.acall(aok) == "ok"

    asyncio.run(main())
    assert b.state == "closed"


def test_timeout_inside_counts_as_failure_by_default(clock: ManualClock) -> None:
    b = CircuitBreaker(consecutive_failures=1, break_duration=1.0)
    p = Pipeline(b, Timeout(2.0), clock=clock)

    async def slow() -> None:
        clock.advance(3.0)  # passes the deadline: the timer cancels the task
        await asyncio.sleep(0)

    async def main() -> None:
        err = await aoutcome(p, slow)  # closed: counted as a failure -> open
        assert isinstance(err, TimeoutRejectedError)
        assert b.state == "open"
        clock.advance(1.0)
        err = await aoutcome(p, slow)  # the trial times out: reopen
        assert isinstance(err, TimeoutRejectedError)
        assert b.state == "open"
        assert b.metrics.half_open_in_flight == 0

    asyncio.run(main())


def test_timeout_inside_not_in_on_releases_the_trial_slot(clock: ManualClock) -> None:
    b, _p0 = _half_open(clock, on=ConnectionError)
    p = Pipeline(b, Timeout(2.0), clock=clock)

    async def slow() -> None:
        clock.advance(3.0)
        await asyncio.sleep(0)

    async def main() -> None:
        err = await aoutcome(p, slow)
        assert isinstance(err, TimeoutRejectedError)
        m = b.metrics
        assert (m.state, m.half_open_in_flight) == ("half_open", 0)
        assert await p.acall(aok) == "ok"

    asyncio.run(main())
    assert b.state == "closed"


def test_outer_timeout_cancelling_a_trial_releases_the_slot(clock: ManualClock) -> None:
    b, _ = _half_open(clock)
    p = Pipeline(Timeout(2.0), b, clock=clock)

    async def slow() -> None:
        clock.advance(3.0)
        await asyncio.sleep(0)

    async def main() -> None:
        err = await aoutcome(p, slow)
        assert isinstance(err, TimeoutRejectedError)
        m = b.metrics
        assert (m.state, m.half_open_in_flight, m.half_open_failures) == ("half_open", 0, 0)
        assert await p.acall(aok) == "ok"

    asyncio.run(main())
    assert b.state == "closed"


def test_sync_cooperative_timeout_inside_counts_late_success_as_failure(
    clock: ManualClock,
) -> None:
    b, _ = _half_open(clock)
    p = Pipeline(b, Timeout(2.0), clock=clock)

    def slow() -> str:
        clock.advance(3.0)
        return "late"

    assert isinstance(outcome(p, slow), TimeoutRejectedError)
    assert b.state == "open"


# -- per-key breakers -------------------------------------------------------------------------

HOST = Key[str]("host")


def _keyed(clock: ManualClock, events: RecordingListener | None = None, **kw: Any) -> Any:
    b = CircuitBreaker(
        key=lambda ctx: ctx.get(HOST), consecutive_failures=1, break_duration=5.0, **kw
    )
    p = Pipeline(b, clock=clock, listeners=[events] if events is not None else [])

    def call(host: str, fn: Any) -> Any:
        with scope(properties={HOST: host}):
            return outcome(p, fn)

    return b, p, call


def test_keys_are_independent(clock: ManualClock, events: RecordingListener) -> None:
    b, _, call = _keyed(clock, events)
    assert isinstance(call("a", fail), ConnectionError)
    err = call("a", lambda: "ok")
    assert isinstance(err, CircuitOpenError)
    assert "circuit_breaker['a']" in str(err)
    assert call("b", lambda: "ok") == "ok"
    assert b.state_of("a") == "open"
    assert b.state_of("b") == "closed"
    assert b.metrics_of("b").calls == 1
    assert [(e.key, e.to_state) for e in events.of_type(CircuitStateChanged)] == [("a", "open")]
    assert [e.key for e in events.of_type(CallRejected)] == ["a"]
    with pytest.raises(TypeError, match="per-key"):
        _ = b.state
    with pytest.raises(TypeError, match="not per-key"):
        CircuitBreaker().state_of("a")


def test_keys_are_bounded_lru_and_evicted_keys_start_fresh(clock: ManualClock) -> None:
    b, _, call = _keyed(clock, max_keys=2)
    call("a", fail)
    call("b", lambda: "ok")
    call("c", lambda: "ok")  # evicts "a", the least recently used
    assert b.keys() == ["b", "c"]
    assert call("a", lambda: "ok") == "ok"  # forgotten: closed again
    assert b.keys() == ["c", "a"]
    assert len(b._parts or ()) == 2


def test_global_isolation_covers_existing_and_new_keys(clock: ManualClock) -> None:
    b, _, call = _keyed(clock)
    call("a", lambda: "ok")
    b.isolate()
    assert isinstance(call("a", lambda: "ok"), CircuitIsolatedError)
    assert isinstance(call("new", lambda: "ok"), CircuitIsolatedError)
    b.close()
    assert call("a", lambda: "ok") == "ok"
    assert call("other", lambda: "ok") == "ok"
    b.isolate("a")
    assert isinstance(call("a", lambda: "ok"), CircuitIsolatedError)
    assert call("other", lambda: "ok") == "ok"
    b.reset("a")
    assert call("a", lambda: "ok") == "ok"


def test_keyed_async(clock: ManualClock) -> None:
    b = CircuitBreaker(key=lambda ctx: ctx.get(HOST), consecutive_failures=1)
    p = Pipeline(b, clock=clock)

    async def main() -> None:
        with scope(properties={HOST: "x"}):
            assert isinstance(await aoutcome(p, afail), ConnectionError)
            assert isinstance(await aoutcome(p, aok), CircuitOpenError)
        with scope(properties={HOST: "y"}):
            assert await p.acall(aok) == "ok"

    asyncio.run(main())
    assert (b.state_of("x"), b.state_of("y")) == ("open", "closed")


def test_one_breaker_shared_by_two_pipelines_shares_state(clock: ManualClock) -> None:
    b = CircuitBreaker(consecutive_failures=1)
    p1 = Pipeline(b, clock=clock, name="one")
    p2 = Pipeline(Retry(on=OSError, budget=None), b, clock=clock, name="two")
    outcome(p1, fail)
    assert isinstance(outcome(p2, lambda: "ok"), CircuitOpenError)


def test_state_gauge_is_one_hot(clock: ManualClock) -> None:
    from buttress._core.gauges import gauge_readings

    b = CircuitBreaker(consecutive_failures=1, name="gauge-cb")
    p = Pipeline(b, clock=clock, name="gauged")
    outcome(p, fail)
    readings = {
        r[2]["state"]: r[1]
        for r in gauge_readings()
        if r[0] == "buttress.circuit.state" and r[2]["strategy"] == "gauge-cb"
    }
    assert readings == {"closed": 0.0, "open": 1.0, "half_open": 0.0, "isolated": 0.0}


def test_a_raising_predicate_in_a_trial_releases_the_slot(clock: ManualClock) -> None:
    def broken(result: Any) -> bool:
        raise RuntimeError("predicate bug")

    b, p = _half_open(clock, on=(ConnectionError, on_result(broken)))
    assert isinstance(outcome(p, lambda: "ok"), RuntimeError)
    assert b.metrics.half_open_in_flight == 0
    assert b.state == "half_open"

    async def main() -> None:
        assert isinstance(await aoutcome(p, aok), RuntimeError)

    asyncio.run(main())
    assert b.metrics.half_open_in_flight == 0


# -- a shared (non-local) store ----------------------------------------------------------------


def test_store_path_sync_full_cycle(clock: ManualClock, events: RecordingListener) -> None:
    from circuit_contract import SavedStore

    store = SavedStore()
    b = CircuitBreaker(consecutive_failures=2, break_duration=3.0, store=store)
    assert not b.local
    p = Pipeline(b, clock=clock, listeners=[events])
    assert outcome(p, lambda: "ok") == "ok"
    outcome(p, fail)
    outcome(p, fail)
    assert b.state == "open"
    err = outcome(p, lambda: "ok")
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after == 3.0
    clock.advance(3.0)

    def other() -> None:
        raise KeyError("unhandled: neither way")

    b2 = CircuitBreaker(on=ConnectionError, consecutive_failures=1, store=SavedStore())
    p2 = Pipeline(b2, clock=clock)
    outcome(p2, fail)
    clock.advance(5.0)
    assert isinstance(outcome(p2, other), KeyError)  # trial released through the store
    assert b2.metrics.half_open_in_flight == 0
    assert outcome(p, lambda: "ok") == "ok"
    assert b.state == "closed"
    assert [e.to_state for e in events.of_type(CircuitStateChanged)] == [
        "open",
        "half_open",
        "closed",
    ]
    assert store.circuits[("circuit_breaker", None)].snapshot(clock.now()).state == "closed"


def test_store_path_async_cancel_and_unhandled_release(clock: ManualClock) -> None:
    from circuit_contract import SavedStore

    b = CircuitBreaker(
        on=ConnectionError, consecutive_failures=1, break_duration=1.0, store=SavedStore()
    )
    p = Pipeline(b, clock=clock)

    async def other() -> None:
        raise KeyError("unhandled")

    async def main() -> None:
        assert isinstance(await aoutcome(p, afail), ConnectionError)
        clock.advance(1.0)
        assert isinstance(await aoutcome(p, other), KeyError)  # arelease
        assert b.metrics.half_open_in_flight == 0
        entered = asyncio.Event()

        async def hang() -> None:
            entered.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(p.acall(hang))
        await entered.wait()
        assert b.metrics.half_open_in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b.metrics.half_open_in_flight == 0
        assert await p.acall(aok) == "ok"

    asyncio.run(main())
    assert b.state == "closed"


def test_store_path_per_key(clock: ManualClock) -> None:
    from circuit_contract import SavedStore

    store = SavedStore()
    b = CircuitBreaker(key=lambda ctx: ctx.get(HOST), consecutive_failures=1, store=store)
    p = Pipeline(b, clock=clock)
    with scope(properties={HOST: "a"}):
        outcome(p, fail)
    with scope(properties={HOST: "b"}):
        assert outcome(p, lambda: "ok") == "ok"
    assert (b.state_of("a"), b.state_of("b")) == ("open", "closed")
    assert set(store.circuits) == {("circuit_breaker", "a"), ("circuit_breaker", "b")}


@pytest.mark.realtime
def test_system_clock_break_ends_in_real_time() -> None:
    b = CircuitBreaker(consecutive_failures=1, break_duration=0.05)
    p = Pipeline(b)
    outcome(p, fail)
    err = outcome(p, lambda: "ok")
    assert isinstance(err, CircuitOpenError)
    assert 0.0 < err.retry_after <= 0.05

    async def main() -> str:
        await asyncio.sleep(0.06)
        return await p.acall(aok)

    assert asyncio.run(main()) == "ok"
    assert b.state == "closed"
