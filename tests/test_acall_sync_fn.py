"""``await pipeline.acall(fn)`` with a plain (non-async) ``fn``.

A plain function returning a non-awaitable is a programming error (use ``call``): it must
surface as a `ConfigurationError` at once, after running ``fn`` at most once, and no
strategy may treat it as a failure (retry it, count it, fall back from it). A sync callable
returning an awaitable (a lambda around a coroutine call, a ``functools.partial`` of an
async function) is legitimate and keeps working.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from buttress import (
    Bulkhead,
    CacheAside,
    CircuitBreaker,
    ConfigurationError,
    Fallback,
    Hedge,
    LoadBalance,
    Pipeline,
    RateLimiter,
    Retry,
    Timeout,
    backoff,
)
from buttress.testing import ManualClock


class Calls:
    """A plain function that counts its calls and returns an int."""

    def __init__(self) -> None:
        self.n = 0

    def plain(self, *args: Any) -> int:
        self.n += 1
        return 1


def strategies() -> list[Any]:
    return [
        Retry(on=Exception, backoff=backoff.none()),
        Timeout(5.0),
        CircuitBreaker(consecutive_failures=1, failure_ratio=None),
        Bulkhead(2),
        Hedge(delay=1.0),
        Fallback(on=Exception, value=0),
        RateLimiter(rate=100.0, burst=100),
        LoadBalance(["a:1", "b:1"], handoff="context", outlier=None),
        CacheAside(10, beta=0),
    ]


@pytest.mark.parametrize("strategy", strategies(), ids=lambda s: type(s).__name__)
async def test_plain_function_is_a_configuration_error_and_runs_at_most_once(
    strategy: Any,
) -> None:
    calls = Calls()
    pipeline = Pipeline(strategy, clock=ManualClock(), name="svc")
    with pytest.raises(ConfigurationError) as info:
        await pipeline.acall(calls.plain)  # type: ignore[arg-type]
    assert calls.n <= 1
    message = str(info.value)
    assert "plain" in message  # names the function
    assert "pipeline.call(" in message  # says what to use instead
    assert "'svc'" in message  # and which pipeline
    assert info.value.parameter == "fn"


async def test_retry_on_exception_does_not_retry_a_plain_function() -> None:
    calls = Calls()
    pipeline = Pipeline(Retry(on=Exception, attempts=3, backoff=backoff.none()))
    with pytest.raises(ConfigurationError, match=r"pipeline\.call\("):
        await pipeline.acall(calls.plain)  # type: ignore[arg-type]
    assert calls.n == 1

    # the lambda of the bug report: nothing awaits the int
    with pytest.raises(ConfigurationError, match="<lambda>"):
        await pipeline.acall(lambda: 1)  # type: ignore[arg-type,return-value]


async def test_a_plain_function_is_no_breaker_failure() -> None:
    breaker = CircuitBreaker(consecutive_failures=1, failure_ratio=None)
    pipeline = Pipeline(breaker, clock=ManualClock())
    calls = Calls()
    for _ in range(3):
        with pytest.raises(ConfigurationError):
            await pipeline.acall(calls.plain)  # type: ignore[arg-type]
    assert breaker.state == "closed"
    assert breaker.metrics.consecutive_failures == 0
    assert calls.n == 3


async def test_async_generator_function_is_a_configuration_error() -> None:
    async def agen() -> Any:
        yield 1  # pragma: no cover

    with pytest.raises(ConfigurationError, match="agen"):
        await Pipeline(Retry(on=Exception, backoff=backoff.none())).acall(agen)


async def test_sync_callables_returning_awaitables_keep_working() -> None:
    attempts = [0]

    async def fetch(x: int) -> int:
        attempts[0] += 1
        if attempts[0] == 1:
            raise ConnectionError
        return x * 2

    def sync_wrapper(x: int) -> Any:  # a plain def returning a coroutine
        return fetch(x)

    class Client:
        def get(self, x: int) -> Any:
            return fetch(x)

    class AsyncCallable:
        async def __call__(self, x: int) -> int:
            return await fetch(x)

    pipeline = Pipeline(Retry(on=ConnectionError, backoff=backoff.none()))
    client = Client()
    subjects: list[Any] = [
        lambda: fetch(3),
        functools.partial(fetch, 3),
        functools.partial(sync_wrapper, 3),
        lambda: client.get(3),
        functools.partial(AsyncCallable(), 3),
    ]
    for subject in subjects:
        attempts[0] = 0
        assert await pipeline.acall(subject) == 6
        assert attempts[0] == 2  # retried through the same callable
    attempts[0] = 0
    assert await pipeline.acall(sync_wrapper, 3) == 6
    attempts[0] = 0
    assert await pipeline.acall(AsyncCallable(), 3) == 6


async def test_cache_aside_keys_a_sync_callable_by_the_original_function() -> None:
    spec = CacheAside(10, beta=0)
    pipeline = Pipeline(spec, clock=ManualClock())
    loads = [0]

    async def fetch(x: int) -> str:
        loads[0] += 1
        return f"v{x}"

    def load(x: int) -> Any:  # plain def returning a coroutine
        return fetch(x)

    assert await pipeline.acall(load, 1) == "v1"
    assert await pipeline.acall(load, 1) == "v1"
    assert loads[0] == 1  # second call was a hit
    key = spec.key_for(load, 1)
    assert key.startswith(f"{__name__}.")
    assert "load" in key
    assert key in spec.local
    assert spec.keyer(load) is spec.keyer(load)
    assert list(spec._keyers) == [load]  # one builder, not one per call's guard
    assert await pipeline.acall(load, 2) == "v2"
    assert loads[0] == 2

    # templates name the original function's parameters
    templated = CacheAside(10, key="item:{x}", beta=0)
    tp = Pipeline(templated, clock=ManualClock())
    assert await tp.acall(load, 7) == "v7"
    assert "item:7" in templated.local

    # a plain function through CacheAside: refused, nothing cached
    calls = Calls()
    with pytest.raises(ConfigurationError):
        await pipeline.acall(calls.plain, 1)  # type: ignore[arg-type]
    assert spec.key_for(calls.plain, 1) not in spec.local


async def test_coroutine_functions_and_bound_methods_take_the_direct_path() -> None:
    class Repo:
        async def get(self, x: int) -> int:
            return x

    async def f(x: int) -> int:
        return x + 1

    pipeline = Pipeline(Retry(on=ConnectionError))
    repo = Repo()
    for _ in range(2):  # second call: the remembered function
        assert await pipeline.acall(f, 1) == 2
        assert await pipeline.acall(repo.get, 5) == 5
