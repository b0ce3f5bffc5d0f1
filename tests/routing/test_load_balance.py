"""LoadBalance as a pipeline strategy: sync, asyncio, trio, retries, health, membership."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest
import trio

from buttress import ConfigurationError, Key, LoadBalance, Pipeline, Retry, Timeout, scope
from buttress.events import (
    EndpointEjected,
    EndpointHealthChanged,
    EndpointReadmitted,
    MembershipRefreshFailed,
)
from buttress.routing import (
    ENDPOINT,
    Endpoint,
    EndpointGroup,
    HealthCheck,
    MembershipError,
    NoEndpointAvailableError,
    OutlierDetector,
    current_endpoint,
)
from buttress.testing import ManualClock, RecordingListener


def make(lb: LoadBalance, *pre: Any, **kw: Any) -> Pipeline:
    import random

    return Pipeline(*pre, lb, random=random.Random(1), **kw)


def test_endpoint_is_passed_as_first_argument() -> None:
    lb = LoadBalance(["a", "b"], balancer="round_robin")
    p = make(lb)
    assert [p.call(lambda e, x: (e.name, x), i) for i in range(3)] == [
        ("a", 0), ("b", 1), ("a", 2),
    ]  # fmt: skip
    assert lb.stats()["endpoints"]["a"]["outstanding"] == 0
    assert lb.stats()["picks"] == 3


def test_handoff_context_and_both() -> None:
    lb = LoadBalance([Endpoint("http://x", name="x")], handoff="context")
    p = make(lb)
    assert p.call(lambda: current_endpoint()) == Endpoint("x")
    lb2 = LoadBalance(["y"], handoff="both")
    p2 = make(lb2)

    def f(e: Endpoint) -> bool:
        ctx = __import__("buttress").current_context()
        return ctx is not None and ctx.get(ENDPOINT) is e

    assert p2.call(f)
    assert current_endpoint() is None


def test_retry_avoids_failed_endpoints_then_falls_back() -> None:
    lb = LoadBalance(["a", "b", "c"], balancer="random", outlier=None)
    p = make(lb, Retry(on=OSError, attempts=5, backoff=0, budget=None))
    seen: list[str] = []

    def flaky(e: Endpoint) -> str:
        seen.append(e.name)
        if len(seen) < 4:
            raise OSError(e.name)
        return e.name

    p.call(flaky)
    assert len(set(seen[:3])) == 3  # three distinct endpoints first
    assert len(seen) == 4
    # a fresh call starts with no memory of the previous one's failures
    seen.clear()
    p.call(lambda e: seen.append(e.name))
    assert len(seen) == 1


def test_failures_eject_and_events_are_emitted(clock: ManualClock) -> None:
    events = RecordingListener()
    lb = LoadBalance(
        ["bad", "good1", "good2"],
        balancer="round_robin",
        outlier=OutlierDetector(consecutive_failures=2, base_ejection_time=10),
    )
    p = make(lb, clock=clock, listeners=[events])

    def call(e: Endpoint) -> str:
        if e.name == "bad":
            raise ConnectionError
        return e.name

    for _ in range(6):
        try:
            p.call(call)
        except ConnectionError:
            pass
    ejected = events.of_type(EndpointEjected)
    assert [(e.endpoint, e.reason, e.duration) for e in ejected] == [
        ("bad", "consecutive_failures", 10.0)
    ]
    assert ejected[0].pipeline == p.name
    assert ejected[0].strategy == "load-balance"
    assert all(p.call(call) != "bad" for _ in range(10))
    clock.advance(10.0)
    p.call(lambda e: None)
    assert [e.endpoint for e in events.of_type(EndpointReadmitted)] == ["bad"]


def test_result_predicate_counts_as_failure() -> None:
    from buttress import on_result

    lb = LoadBalance(
        ["a", "b"],
        balancer="round_robin",
        on=on_result(lambda r: r == 503),
        outlier=OutlierDetector(consecutive_failures=1),
    )
    p = make(lb)
    assert p.call(lambda e: 503 if e.name == "a" else 200) == 503
    assert lb.stats()["endpoints"]["a"]["ejected"]


def test_timeout_inside_counts_against_the_endpoint(clock: ManualClock) -> None:
    lb = LoadBalance(["slow"], outlier=OutlierDetector(consecutive_failures=1))

    def slow(e: Endpoint) -> None:
        clock.advance(2.0)

    p2 = Pipeline(lb, Timeout(1.0), clock=clock)
    with pytest.raises(TimeoutError):
        p2.call(slow)
    assert lb.router.state("slow").ejected_until is not None


@pytest.mark.asyncio
async def test_asyncio_flow_and_cancellation_releases() -> None:
    lb = LoadBalance(["a", "b"], balancer="least_request")
    p = make(lb)

    async def ok(e: Endpoint, x: int) -> str:
        await asyncio.sleep(0)
        return f"{e.name}{x}"

    assert await p.acall(ok, 1) in {"a1", "b1"}
    started = asyncio.Event()

    async def hang(e: Endpoint) -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(p.acall(hang))
    await started.wait()
    assert sum(s.outstanding for s in lb.router.states) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sum(s.outstanding for s in lb.router.states) == 0
    assert all(s.penalty == 0 for s in lb.router.states)


@pytest.mark.asyncio
async def test_async_retry_timeout_moves_to_another_endpoint() -> None:
    lb = LoadBalance(["slow", "fast"], balancer="round_robin", outlier=None)
    p = Pipeline(Retry(on=TimeoutError, attempts=3, backoff=0, budget=None), lb, Timeout(0.05))

    async def call(e: Endpoint) -> str:
        if e.name == "slow":
            await asyncio.sleep(5)
        return e.name

    assert await p.acall(call) == "fast"


def test_trio_flow() -> None:
    lb = LoadBalance(["a", "b"])
    p = make(lb)

    async def main() -> str:
        async def f(e: Endpoint) -> str:
            await trio.sleep(0)
            return e.name

        return await p.acall(f)

    assert trio.run(main) in {"a", "b"}


def test_threads_keep_counts_exact() -> None:
    lb = LoadBalance([f"e{i}" for i in range(4)], balancer="least_request")
    p = make(lb)
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(300):
            p.call(lambda e: None)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = lb.stats()
    assert stats["picks"] == 2400
    assert all(v["outstanding"] == 0 for v in stats["endpoints"].values())
    assert sum(v["picks"] for v in stats["endpoints"].values()) == 2400


def test_dynamic_group_refresh_and_failure_keeps_last_good(clock: ManualClock) -> None:
    events = RecordingListener()
    answers: list[Any] = [["a", "b"], RuntimeError("dns down"), [], ["a", "a"], ["c"]]

    def source() -> Any:
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    lb = LoadBalance(EndpointGroup(source, refresh_interval=5), outlier=None)
    p = make(lb, clock=clock, listeners=[events])
    assert p.call(lambda e: e.name) in {"a", "b"}  # first refresh on first use
    for _ in range(3):
        assert lb.refresh() is False
    assert [e.error_type for e in events.of_type(MembershipRefreshFailed)] == [
        "RuntimeError",
        "buttress.routing.endpoint.MembershipError",
        "buttress.routing.endpoint.MembershipError",
    ]
    assert {p.call(lambda e: e.name) for _ in range(10)} <= {"a", "b"}
    assert lb.refresh() is True
    assert p.call(lambda e: e.name) == "c"


def test_first_refresh_failure_is_a_clear_error() -> None:
    def source() -> list[str]:
        raise OSError("no dns")

    p = make(LoadBalance(source))
    with pytest.raises(NoEndpointAvailableError) as info:
        p.call(lambda e: None)
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.asyncio
async def test_async_source_refreshes_on_first_async_call() -> None:
    async def source() -> list[str]:
        await asyncio.sleep(0)
        return ["x"]

    lb = LoadBalance(source)
    p = make(lb)
    with pytest.raises(NoEndpointAvailableError, match="arefresh"):
        p.call(lambda e: None)

    async def f(e: Endpoint) -> str:
        return e.name

    assert await p.acall(f) == "x"


def test_active_health_checks_with_manual_clock(clock: ManualClock) -> None:
    events = RecordingListener()
    down = {"b"}
    probes: list[tuple[float, str]] = []

    def probe(e: Endpoint) -> bool:
        probes.append((clock.now(), e.name))
        if e.name == "c":
            raise OSError
        return e.name not in down

    lb = LoadBalance(
        ["a", "b", "c", "d"],
        balancer="round_robin",
        panic_threshold=0.0,
        health=HealthCheck(probe, interval=10, jitter=0.1, unhealthy_threshold=2),
    )
    p = make(lb, clock=clock, listeners=[events])
    p.call(lambda e: None)  # binds the pipeline's env (clock, random, listeners)
    for _ in range(40):
        wait = lb.maintain()
        assert 0 <= wait <= 60
        clock.advance(max(wait, 0.001))
        if clock.now() > 35:
            break
    unhealthy = [(e.endpoint, e.healthy) for e in events.of_type(EndpointHealthChanged)]
    assert sorted(unhealthy) == [("b", False), ("c", False)]
    names_by_ep: dict[str, list[float]] = {}
    for t, n in probes:
        names_by_ep.setdefault(n, []).append(t)
    for ts in names_by_ep.values():
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert all(10.0 <= g <= 11.0 + 1e-9 for g in gaps), gaps  # interval + jitter
        assert ts[0] <= 1.0  # first probe spread within jitter * interval
    assert {p.call(lambda e: e.name) for _ in range(10)} == {"a", "d"}
    down.clear()
    clock.advance(25)
    lb.maintain()
    clock.advance(11)
    lb.maintain()
    assert ("b", True) in [(e.endpoint, e.healthy) for e in events.of_type(EndpointHealthChanged)]


def test_successful_probe_ends_ejection(clock: ManualClock) -> None:
    lb = LoadBalance(
        ["a", "b"],
        outlier=OutlierDetector(consecutive_failures=1, base_ejection_time=300),
        health=HealthCheck(lambda e: True, interval=1, jitter=0),
    )
    p = make(lb, clock=clock)
    with pytest.raises(OSError):
        p.call(lambda e: (_ for _ in ()).throw(OSError()))
    assert sum(s.ejected_until is not None for s in lb.router.states) == 1
    lb.maintain()
    assert all(s.ejected_until is None for s in lb.router.states)


@pytest.mark.realtime
def test_background_thread_runs_and_stops() -> None:
    seen = threading.Event()

    def probe(e: Endpoint) -> bool:
        seen.set()
        return False

    lb = LoadBalance(["a", "b"], health=HealthCheck(probe, interval=0.01, unhealthy_threshold=1))
    handle = lb.start_background()
    try:
        assert seen.wait(2.0)
    finally:
        handle.stop()
    assert not handle.running


@pytest.mark.asyncio
async def test_run_background_async_probe_with_timeout(clock: ManualClock) -> None:
    async def probe(e: Endpoint) -> float:
        if e.name == "hang":
            await asyncio.sleep(3600)
        return 0.5  # healthy, lag 0.5 s

    lb = LoadBalance(
        ["ok", "hang"],
        max_lag=1.0,
        health=HealthCheck(probe, interval=1, timeout=0.05, unhealthy_threshold=1),
    )
    make(lb)  # system clock: real asyncio timeouts for the probe
    task = asyncio.create_task(lb.run_background())
    for _ in range(1000):  # up to 10 s on a loaded machine
        await asyncio.sleep(0.01)
        if not lb.router.state("hang").healthy and lb.router.state("ok").lag is not None:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not lb.router.state("hang").healthy
    assert lb.router.state("ok").lag == 0.5
    assert lb.router.state("ok").available


def test_lag_bound_excludes_lagging_endpoint() -> None:
    lag = {"r1": 0.1, "r2": 9.0}
    lb = LoadBalance(
        ["r1", "r2"],
        max_lag=1.0,
        panic_threshold=0,
        health=HealthCheck(lambda e: lag[e.name], interval=1, jitter=0),
    )
    p = make(lb)
    lb.maintain()
    assert {p.call(lambda e: e.name) for _ in range(10)} == {"r1"}


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"balancer": "fastest"}, "balancer"),
        ({"handoff": "kwarg"}, "handoff"),
        ({"zone_threshold": 2}, "zone_threshold"),
        ({"panic_threshold": -1}, "panic_threshold"),
        ({"health": 3}, "health"),
        ({"max_lag": -1}, "max_lag"),
        ({"name": ""}, "name"),
        ({"on": None}, "on"),
    ],
)
def test_bad_config(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        LoadBalance(["a"], **kwargs)
    assert info.value.parameter == param


def test_bad_groups() -> None:
    with pytest.raises(MembershipError):
        LoadBalance([])
    with pytest.raises(MembershipError):
        LoadBalance(["a", "a"])
    with pytest.raises(ConfigurationError):
        LoadBalance("a")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        EndpointGroup(["a"], refresh_interval=0)
    with pytest.raises(ConfigurationError):
        Endpoint("a", priority=-1)


def test_scope_property_does_not_leak_tried_endpoints() -> None:
    lb = LoadBalance(["a", "b"], balancer="round_robin", outlier=None)
    p = make(lb)
    tenant = Key[str]("tenant")
    with scope(properties={tenant: "t"}):
        with pytest.raises(OSError):
            p.call(lambda e: (_ for _ in ()).throw(OSError()))
        # next logical call inside the same scope starts fresh (round robin continues)
        assert p.call(lambda e: e.name) == "b"


def test_call_routed_helpers() -> None:
    from buttress.routing import acall_routed, call_routed

    p = make(LoadBalance(["only"]))
    assert call_routed(p, lambda e, x, y=0: (e.name, x, y), 1, y=2) == ("only", 1, 2)

    async def f(e: Endpoint, x: int) -> tuple[str, int]:
        return e.name, x

    assert asyncio.run(acall_routed(p, f, 3)) == ("only", 3)


def test_run_background_under_trio_with_timeout() -> None:
    async def probe(e: Endpoint) -> bool:
        if e.name == "hang":
            await trio.sleep(3600)
        return True

    lb = LoadBalance(
        ["ok", "hang"],
        health=HealthCheck(probe, interval=0.01, timeout=0.02, unhealthy_threshold=1),
    )
    make(lb)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lb.run_background)
            with trio.fail_after(10):
                while lb.router.state("hang").healthy:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert not lb.router.state("hang").healthy
    assert lb.router.state("ok").healthy


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"interval": 0}, "interval"),
        ({"jitter": 1.5}, "jitter"),
        ({"timeout": -1}, "timeout"),
        ({"healthy_threshold": 0}, "healthy_threshold"),
        ({"unhealthy_threshold": 0}, "unhealthy_threshold"),
    ],
)
def test_bad_health_check(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        HealthCheck(lambda e: True, **kwargs)
    assert info.value.parameter == param
    with pytest.raises(ConfigurationError):
        HealthCheck("not callable")  # type: ignore[arg-type]


def test_background_binds_to_the_given_pipeline(clock: ManualClock) -> None:
    events = RecordingListener()
    lb = LoadBalance(
        ["a"], health=HealthCheck(lambda e: False, interval=1, jitter=0, unhealthy_threshold=1)
    )
    p = make(lb, clock=clock, listeners=[events])
    lb.maintain(p)  # before any call: the pipeline's clock and listeners are used
    assert [(e.endpoint, e.healthy, e.time) for e in events.of_type(EndpointHealthChanged)] == [
        ("a", False, 0.0)
    ]
    with pytest.raises(ConfigurationError):
        lb.maintain(pipeline=42)
