"""Defects found by the fresh review of stop 9 (each a test first)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from buttress import (
    CacheAside,
    ConfigurationError,
    Fallback,
    Pipeline,
    RateLimiter,
    Retry,
    cached,
)


def test_call_with_an_async_function_never_poisons_the_cache() -> None:
    pipeline = Pipeline(CacheAside(60))

    async def price(sku: str) -> int:
        return 42

    with pytest.raises(ConfigurationError, match="acall"):
        pipeline.call(price, "a")  # type: ignore[arg-type]
    assert asyncio.run(pipeline.acall(price, "a")) == 42  # nothing was stored


def test_call_with_a_generator_function_never_poisons_the_cache() -> None:
    pipeline = Pipeline(CacheAside(60))

    def rows(n: int) -> Any:
        yield from range(n)

    with pytest.raises(ConfigurationError, match="generator"):
        pipeline.call(rows, 3)

    def listed(n: int) -> list[int]:
        return list(range(n))

    assert pipeline.call(listed, 3) == [0, 1, 2]


def test_cached_rejects_unknown_options_with_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="bogus") as info:
        cached(ttl=30, bogus=1)
    assert info.value.parameter == "bogus"
    assert "negative_ttl" in str(info.value)  # lists the valid options


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_on_refuses_base_exceptions_that_are_never_handled(kind: type[BaseException]) -> None:
    with pytest.raises(ConfigurationError, match=kind.__name__):
        Retry(on=kind)
    with pytest.raises(ConfigurationError, match=kind.__name__):
        Retry(on=(ValueError, kind))
    Retry(on=(ValueError, OSError))  # Exception subclasses stay fine


def test_fallback_without_value_or_handler_says_which() -> None:
    with pytest.raises(ConfigurationError, match="neither was given"):
        Fallback(on=ValueError)
    with pytest.raises(ConfigurationError, match="both were given"):
        Fallback(on=ValueError, value=1, handler=lambda outcome, ctx: 2)
    assert Fallback(on=ValueError, value=None).value is None  # None is a valid value


@pytest.mark.parametrize("burst", [0, 0.5, -1, float("nan"), float("inf"), True, "2"])
def test_rate_limiter_burst_has_one_expectation(burst: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"a finite number >= 1"):
        RateLimiter(1.0, burst)


def test_call_names_a_coroutine_from_a_plain_function_accurately() -> None:
    async def work() -> int:
        return 1

    with pytest.raises(ConfigurationError, match="coroutine from") as info:
        Pipeline(Retry(on=ValueError)).call(lambda: work())
    assert "coroutine function" not in str(info.value)
