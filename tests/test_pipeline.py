"""Pipeline entry points, the decorator, the context, listeners."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest

from buttress import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    Key,
    Pipeline,
    RateLimiter,
    Retry,
    Timeout,
    add_listener,
    backoff,
    current_context,
    on_result,
    remove_listener,
    scope,
)
from buttress.events import Event
from buttress.telemetry import LoggingListener
from buttress.testing import ManualClock, RecordingListener

retry = Pipeline(Retry(on=ConnectionError, backoff=backoff.none()), name="deco")


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def tick(self) -> int:
        self.n += 1
        if self.n == 1:
            raise ConnectionError
        return self.n


def test_decorated_function_keeps_metadata_and_signature() -> None:
    def plain(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    add = retry(plain)
    assert add(1) == 3
    assert add.__name__ == "plain"
    assert add.__doc__ == "Add two numbers."
    assert add.__wrapped__ is plain  # type: ignore[attr-defined]
    assert inspect.signature(add) == inspect.signature(plain)


def test_decorates_methods_staticmethods_and_classmethods() -> None:
    class Client:
        def __init__(self) -> None:
            self.counter = Counter()

        @retry
        def method(self) -> int:
            return self.counter.tick()

        @retry
        @staticmethod
        def static(counter: Counter) -> int:
            return counter.tick()

        @retry
        @classmethod
        def klass(cls, counter: Counter) -> tuple[type, int]:
            return cls, counter.tick()

    client = Client()
    assert client.method() == 2
    assert Client.static(Counter()) == 2
    assert client.static(Counter()) == 2
    assert Client.klass(Counter()) == (Client, 2)


async def test_decorator_picks_async_path_and_methods_work() -> None:
    class Service:
        def __init__(self) -> None:
            self.calls = 0

        @retry
        async def fetch(self, x: int) -> int:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError
            await asyncio.sleep(0)
            return x * 2

    s = Service()
    assert inspect.iscoroutinefunction(Service.fetch)
    assert await s.fetch(21) == 42
    assert s.calls == 2


def test_generator_and_async_generator_functions_are_refused() -> None:
    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(ConfigurationError) as info:
            retry(fn)
        assert "half-consumed stream" in str(info.value)
        assert "list" in str(info.value)  # says what to do instead


def test_call_with_a_coroutine_function_is_a_configuration_error() -> None:
    async def coro() -> int:
        return 1  # pragma: no cover

    with pytest.raises(ConfigurationError, match="acall"):
        retry.call(coro)


def test_keyword_arguments_pass_through_even_named_fn() -> None:
    def f(fn: str, *, args: int) -> tuple[str, int]:
        return fn, args

    assert retry.call(f, fn="x", args=2) == ("x", 2)


def test_pipelines_flatten_and_validate() -> None:
    inner = Pipeline(Retry(on=OSError), Timeout(1.0))
    outer = Pipeline(Timeout(5.0), inner, name="outer")
    assert [type(s).__name__ for s in outer.strategies] == ["Timeout", "Retry", "Timeout"]
    with pytest.raises(ConfigurationError):
        Pipeline(lambda: 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Pipeline(name="")
    with pytest.raises(ConfigurationError):
        Pipeline(random=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Pipeline(listeners=["not callable"])  # type: ignore[list-item]


def test_current_context_is_none_outside_and_set_inside() -> None:
    assert current_context() is None
    ctx = Pipeline(name="inventory").call(current_context)
    assert ctx is not None
    assert ctx.operation_key == "inventory"
    assert ctx.attempt == 1
    assert ctx.deadline is None and ctx.remaining() is None
    assert current_context() is None


def test_nested_pipeline_sees_outer_deadline_and_takes_the_earlier(clock: ManualClock) -> None:
    seen: list[Any] = []

    def read() -> None:
        ctx = current_context()
        assert ctx is not None
        seen.append((ctx.operation_key, ctx.remaining(), ctx.parent is not None))

    inner = Pipeline(name="inner", clock=clock)
    inner_short = Pipeline(Timeout(1.0), name="short", clock=clock)
    outer = Pipeline(Timeout(3.0), name="outer", clock=clock)

    def body() -> None:
        read()
        inner.call(read)
        inner_short.call(read)

    outer.call(body)
    assert seen == [("outer", 3.0, False), ("inner", 3.0, True), ("short", 1.0, True)]


def test_typed_properties_and_scope() -> None:
    tenant = Key[str]("tenant", default="anon")
    region = Key[str]("region")
    p = Pipeline(name="p")

    def read() -> tuple[str, str, str | None]:
        ctx = current_context()
        assert ctx is not None
        return ctx.get(tenant), ctx.get(region, "none"), ctx.idempotency_key

    assert p.call(read)[:2] == ("anon", "none")
    with scope(idempotency_key="k-1", properties={tenant: "acme"}) as outer:
        assert outer.idempotency_key == "k-1"
        assert p.call(read) == ("acme", "none", "k-1")
    with pytest.raises(KeyError):
        p.call(lambda: current_context().get(region))  # type: ignore[union-attr]


def test_scope_deadline_is_inherited(clock: ManualClock) -> None:
    with scope(timeout=4.0, clock=clock):
        remaining = Pipeline(clock=clock).call(lambda: current_context().remaining())  # type: ignore[union-attr]
    assert remaining == 4.0


async def test_context_is_isolated_between_concurrent_tasks() -> None:
    p = Pipeline(Retry(on=ConnectionError, backoff=backoff.none()))
    keys: dict[int, set[str]] = {}

    async def work(i: int) -> None:
        for _ in range(3):
            ctx = current_context()
            assert ctx is not None
            keys.setdefault(i, set()).add(ctx.idempotency_key)
            await asyncio.sleep(0)

    await asyncio.gather(*(p.acall(work, i) for i in range(50)))
    assert all(len(v) == 1 for v in keys.values())
    assert len({next(iter(v)) for v in keys.values()}) == 50


def test_global_listener_reaches_existing_pipelines() -> None:
    p = Pipeline(Retry(on=ConnectionError, backoff=backoff.none()))
    rec = RecordingListener()
    add_listener(rec)
    try:
        p.call(Counter().tick)
    finally:
        remove_listener(rec)
    assert "retry.scheduled" in rec.kinds()
    rec.clear()
    p.call(Counter().tick)
    assert rec.kinds() == []


def test_raising_listener_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    def bad(event: Event) -> None:
        raise RuntimeError("listener bug")

    p = Pipeline(Retry(on=ConnectionError, backoff=backoff.none()), listeners=[bad])
    with caplog.at_level(logging.ERROR, logger="buttress"):
        for _ in range(3):
            assert p.call(Counter().tick) == 2
    assert sum("listener" in r.getMessage() for r in caplog.records) == 1


def test_logging_listener_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    p = Pipeline(
        Retry(on=ConnectionError, backoff=backoff.none()),
        name="orders",
        listeners=[LoggingListener(level=logging.INFO)],
    )
    with caplog.at_level(logging.DEBUG, logger="buttress"):
        p.call(Counter().tick)
    scheduled = [r for r in caplog.records if getattr(r, "buttress_event", "") == "retry.scheduled"]
    assert len(scheduled) == 1
    record = scheduled[0]
    assert record.buttress_pipeline == "orders"  # type: ignore[attr-defined]
    assert record.buttress_delay == 0.0  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO
    assert "retry.scheduled" in record.getMessage()


def test_repr_mentions_strategies() -> None:
    text = repr(Pipeline(Retry(on=OSError), Timeout(1.0), name="x"))
    assert "Retry(" in text and "Timeout(" in text and "name='x'" in text


# -- admission-only pipelines publish no context ----------------------------------------------


def admission_pipelines() -> list[Pipeline]:
    return [
        Pipeline(CircuitBreaker(), name="cb"),
        Pipeline(Bulkhead(max_concurrent=4), name="bh"),
        Pipeline(RateLimiter(rate=1e6, burst=1e6), name="rl"),
        Pipeline(CircuitBreaker(), Bulkhead(max_concurrent=4), RateLimiter(1e6, 1e6), name="all"),
    ]


def test_publishes_context_is_decided_by_the_strategies() -> None:
    assert all(not p.publishes_context for p in admission_pipelines())
    assert Pipeline(name="named only").publishes_context
    assert Pipeline(CircuitBreaker(), Retry(on=ValueError)).publishes_context
    assert Pipeline(Timeout(1.0), Bulkhead(max_concurrent=1)).publishes_context
    # a key= or cost function reads the context: that pipeline needs its own
    assert Pipeline(CircuitBreaker(key=lambda ctx: ctx.operation_key)).publishes_context
    assert Pipeline(Bulkhead(max_concurrent=1, key=lambda ctx: 1)).publishes_context
    assert Pipeline(RateLimiter(1.0, 1.0, key=lambda ctx: 1)).publishes_context
    assert Pipeline(RateLimiter(1.0, 1.0, cost=lambda ctx: 1.0)).publishes_context

    class Unknown:
        def build_sync(self, next_step: Any, env: Any) -> Any:
            return next_step

        def build_async(self, next_step: Any, env: Any) -> Any:
            return next_step

    assert Pipeline(Unknown()).publishes_context  # unknown strategies are assumed to need one


@pytest.mark.parametrize("index", range(4))
def test_admission_pipeline_is_transparent_for_the_context(index: int) -> None:
    pipeline = admission_pipelines()[index]
    # at top level: no operation, so no context (all three entry points)
    assert pipeline.call(current_context) is None
    assert pipeline(current_context)() is None
    # nested: the enclosing operation's context itself
    outer = Pipeline(name="outer")

    def inside() -> tuple[Any, Any]:
        return current_context(), pipeline.call(current_context)

    mine, seen = outer.call(inside)
    assert seen is mine and seen.operation_key == "outer"


async def test_async_admission_pipeline_is_transparent_for_the_context() -> None:
    pipeline = Pipeline(CircuitBreaker(), Bulkhead(max_concurrent=2), name="adm")

    async def read() -> Any:
        return current_context()

    assert await pipeline.acall(read) is None
    assert await pipeline(read)() is None
    with scope(operation_key="request", idempotency_key="k-1"):
        ctx = await pipeline.acall(read)
    assert ctx is not None and ctx.operation_key == "request" and ctx.idempotency_key == "k-1"


def test_deadline_and_attempt_pass_through_an_admission_pipeline(clock: ManualClock) -> None:
    inner = Pipeline(CircuitBreaker(), clock=clock)
    calls = [0]

    def flaky() -> tuple[int, float | None]:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError
        ctx = current_context()
        assert ctx is not None
        return ctx.attempt, ctx.remaining()

    outer = Pipeline(
        Timeout(5.0), Retry(on=ConnectionError, backoff=backoff.none()), clock=clock, name="o"
    )
    assert outer.call(lambda: inner.call(flaky)) == (2, 5.0)


def test_fused_admission_decorator_keeps_breaker_semantics(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        on=ValueError, consecutive_failures=2, failure_ratio=None, break_duration=10.0
    )
    pipeline = Pipeline(breaker, clock=clock)
    recorder = RecordingListener()

    class Service:
        def __init__(self) -> None:
            self.fail = True

        @pipeline
        def get(self, n: int, *, scale: int = 1) -> int:
            if self.fail:
                raise ValueError(n)
            return n * scale

    service = Service()
    for _ in range(2):
        with pytest.raises(ValueError):
            service.get(1)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError) as info:
        service.get(1)
    assert info.value.retry_after == 10.0
    clock.advance(10.0)
    service.fail = False
    add_listener(recorder)  # with a listener, the generic path (call telemetry) serves
    try:
        assert service.get(3, scale=2) == 6  # the half-open trial, through the generic path
    finally:
        remove_listener(recorder)
    assert breaker.state == "closed"
    assert recorder.kinds()[0] == "pipeline.started"
    assert recorder.kinds()[-1] == "pipeline.completed"
    assert Service.get.__name__ == "get"


async def test_fused_admission_decorator_async(clock: ManualClock) -> None:
    breaker = CircuitBreaker(on=ValueError, consecutive_failures=1, failure_ratio=None)
    pipeline = Pipeline(breaker, clock=clock)
    fail = [True]

    @pipeline
    async def get(n: int) -> int:
        if fail[0]:
            raise ValueError(n)
        return n

    with pytest.raises(ValueError):
        await get(1)
    with pytest.raises(CircuitOpenError):
        await get(1)
    clock.advance(60.0)  # past the default break duration
    fail[0] = False
    assert await get(7) == 7
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    "make",
    [
        lambda: CircuitBreaker(
            on=ValueError, failure_ratio=0.5, window_duration=10.0, min_throughput=4
        ),
        lambda: CircuitBreaker(
            on=ValueError,
            failure_ratio=None,
            slow_call_duration=1.0,
            slow_call_ratio=0.5,
            window=4,
            min_throughput=4,
        ),
        lambda: CircuitBreaker(
            on=on_result(lambda value: value < 0), failure_ratio=0.5, window=4, min_throughput=4
        ),
    ],
    ids=["time window", "slow calls", "result checks"],
)
def test_decorated_breaker_forms_open_like_the_pipeline_path(make: Any, clock: ManualClock) -> None:
    """The decorator (transparent wrapper) and pipeline.call see the same decisions."""

    def drive(call: Any, breaker: CircuitBreaker) -> list[str]:
        seen = []
        for i in range(8):
            try:
                seen.append(str(call(i)))
            except CircuitOpenError:
                seen.append("open")
            except ValueError:
                seen.append("error")
        return [*seen, breaker.state]

    def work(i: int) -> int:
        if i % 2:
            clock.advance(2.0)  # slow for the slow-call breaker
            if i < 4:
                raise ValueError(i)
            return -i  # a bad result for the result-checking breaker
        return i

    fused_breaker, plain_breaker = make(), make()
    fused = Pipeline(fused_breaker, clock=clock)(work)
    plain = Pipeline(plain_breaker, clock=clock)
    seen = drive(fused, fused_breaker)
    assert seen == drive(lambda i: plain.call(work, i), plain_breaker)
    assert "open" in seen  # each form opened and rejected
