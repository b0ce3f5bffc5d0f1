"""Hedge: exact virtual-time tests on asyncio and trio (shared scenarios) and sync threads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from buttress import (
    ConfigurationError,
    Hedge,
    Key,
    Pipeline,
    RetryBudget,
    Timeout,
    TimeoutRejectedError,
    TokenBucketBudget,
    current_context,
    on_result,
)
from buttress._state.latency import LatencyTracker
from buttress.events import HedgeStarted, RetryBudgetExhausted, TimeoutExpired
from buttress.testing import ManualClock, RecordingListener

# -- drivers: the same scenario on asyncio and on trio ----------------------------------------


class Box:
    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = False


class AsyncioDriver:
    name = "asyncio"
    Cancelled: Any = asyncio.CancelledError

    def __init__(self) -> None:
        self.Event = asyncio.Event

    def clock(self) -> Any:
        return ManualClock()

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    def run(self, scenario: Callable[[Any], Awaitable[None]]) -> None:
        asyncio.run(scenario(self))

    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> Box:
        box = Box()

        async def runner() -> None:
            try:
                box.value = await fn()
            except BaseException as exc:
                box.error = exc
            box.done = True

        task = asyncio.get_running_loop().create_task(runner())
        self._tasks = [*getattr(self, "_tasks", []), task]
        return box


class TrioTime:
    """A pipeline clock reading trio's clock, for `trio.testing.MockClock` virtual time.

    `Timeout` on trio uses trio cancel scopes, which follow trio's clock, so trio tests
    that need timeouts move trio's clock (``MockClock.jump``) rather than a `ManualClock`.
    """

    def __init__(self, mock: trio.testing.MockClock) -> None:
        self.mock = mock
        self.base = 0.0

    def now(self) -> float:
        return float(trio.current_time()) - self.base

    def sleep(self, seconds: float) -> None:  # pragma: no cover - async only
        raise AssertionError("not used")

    def advance(self, seconds: float) -> None:
        self.mock.jump(seconds)


class TrioDriver:
    Cancelled: Any = trio.Cancelled

    def __init__(self, manual: bool) -> None:
        self.name = "trio-manual" if manual else "trio"
        self.manual = manual
        self.Event = trio.Event
        self.nursery: Any = None
        self.mock = trio.testing.MockClock()

    def clock(self) -> Any:
        if self.manual:
            return ManualClock()
        clock = TrioTime(self.mock)
        clock.base = float(trio.current_time())
        return clock

    async def settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()

    def run(self, scenario: Callable[[Any], Awaitable[None]]) -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await scenario(self)

        trio.run(main, clock=self.mock)

    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> Box:
        box = Box()

        async def runner() -> None:
            try:
                box.value = await fn()
            except trio.Cancelled:
                raise
            except BaseException as exc:
                box.error = exc
            box.done = True

        self.nursery.start_soon(runner)
        return box


@pytest.fixture(params=["asyncio", "trio", "trio-manual"])
def driver(request: pytest.FixtureRequest) -> Any:
    """asyncio and trio on a `ManualClock` (the runtimes' clock-timer paths), and trio on
    its own `MockClock` with a pipeline clock reading trio's time."""
    if request.param == "asyncio":
        return AsyncioDriver()
    return TrioDriver(manual=request.param == "trio-manual")


def needs_timeout(driver: Any) -> None:
    """Scenarios with a `Timeout` (which on trio follows a ManualClock through clock timers,
    and trio's own clock otherwise): run on every driver."""


class Script:
    """An async function whose attempts follow a per-attempt script.

    ``plan[attempt]`` is ``("wait", value)`` (block until released, then return value),
    ``("return", value)``, ``("raise", exc)``, or ``("wait_raise", exc)``.
    """

    def __init__(self, driver: Any, clock: Any, plan: dict[int, tuple[str, Any]]) -> None:
        self.driver = driver
        self.clock = clock
        self.plan = plan
        self.started: list[tuple[int, float]] = []
        self.cancelled: list[int] = []
        self.gates: dict[int, Any] = {}
        self.contexts: dict[int, Any] = {}
        self.deadlines: dict[int, float | None] = {}

    def gate(self, attempt: int) -> Any:
        if attempt not in self.gates:
            self.gates[attempt] = self.driver.Event()
        return self.gates[attempt]

    async def __call__(self) -> Any:
        ctx = current_context()
        assert ctx is not None
        attempt = ctx.attempt
        self.contexts[attempt] = ctx
        self.deadlines[attempt] = ctx.deadline
        self.started.append((attempt, self.clock.now()))
        action, what = self.plan.get(attempt, ("return", f"a{attempt}"))
        try:
            if action.startswith("wait"):
                await self.gate(attempt).wait()
        except self.driver.Cancelled:
            self.cancelled.append(attempt)
            raise
        if action.endswith("raise"):
            raise what
        return what


# -- async scenarios ------------------------------------------------------------------------


def test_hedge_fires_at_delay_not_before_and_winner_cancels_loser(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock, events = d.clock(), RecordingListener()
        fn = Script(d, clock, {1: ("wait", "primary"), 2: ("return", "hedge")})
        p = Pipeline(Hedge(delay=0.2), clock=clock, listeners=[events], name="svc")
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        assert fn.started == [(1, 0.0)]
        clock.advance(0.19)
        await d.settle()
        assert fn.started == [(1, 0.0)]
        assert not events.of_type(HedgeStarted)
        clock.advance(0.01)
        await d.settle()
        assert box.done
        assert box.value == "hedge"
        assert fn.started == [(1, 0.0), (2, 0.2)]
        assert fn.cancelled == [1]  # the loser was cancelled before acall returned
        assert events.of_type(HedgeStarted) == [
            HedgeStarted(pipeline="svc", strategy="hedge", time=0.2, hedge=1, delay=0.2)
        ]

    driver.run(scenario)


def test_primary_before_delay_starts_no_hedge(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock, events = d.clock(), RecordingListener()
        fn = Script(d, clock, {1: ("wait", "primary")})
        p = Pipeline(Hedge(delay=0.2, max_hedged=3), clock=clock, listeners=[events])
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.199)
        fn.gate(1).set()
        await d.settle()
        assert box.value == "primary"
        clock.advance(10.0)
        await d.settle()
        assert fn.started == [(1, 0.0)]
        assert not events.of_type(HedgeStarted)

    driver.run(scenario)


def test_all_fail_raises_the_primary_exception_not_a_group(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock = d.clock()
        first, second = ConnectionError("primary"), ConnectionError("hedge")
        # the hedge fails first, then the primary
        fn = Script(d, clock, {1: ("wait_raise", first), 2: ("raise", second)})
        p = Pipeline(Hedge(delay=0.2), clock=clock)
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.2)
        await d.settle()
        assert not box.done  # the primary is still running
        fn.gate(1).set()
        await d.settle()
        assert box.error is first
        assert any("all 2 attempt(s) failed" in note for note in first.__notes__)

        # the primary fails first (that starts the hedge at once), then the hedge
        third, fourth = KeyError("primary"), KeyError("hedge")
        fn2 = Script(d, clock, {1: ("raise", third), 2: ("wait_raise", fourth)})
        box2 = d.spawn(lambda: p.acall(fn2))
        await d.settle()
        assert [a for a, _ in fn2.started] == [1, 2]
        assert not box2.done
        fn2.gate(2).set()
        await d.settle()
        assert box2.error is third

    driver.run(scenario)


def test_failure_starts_the_next_hedge_at_once(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock, events = d.clock(), RecordingListener()
        fn = Script(d, clock, {1: ("wait_raise", OSError("down")), 2: ("wait", "hedge")})
        p = Pipeline(Hedge(delay=1.0), clock=clock, listeners=[events])
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.05)
        fn.gate(1).set()
        await d.settle()
        assert fn.started == [(1, 0.0), (2, 0.05)]
        assert events.of_type(HedgeStarted)[0].delay == pytest.approx(0.05)
        fn.gate(2).set()
        await d.settle()
        assert box.value == "hedge"

    driver.run(scenario)


class Refusing(RetryBudget):
    name = "refusing"

    def __init__(self) -> None:
        self.asked: list[float] = []

    def try_withdraw(self, now: float, *, timeout: bool = False) -> bool:
        self.asked.append(now)
        return False


def test_budget_refusal_prevents_the_hedge(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock, events = d.clock(), RecordingListener()
        budget = Refusing()
        fn = Script(d, clock, {1: ("wait", "primary")})
        p = Pipeline(Hedge(delay=0.2, budget=budget), clock=clock, listeners=[events])
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.2)
        await d.settle()
        assert budget.asked == [0.2]
        assert fn.started == [(1, 0.0)]
        (refused,) = events.of_type(RetryBudgetExhausted)
        assert (refused.attempt, refused.budget, refused.time) == (2, "refusing", 0.2)
        clock.advance(1.0)
        await d.settle()
        assert budget.asked == [0.2]  # asked once per call, not at every delay
        fn.gate(1).set()
        await d.settle()
        assert box.value == "primary"

    driver.run(scenario)


def test_token_bucket_budget_allows_then_refuses(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock = d.clock()
        budget = TokenBucketBudget(capacity=5, retry_cost=5)
        p = Pipeline(Hedge(delay=0.1, budget=budget), clock=clock)
        starts = []
        for _ in range(2):
            fn = Script(d, clock, {1: ("wait", "primary"), 2: ("wait", "hedge")})
            box = d.spawn(lambda fn=fn: p.acall(fn))
            await d.settle()
            clock.advance(0.1)
            await d.settle()
            starts.append(len(fn.started))
            fn.gate(1).set()
            await d.settle()
            assert box.value == "primary"
        assert starts == [2, 1]  # the second call found the bucket empty

    driver.run(scenario)


def test_max_hedged_spaces_hedges_by_delay(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock = d.clock()
        plan = {i: ("wait", f"a{i}") for i in (1, 2, 3)}
        fn = Script(d, clock, plan)
        p = Pipeline(Hedge(delay=0.2, max_hedged=2), clock=clock)
        box = d.spawn(lambda: p.acall(fn))
        for _ in range(6):
            await d.settle()
            clock.advance(0.1)
        await d.settle()
        assert fn.started == [(1, 0.0), (2, 0.2), (3, pytest.approx(0.4))]
        fn.gate(3).set()
        await d.settle()
        assert box.value == "a3"
        assert sorted(fn.cancelled) == [1, 2]

    driver.run(scenario)


def test_exception_outside_on_is_accepted_at_once(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock = d.clock()
        boom = ValueError("not retryable")
        fn = Script(d, clock, {1: ("raise", boom)})
        p = Pipeline(Hedge(delay=0.2, on=ConnectionError), clock=clock)
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        assert box.error is boom
        assert not getattr(boom, "__notes__", None)
        clock.advance(1.0)
        await d.settle()
        assert fn.started == [(1, 0.0)]

    driver.run(scenario)


def test_result_not_accepted_starts_a_hedge(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock = d.clock()
        fn = Script(d, clock, {1: ("return", 503), 2: ("return", 200)})
        p = Pipeline(Hedge(delay=5.0, on=on_result(lambda r: r >= 500)), clock=clock)
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        assert box.value == 200
        # and if every result is refused, the primary's result is returned
        fn2 = Script(d, clock, {1: ("return", 503), 2: ("return", 502)})
        box2 = d.spawn(lambda: p.acall(fn2))
        await d.settle()
        assert box2.value == 503

    driver.run(scenario)


def test_attempt_contexts_are_distinct_children(driver: Any) -> None:
    needs_timeout(driver)

    async def scenario(d: Any) -> None:
        clock = d.clock()
        winner_key = Key[str]("winner")

        fn = Script(d, clock, {1: ("wait", "p"), 2: ("wait", "h1"), 3: ("return", "h2")})
        seen: dict[str, Any] = {}

        class Probe:
            """Reads the pipeline's context after the hedge returns."""

            name = "probe"

            def build_sync(self, next_step: Any, env: Any) -> Any:
                raise NotImplementedError

            def build_async(self, next_step: Any, env: Any) -> Any:
                async def step(f: Any, args: Any, kwargs: Any) -> Any:
                    result = await next_step(f, args, kwargs)
                    ctx = current_context()
                    assert ctx is not None
                    seen["winner"] = ctx.get(winner_key, None)
                    seen["key"] = ctx.idempotency_key
                    return result

                return step

        outer = Pipeline(Timeout(10.0), clock=clock)
        inner = Pipeline(Probe(), Hedge(delay=0.2, max_hedged=2), Timeout(1.0), clock=clock)

        async def tag() -> Any:
            result = await fn()
            ctx = current_context()
            assert ctx is not None
            ctx.set(winner_key, result)
            return result

        async def call() -> Any:
            return await inner.acall(tag)

        box = d.spawn(lambda: outer.acall(call))
        for _ in range(4):
            await d.settle()
            clock.advance(0.1)
        await d.settle()
        assert box.value == "h2"
        ctxs = fn.contexts
        assert sorted(ctxs) == [1, 2, 3]
        assert len({id(c) for c in ctxs.values()}) == 3
        # one idempotency key for the logical call
        assert {c.idempotency_key for c in ctxs.values()} == {seen["key"]}
        # each attempt has its own inner Timeout deadline (start + 1.0), capped by the outer 10.0
        assert [fn.deadlines[i] for i in (1, 2, 3)] == [
            pytest.approx(1.0),
            pytest.approx(1.2),
            pytest.approx(1.4),
        ]
        # the winner's properties are copied to the enclosing context
        assert seen["winner"] == "h2"

    driver.run(scenario)


# -- inner strategies vs the hedge's own cancellation -----------------------------------------


def test_loser_cancellation_is_not_reported_as_inner_timeout(driver: Any) -> None:
    needs_timeout(driver)

    async def scenario(d: Any) -> None:
        clock, events = d.clock(), RecordingListener()
        fn = Script(d, clock, {1: ("wait", "primary"), 2: ("return", "hedge")})
        p = Pipeline(Hedge(delay=0.2), Timeout(1.0), clock=clock, listeners=[events])
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.2)
        await d.settle()
        assert box.value == "hedge"
        assert fn.cancelled == [1]
        clock.advance(5.0)  # past every inner deadline: nothing may fire any more
        await d.settle()
        assert not events.of_type(TimeoutExpired)
        # the owning task was not cancelled by anything: it can still await normally
        await d.settle()

    driver.run(scenario)


def test_inner_timeout_is_a_failed_attempt_not_a_hedge_cancel(driver: Any) -> None:
    needs_timeout(driver)

    async def scenario(d: Any) -> None:
        clock, events = d.clock(), RecordingListener()
        fn = Script(d, clock, {1: ("wait", "primary"), 2: ("return", "hedge")})
        p = Pipeline(Hedge(delay=0.5), Timeout(0.1), clock=clock, listeners=[events])
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.1)
        await d.settle()
        assert box.value == "hedge"
        assert fn.started == [(1, 0.0), (2, 0.1)]  # the timeout failure started the hedge at once
        assert fn.cancelled == [1]  # cancelled by its own Timeout...
        assert len(events.of_type(TimeoutExpired)) == 1  # ...which reported its own expiry
        assert events.of_type(HedgeStarted)[0].time == pytest.approx(0.1)

    driver.run(scenario)


def test_loser_timeout_expiring_as_the_winner_returns(driver: Any) -> None:
    needs_timeout(driver)

    async def scenario(d: Any) -> None:
        clock, events = d.clock(), RecordingListener()
        fn = Script(d, clock, {1: ("wait", "primary"), 2: ("wait", "hedge")})
        p = Pipeline(Hedge(delay=0.2), Timeout(1.0), clock=clock, listeners=[events])
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.2)
        await d.settle()
        # in one step: the primary's own timeout expires and the hedge answers
        clock.advance(0.8)
        fn.gate(2).set()
        await d.settle()
        assert box.value == "hedge"
        assert box.error is None
        assert fn.cancelled == [1]
        clock.advance(5.0)
        await d.settle()
        assert len(events.of_type(TimeoutExpired)) <= 1

    driver.run(scenario)


def test_outer_timeout_cancels_every_attempt(driver: Any) -> None:
    needs_timeout(driver)

    async def scenario(d: Any) -> None:
        clock = d.clock()
        fn = Script(d, clock, {1: ("wait", "p"), 2: ("wait", "h")})
        p = Pipeline(Timeout(0.5), Hedge(delay=0.2), clock=clock)
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.2)
        await d.settle()
        clock.advance(0.3)
        await d.settle()
        assert isinstance(box.error, TimeoutRejectedError)
        assert sorted(fn.cancelled) == [1, 2]

    driver.run(scenario)


class Rehearsal(BaseException):
    pass


def test_base_exception_from_an_attempt_propagates_at_once(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock = d.clock()
        fn = Script(d, clock, {1: ("wait", "p"), 2: ("raise", Rehearsal())})
        p = Pipeline(Hedge(delay=0.2), clock=clock)
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        clock.advance(0.2)
        await d.settle()
        assert isinstance(box.error, Rehearsal)
        assert fn.cancelled == [1]

    driver.run(scenario)


def test_adaptive_percentile_moves_the_delay(driver: Any) -> None:
    async def scenario(d: Any) -> None:
        clock, events = d.clock(), RecordingListener()
        delay = Hedge.percentile(0.5, window=10, min_samples=10)
        p = Pipeline(Hedge(delay=delay), clock=clock, listeners=[events])

        async def takes(seconds: float) -> str:
            clock.advance(seconds)
            return "ok"

        async def hedges_after(expected: float) -> None:
            fn = Script(d, clock, {1: ("wait", "p"), 2: ("return", "h")})
            box = d.spawn(lambda: p.acall(fn))
            await d.settle()
            clock.advance(expected - 0.001)
            await d.settle()
            assert len(fn.started) == 1
            clock.advance(0.002)
            await d.settle()
            assert len(fn.started) == 2
            assert box.value == "h"

        # warm-up: no timed hedge before min_samples
        for _ in range(9):
            assert await p.acall(takes, 0.1) == "ok"
        assert delay.delay(clock.now()) is None
        assert await p.acall(takes, 0.1) == "ok"
        assert delay.delay(clock.now()) == pytest.approx(0.1)
        await hedges_after(0.1)
        # latencies rise: after a window of 0.3 s calls, hedges wait 0.3 s
        for _ in range(10):
            await p.acall(takes, 0.3)
        assert delay.delay(clock.now()) == pytest.approx(0.3)
        await hedges_after(0.3)

    driver.run(scenario)


def test_adaptive_records_losers_as_censored_samples() -> None:
    async def main() -> None:
        clock = ManualClock()
        delay = Hedge.percentile(0.5, min_samples=1, initial=0.2)
        fn = Script(AsyncioDriver(), clock, {1: ("wait", "p"), 2: ("wait", "h")})
        p = Pipeline(Hedge(delay=delay), clock=clock)
        task = asyncio.ensure_future(p.acall(fn))
        await AsyncioDriver().settle()
        clock.advance(0.2)
        await AsyncioDriver().settle()
        clock.advance(0.1)
        fn.gate(2).set()
        assert await task == "h"
        # the hedge took 0.1 s; the primary lost after running 0.3 s
        assert sorted(delay.tracker._sorted) == [pytest.approx(0.1), pytest.approx(0.3)]

    asyncio.run(main())


# -- sync (threads) -------------------------------------------------------------------------


class SyncScript:
    """Sync counterpart of `Script`: attempts block on threading events."""

    def __init__(self, clock: ManualClock, plan: dict[int, tuple[str, Any]]) -> None:
        import threading

        self.clock = clock
        self.plan = plan
        self.lock = threading.Lock()
        self.started: list[tuple[int, float]] = []
        self.events = {i: threading.Event() for i in range(1, 6)}
        self.running = {i: threading.Event() for i in range(1, 6)}
        self.remaining: dict[int, float | None] = {}
        self.contexts: dict[int, Any] = {}

    def __call__(self) -> Any:
        ctx = current_context()
        assert ctx is not None
        attempt = ctx.attempt
        with self.lock:
            self.started.append((attempt, self.clock.now()))
            self.contexts[attempt] = ctx
        self.running[attempt].set()
        action, what = self.plan.get(attempt, ("return", f"a{attempt}"))
        if action.startswith("wait"):
            assert self.events[attempt].wait(5.0), "test gate never opened"
            self.remaining[attempt] = ctx.remaining()
        if action.endswith("raise"):
            raise what
        return what


def run_in_thread(fn: Callable[[], Any]) -> tuple[Any, Box]:
    import threading

    box = Box()

    def target() -> None:
        try:
            box.value = fn()
        except BaseException as exc:
            box.error = exc
        box.done = True

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_sync_hedge_fires_at_delay_and_abandons_the_loser() -> None:
    clock, events = ManualClock(), RecordingListener()
    fn = SyncScript(clock, {1: ("wait", "primary"), 2: ("return", "hedge")})
    p = Pipeline(Hedge(delay=0.2), Timeout(5.0), clock=clock, listeners=[events])
    thread, box = run_in_thread(lambda: p.call(fn))
    assert fn.running[1].wait(5.0)
    clock.advance(0.19)
    assert not fn.running[2].is_set()
    clock.advance(0.01)
    thread.join(5.0)
    assert box.value == "hedge"
    assert fn.started == [(1, 0.0), (2, 0.2)]
    assert events.of_type(HedgeStarted)[0].time == 0.2
    # the abandoned primary still runs; its context deadline now says "stop"
    fn.events[1].set()
    for _ in range(500):
        if 1 in fn.remaining:
            break
        fn.running[3].wait(0.01)
    assert fn.remaining[1] is not None
    assert fn.remaining[1] <= 0.0


def test_sync_primary_before_delay() -> None:
    clock, events = ManualClock(), RecordingListener()
    p = Pipeline(Hedge(delay=0.2), clock=clock, listeners=[events])
    assert p.call(lambda: "fast") == "fast"
    assert not events.of_type(HedgeStarted)


def test_sync_all_fail_raises_primary_exception() -> None:
    clock = ManualClock()
    first, second = ConnectionError("primary"), ConnectionError("hedge")
    fn = SyncScript(clock, {1: ("wait_raise", first), 2: ("raise", second)})
    p = Pipeline(Hedge(delay=0.2), clock=clock)
    thread, box = run_in_thread(lambda: p.call(fn))
    assert fn.running[1].wait(5.0)
    clock.advance(0.2)
    assert fn.running[2].wait(5.0)
    fn.events[1].set()
    thread.join(5.0)
    assert box.error is first


def test_sync_budget_refusal_prevents_hedge() -> None:
    clock = ManualClock()
    budget = Refusing()
    fn = SyncScript(clock, {1: ("wait", "primary")})
    p = Pipeline(Hedge(delay=0.2, budget=budget), clock=clock)
    thread, box = run_in_thread(lambda: p.call(fn))
    assert fn.running[1].wait(5.0)
    clock.advance(0.3)
    for _ in range(500):
        if budget.asked:
            break
        fn.running[5].wait(0.01)
    assert budget.asked == [0.2] or budget.asked == [0.3]
    fn.events[1].set()
    thread.join(5.0)
    assert box.value == "primary"
    assert fn.started == [(1, 0.0)]


def test_sync_enclosing_deadline_stops_waiting() -> None:
    from buttress import scope

    clock = ManualClock()
    fn = SyncScript(clock, {1: ("wait", "p"), 2: ("wait", "h")})
    p = Pipeline(Hedge(delay=0.2), clock=clock)

    def call() -> Any:
        with scope(timeout=0.5, clock=clock):
            return p.call(fn)

    thread, box = run_in_thread(call)
    assert fn.running[1].wait(5.0)
    clock.advance(0.2)
    assert fn.running[2].wait(5.0)
    clock.advance(0.3)
    thread.join(5.0)
    assert isinstance(box.error, TimeoutRejectedError)
    fn.events[1].set()
    fn.events[2].set()


def test_sync_contexts_and_idempotency_key() -> None:
    clock = ManualClock()
    fn = SyncScript(clock, {1: ("wait", "p"), 2: ("return", "h")})
    p = Pipeline(Hedge(delay=0.0), clock=clock)  # both at once
    assert p.call(fn) == "h"
    fn.events[1].set()
    assert sorted(fn.contexts) == [1, 2]
    keys = {c.idempotency_key for c in fn.contexts.values()}
    assert len(keys) == 1


def test_sync_base_exception_propagates() -> None:
    def fn() -> None:
        raise Rehearsal

    with pytest.raises(Rehearsal):
        Pipeline(Hedge(delay=1.0)).call(fn)


def test_sync_worker_threads_are_reused() -> None:
    from buttress._runtime.sync import _WORKERS

    p = Pipeline(Hedge(delay=10.0))
    p.call(lambda: 1)
    before = _WORKERS.threads
    for _ in range(50):
        assert p.call(lambda: 2) == 2
    assert _WORKERS.threads <= before + 1


# -- pure parts and configuration -----------------------------------------------------------


def test_latency_tracker_nearest_rank_and_window() -> None:
    t = LatencyTracker(window=4)
    assert t.percentile(0.5, 0.0) is None
    for i, v in enumerate([0.4, 0.1, 0.3, 0.2]):
        t.record(float(i), v)
    assert t.percentile(0.5, 4.0) == 0.2
    assert t.percentile(0.75, 4.0) == 0.3
    assert t.percentile(1.0, 4.0) == 0.4
    assert t.percentile(0.01, 4.0) == 0.1
    t.record(5.0, 1.0)  # displaces 0.4 (the oldest)
    assert t.percentile(1.0, 5.0) == 1.0
    assert t.count(5.0) == 4
    assert t.percentile(0.5, 5.0, min_samples=5) is None
    t.record(6.0, -1.0)  # ignored
    t.record(6.0, math.nan)  # ignored
    assert t.count(6.0) == 4
    with pytest.raises(ValueError):
        t.percentile(0.0, 6.0)


def test_latency_tracker_max_age() -> None:
    t = LatencyTracker(window=100, max_age=10.0)
    t.record(0.0, 5.0)
    t.record(8.0, 1.0)
    assert t.percentile(1.0, 9.0) == 5.0
    assert t.percentile(1.0, 10.5) == 1.0
    assert t.count(100.0) == 0


def test_percentile_delay_clamps_and_initial() -> None:
    d = Hedge.percentile(0.9, min_samples=2, initial=0.05, min_delay=0.01, max_delay=0.5)
    assert d.delay(0.0) == 0.05
    d.tracker.record(0.0, 0.001)
    d.tracker.record(0.0, 0.002)
    assert d.delay(0.0) == 0.01
    d.tracker.record(0.0, 9.0)
    d.tracker.record(0.0, 9.0)
    assert d.delay(0.0) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"delay": -1}, "delay"),
        ({"delay": math.nan}, "delay"),
        ({"delay": "1s"}, "delay"),
        ({"delay": 1, "max_hedged": 0}, "max_hedged"),
        ({"delay": 1, "budget": 3}, "budget"),
        ({"delay": 1, "on": None}, "on"),
        ({"delay": 1, "name": ""}, "name"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Hedge(**kwargs)
    assert info.value.parameter == parameter


@pytest.mark.parametrize(
    ("args", "kwargs", "parameter"),
    [
        ((0.0,), {}, "q"),
        ((1.0,), {}, "q"),
        ((1.5,), {}, "q"),
        ((0.9,), {"window": 0}, "window"),
        ((0.9,), {"min_samples": 0}, "min_samples"),
        ((0.9,), {"min_delay": 1.0, "max_delay": 0.5}, "max_delay"),
        ((0.9,), {"initial": -1}, "initial"),
    ],
)
def test_bad_percentile(args: tuple[Any, ...], kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Hedge.percentile(*args, **kwargs)
    assert info.value.parameter == parameter


def test_infinite_delay_hedges_only_after_failures() -> None:
    async def main() -> None:
        clock = ManualClock()
        calls = []

        async def fn() -> str:
            ctx = current_context()
            assert ctx is not None
            calls.append(ctx.attempt)
            if ctx.attempt == 1:
                raise OSError("x")
            return "second"

        p = Pipeline(Hedge(delay=math.inf), clock=clock)
        assert await p.acall(fn) == "second"
        assert calls == [1, 2]

    asyncio.run(main())


def test_repr() -> None:
    text = repr(Hedge(delay=Hedge.percentile(0.95), max_hedged=2))
    assert "Hedge.percentile(0.95" in text
    assert "max_hedged=2" in text


# -- real clock (short real waits) and the worker pool ------------------------------------------


@pytest.mark.realtime
def test_real_clock_hedges_win_on_every_runtime() -> None:
    import threading
    import time

    release = threading.Event()

    def sync_fn() -> str:
        ctx = current_context()
        assert ctx is not None
        if ctx.attempt == 1:
            release.wait(2.0)
            return "primary"
        return "hedge"

    p = Pipeline(Hedge(delay=0.02))
    start = time.monotonic()
    assert p.call(sync_fn) == "hedge"
    assert 0.015 <= time.monotonic() - start < 1.0
    release.set()

    async def asyncio_fn() -> str:
        ctx = current_context()
        assert ctx is not None
        if ctx.attempt == 1:
            await asyncio.sleep(2.0)
            return "primary"
        return "hedge"

    async def amain() -> float:
        t0 = time.monotonic()
        assert await p.acall(asyncio_fn) == "hedge"
        return time.monotonic() - t0

    assert 0.015 <= asyncio.run(amain()) < 1.0

    async def trio_fn() -> str:
        ctx = current_context()
        assert ctx is not None
        if ctx.attempt == 1:
            await trio.sleep(2.0)
            return "primary"
        return "hedge"

    async def tmain() -> float:
        t0 = time.monotonic()
        assert await p.acall(trio_fn) == "hedge"
        return time.monotonic() - t0

    assert 0.015 <= trio.run(tmain) < 1.0


@pytest.mark.realtime
def test_worker_pool_runs_every_job_and_idle_threads_exit() -> None:
    import threading
    import time

    from buttress._runtime.sync import _Workers

    pool = _Workers()
    pool.idle_timeout = 0.05
    done: list[int] = []
    lock = threading.Lock()
    gate = threading.Event()

    def job(i: int) -> None:
        gate.wait(2.0)
        with lock:
            done.append(i)

    for i in range(6):  # all six block at once: six threads, none queued behind another
        pool.submit(lambda i=i: job(i))
    assert pool.threads == 6
    gate.set()
    for i in range(6, 40):  # now idle workers are reused
        pool.submit(lambda i=i: job(i))
    deadline = time.monotonic() + 5.0
    while (len(done) < 40 or pool.threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(done) == list(range(40))
    assert pool.threads == 0  # every idle worker left after idle_timeout


def test_raising_predicate_is_raised_as_itself(driver: Any) -> None:
    """A bug in an ``on=`` predicate surfaces as its own exception (trio: not a group)."""

    class PredicateBug(Exception):
        pass

    def broken(outcome: Any) -> bool:
        raise PredicateBug

    async def scenario(d: Any) -> None:
        clock = d.clock()
        fn = Script(d, clock, {1: ("raise", OSError("x")), 2: ("wait", "h")})
        p = Pipeline(Hedge(delay=0.2, on=broken), clock=clock)
        box = d.spawn(lambda: p.acall(fn))
        await d.settle()
        assert isinstance(box.error, PredicateBug)
        assert fn.started == [(1, 0.0)]

    driver.run(scenario)


def test_sync_raising_predicate_is_raised_and_attempts_abandoned() -> None:
    class PredicateBug(Exception):
        pass

    def broken(outcome: Any) -> bool:
        raise PredicateBug

    def fn() -> None:
        raise OSError("x")

    with pytest.raises(PredicateBug):
        Pipeline(Hedge(delay=0.2, on=broken)).call(fn)
