"""Fault injection: InjectFault, InjectLatency, InjectResult."""

from __future__ import annotations

import asyncio
import math
import random
from datetime import timedelta
from typing import Any

import pytest
import trio

from buttress import (
    ConfigurationError,
    Fallback,
    InjectedFaultError,
    InjectFault,
    InjectLatency,
    InjectResult,
    Pipeline,
    Retry,
    Timeout,
    TimeoutRejectedError,
    backoff,
    on_result,
)
from buttress._core.invoke import ainvoke, invoke
from buttress.events import FaultInjected
from buttress.testing import ManualClock, RecordingListener

N = 10_000
RATE = 0.1
# Binomial(10_000, 0.1): mean 1000, sd 30. 5 sd keeps a false alarm below 1e-6 (the seeded
# runs are deterministic anyway); a wrong rate (0.09 or 0.11) lands 3.3 sd outside it.
LOW, HIGH = 1000 - 150, 1000 + 150


def ok() -> str:
    return "real"


async def aok() -> str:
    return "real"


def injected_indices(strategy: Any, seed: int, n: int = N) -> list[int]:
    p = Pipeline(strategy, random=random.Random(seed))
    hits = []
    for i in range(n):
        try:
            if p.call(ok) != "real":
                hits.append(i)
        except InjectedFaultError:
            hits.append(i)
    return hits


# -- rates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: InjectFault(injection_rate=RATE),
        lambda: InjectResult(result="fake", injection_rate=RATE),
    ],
)
def test_rate_is_binomially_right_and_deterministic_under_seed(make: Any) -> None:
    first = injected_indices(make(), seed=42)
    assert LOW <= len(first) <= HIGH
    assert injected_indices(make(), seed=42) == first  # same seed, same calls fail
    assert injected_indices(make(), seed=43) != first


def test_latency_rate_in_virtual_time() -> None:
    clock = ManualClock()
    p = Pipeline(
        InjectLatency(latency=0.5, injection_rate=RATE), clock=clock, random=random.Random(5)
    )
    for _ in range(N):
        p.call(ok)
    delayed = len(clock.sleeps)
    assert LOW <= delayed <= HIGH
    assert clock.now() == pytest.approx(0.5 * delayed)
    assert set(clock.sleeps) == {0.5}


def test_async_rate_matches_sync_sequence() -> None:
    sync_hits = injected_indices(InjectFault(injection_rate=RATE), seed=9, n=2000)

    async def main() -> list[int]:
        p = Pipeline(InjectFault(injection_rate=RATE), random=random.Random(9))
        hits = []
        for i in range(2000):
            try:
                await p.acall(aok)
            except InjectedFaultError:
                hits.append(i)
        return hits

    assert asyncio.run(main()) == sync_hits


def test_rate_zero_and_one_draw_nothing() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    never = Pipeline(InjectFault(injection_rate=0.0), random=rng)
    always = Pipeline(InjectResult(result=1, injection_rate=1.0), random=rng)
    for _ in range(100):
        assert never.call(ok) == "real"
        assert always.call(ok) == 1
    assert rng.getstate() == state


def test_rate_zero_or_disabled_builds_no_step() -> None:
    assert Pipeline(InjectFault(injection_rate=0.0))._sync() is invoke
    assert Pipeline(InjectLatency(latency=1, injection_rate=1.0, enabled=False))._sync() is invoke
    assert Pipeline(InjectResult(result=1, injection_rate=0.5, enabled=False))._async() is ainvoke


def test_rate_callable_is_read_per_call_and_clamped() -> None:
    rate = [0.0]
    p = Pipeline(InjectResult(result="fake", injection_rate=lambda: rate[0]))
    assert p.call(ok) == "real"
    rate[0] = 1.0
    assert p.call(ok) == "fake"
    rate[0] = 7.0  # clamped to 1
    assert p.call(ok) == "fake"
    rate[0] = -3.0  # clamped to 0
    assert p.call(ok) == "real"
    rate[0] = math.nan  # means 0
    assert p.call(ok) == "real"


def test_rate_callable_statistics() -> None:
    p = Pipeline(InjectFault(injection_rate=lambda: RATE), random=random.Random(11))
    failures = 0
    for _ in range(N):
        try:
            p.call(ok)
        except InjectedFaultError:
            failures += 1
    assert LOW <= failures <= HIGH


# -- enabled ------------------------------------------------------------------------------


def test_enabled_toggles_at_run_time_without_drawing_when_off() -> None:
    flag = [False]
    rng = random.Random(1)
    p = Pipeline(InjectFault(injection_rate=1.0, enabled=lambda: flag[0]), random=rng)
    assert p.call(ok) == "real"
    flag[0] = True
    with pytest.raises(InjectedFaultError):
        p.call(ok)
    flag[0] = False
    assert p.call(ok) == "real"


def test_enabled_checked_before_the_draw() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    p = Pipeline(InjectFault(injection_rate=0.5, enabled=lambda: False), random=rng)
    for _ in range(50):
        assert p.call(ok) == "real"
    assert rng.getstate() == state


def test_enabled_toggle_async_and_statistics_when_on() -> None:
    flag = [True]

    async def main() -> tuple[int, int]:
        p = Pipeline(
            InjectResult(result="fake", injection_rate=0.5, enabled=lambda: flag[0]),
            random=random.Random(2),
        )
        on = sum([await p.acall(aok) == "fake" for _ in range(1000)])
        flag[0] = False
        off = sum([await p.acall(aok) == "fake" for _ in range(1000)])
        return on, off

    on, off = asyncio.run(main())
    assert 500 - 80 <= on <= 500 + 80  # sd 15.8, 5 sd
    assert off == 0


# -- InjectFault --------------------------------------------------------------------------


def test_default_exception_and_event(clock: ManualClock, events: RecordingListener) -> None:
    clock.advance(3.0)
    p = Pipeline(
        InjectFault(injection_rate=1.0, name="chaos"), clock=clock, listeners=[events], name="db"
    )
    called = []
    with pytest.raises(InjectedFaultError, match="chaos"):
        p.call(lambda: called.append(1))
    assert called == []
    (event,) = events.of_type(FaultInjected)
    assert event == FaultInjected(
        pipeline="db",
        strategy="chaos",
        time=3.0,
        fault="exception",
        detail="buttress.InjectedFaultError",
    )
    assert event.kind == "fault.injected"


def test_exception_type_builtin_name_in_event(events: RecordingListener) -> None:
    p = Pipeline(InjectFault(exception=ConnectionError, injection_rate=1.0), listeners=[events])
    with pytest.raises(ConnectionError):
        p.call(ok)
    assert events.of_type(FaultInjected)[0].detail == "ConnectionError"


def test_instance_is_copied_so_notes_do_not_pile_up() -> None:
    original = ConnectionError("reset by peer")
    p = Pipeline(
        Retry(on=ConnectionError, attempts=2, backoff=0, budget=None),
        InjectFault(exception=original, injection_rate=1.0),
    )
    raised = []
    for _ in range(3):
        with pytest.raises(ConnectionError) as info:
            p.call(ok)
        raised.append(info.value)
    assert all(e is not original for e in raised)
    assert len({id(e) for e in raised}) == 3
    assert all(e.args == ("reset by peer",) for e in raised)
    assert all(len(e.__notes__) == 1 for e in raised)  # one "gave up" note each
    assert not hasattr(original, "__notes__")
    assert original.__traceback__ is None


def test_factory_is_called_per_injection() -> None:
    counter = iter(range(100))
    p = Pipeline(
        InjectFault(exception=lambda: TimeoutError(f"t{next(counter)}"), injection_rate=1.0)
    )
    for i in range(3):
        with pytest.raises(TimeoutError, match=f"t{i}"):
            p.call(ok)


def test_factory_returning_non_exception_is_a_type_error() -> None:
    p = Pipeline(InjectFault(exception=lambda: "oops", injection_rate=1.0))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not an exception"):
        p.call(ok)


def test_injected_fault_is_retried_like_a_real_one() -> None:
    clock = ManualClock()
    rate = [1.0]
    calls = []

    def fn() -> str:
        calls.append(1)
        return "real"

    retry = Retry(on=InjectedFaultError, attempts=3, backoff=backoff.constant(1.0), budget=None)

    def flip() -> float:
        value = rate[0]
        rate[0] = 0.0  # only the first attempt fails
        return value

    p = Pipeline(retry, InjectFault(injection_rate=flip), clock=clock)
    assert p.call(fn) == "real"
    assert calls == [1]
    assert clock.now() == 1.0


class Rehearsal(BaseException):
    pass


def test_base_exception_passes_through_strategies_unhandled() -> None:
    p = Pipeline(
        Fallback(on=Exception, value="fb"),
        Retry(on=Exception, budget=None),
        InjectFault(exception=Rehearsal, injection_rate=1.0),
    )
    with pytest.raises(Rehearsal):
        p.call(ok)


def test_async_inject_fault() -> None:
    async def main() -> None:
        p = Pipeline(InjectFault(exception=KeyError, injection_rate=1.0), Timeout(5))
        with pytest.raises(KeyError):
            await p.acall(aok)

    asyncio.run(main())


def test_trio_inject_fault_and_result() -> None:
    async def main() -> None:
        with pytest.raises(InjectedFaultError):
            await Pipeline(InjectFault(injection_rate=1.0)).acall(aok)
        assert await Pipeline(InjectResult(result=5, injection_rate=1.0)).acall(aok) == 5

    trio.run(main)


# -- InjectLatency ------------------------------------------------------------------------


def test_latency_delays_then_calls(clock: ManualClock, events: RecordingListener) -> None:
    seen = []
    p = Pipeline(
        InjectLatency(latency=timedelta(milliseconds=250), injection_rate=1.0),
        clock=clock,
        listeners=[events],
    )
    assert p.call(lambda: seen.append(clock.now()) or "done") == "done"
    assert seen == [0.25]
    (event,) = events.of_type(FaultInjected)
    assert (event.fault, event.detail, event.time) == ("latency", "0.25", 0.0)


def test_latency_callable_draws_from_the_pipeline_random() -> None:
    def run(seed: int) -> list[float]:
        clock = ManualClock()
        p = Pipeline(
            InjectLatency(latency=lambda rng: rng.expovariate(10.0), injection_rate=1.0),
            clock=clock,
            random=random.Random(seed),
        )
        for _ in range(20):
            p.call(ok)
        return clock.sleeps

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert all(s >= 0 for s in run(1))


def test_latency_callable_bad_value_is_a_value_error(clock: ManualClock) -> None:
    p = Pipeline(InjectLatency(latency=lambda rng: -1.0, injection_rate=1.0), clock=clock)
    with pytest.raises(ValueError, match=r"latency callable returned -1\.0"):
        p.call(ok)


def test_sync_cooperative_timeout_rejects_late_call(clock: ManualClock) -> None:
    p = Pipeline(Timeout(1.0), InjectLatency(latency=2.0, injection_rate=1.0), clock=clock)
    with pytest.raises(TimeoutRejectedError):
        p.call(ok)
    assert clock.now() == 2.0


def test_asyncio_latency_is_virtual_and_cancelled_by_timeout() -> None:
    async def main() -> None:
        clock = ManualClock()
        p = Pipeline(InjectLatency(latency=3.0, injection_rate=1.0), clock=clock)
        assert await p.acall(aok) == "real"
        assert clock.now() == 3.0
        called = []

        async def never() -> None:
            called.append(1)

        p2 = Pipeline(Timeout(1.0), InjectLatency(latency=3.0, injection_rate=1.0), clock=clock)
        with pytest.raises(TimeoutRejectedError):
            await p2.acall(never)
        assert called == []

    asyncio.run(main())


def test_trio_latency_is_virtual_and_cancelled_by_timeout() -> None:
    async def main() -> None:
        clock = ManualClock()
        p = Pipeline(InjectLatency(latency=4.0, injection_rate=1.0), clock=clock)
        t0 = trio.current_time()
        assert await p.acall(aok) == "real"
        assert clock.now() == 4.0
        assert trio.current_time() - t0 < 1.0
        called = []

        async def never() -> None:
            called.append(1)

        p2 = Pipeline(Timeout(1.0), InjectLatency(latency=3.0, injection_rate=1.0), clock=clock)
        with pytest.raises(TimeoutRejectedError):
            await p2.acall(never)
        assert called == []
        assert trio.current_time() - t0 < 1.0  # virtual: no real second passed

    trio.run(main)


# -- InjectResult -------------------------------------------------------------------------


def test_result_replaces_call_and_event_is_truncated(events: RecordingListener) -> None:
    called = []
    big = "x" * 200
    p = Pipeline(InjectResult(result=big, injection_rate=1.0), listeners=[events])
    assert p.call(lambda: called.append(1)) == big
    assert called == []
    (event,) = events.of_type(FaultInjected)
    assert event.fault == "result"
    assert len(event.detail) == 80
    assert event.detail.endswith("...")


def test_result_factory_is_fresh_per_call() -> None:
    p = Pipeline(InjectResult(factory=list, injection_rate=1.0))
    a, b = p.call(ok), p.call(ok)
    assert a == []
    assert a is not b


def test_injected_result_is_seen_by_outer_result_handles(clock: ManualClock) -> None:
    p = Pipeline(
        Fallback(on=on_result(lambda r: r == 503), value="fallback"),
        InjectResult(result=503, injection_rate=1.0),
        clock=clock,
    )
    assert p.call(ok) == "fallback"


def test_async_result() -> None:
    async def main() -> None:
        p = Pipeline(InjectResult(result=None, injection_rate=1.0))
        assert await p.acall(aok) is None

    asyncio.run(main())


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [-0.1, 1.5, math.nan, "0.1", None, True])
def test_bad_rate(rate: Any) -> None:
    with pytest.raises(ConfigurationError, match="injection_rate"):
        InjectFault(injection_rate=rate)


@pytest.mark.parametrize("latency", [-1, math.inf, math.nan, "1s", None])
def test_bad_latency(latency: Any) -> None:
    with pytest.raises(ConfigurationError, match="latency"):
        InjectLatency(latency=latency, injection_rate=1.0)


def test_bad_exception_enabled_name_and_result() -> None:
    with pytest.raises(ConfigurationError, match="exception"):
        InjectFault(exception=42, injection_rate=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="enabled"):
        InjectFault(injection_rate=1.0, enabled="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="name"):
        InjectResult(result=1, injection_rate=1.0, name="")
    with pytest.raises(ConfigurationError, match="exactly one"):
        InjectResult(injection_rate=1.0)
    with pytest.raises(ConfigurationError, match="exactly one"):
        InjectResult(result=1, factory=list, injection_rate=1.0)
    with pytest.raises(ConfigurationError, match="factory"):
        InjectResult(factory=3, injection_rate=1.0)  # type: ignore[arg-type]


def test_repr_names_the_settings() -> None:
    assert "injection_rate=0.1" in repr(InjectFault(injection_rate=0.1))
    assert "latency=0.5" in repr(InjectLatency(latency=0.5, injection_rate=1))
    assert "result=3" in repr(InjectResult(result=3, injection_rate=1))
