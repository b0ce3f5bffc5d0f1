"""Smoke tests of the core: one behaviour per strategy, sync and async."""

from __future__ import annotations

import asyncio

import pytest

from buttress import (
    ConfigurationError,
    Fallback,
    Pipeline,
    Retry,
    Timeout,
    TimeoutRejectedError,
    backoff,
    current_context,
)
from buttress.testing import ManualClock, RecordingListener


def test_retry_retries_until_success(clock: ManualClock, events: RecordingListener) -> None:
    calls = []

    def flaky() -> int:
        calls.append(current_context().attempt)  # type: ignore[union-attr]
        if len(calls) < 3:
            raise ConnectionError("reset")
        return 42

    p = Pipeline(
        Retry(on=ConnectionError, backoff=backoff.constant(1.0)), clock=clock, listeners=[events]
    )
    assert p.call(flaky) == 42
    assert calls == [1, 2, 3]
    assert clock.now() == 2.0
    assert events.kinds().count("retry.scheduled") == 2


def test_async_timeout_cancels_the_call() -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        with pytest.raises(TimeoutRejectedError) as info:
            await Pipeline(Timeout(0.01)).acall(hang)
        assert isinstance(info.value.__cause__, asyncio.CancelledError)

    asyncio.run(main())


def test_fallback_value() -> None:
    def boom() -> int:
        raise KeyError("x")

    assert Pipeline(Fallback(on=KeyError, value=7)).call(boom) == 7


def test_generator_function_is_refused() -> None:
    def gen():  # type: ignore[no-untyped-def]
        yield 1

    with pytest.raises(ConfigurationError, match="generator"):
        Pipeline(Retry(on=OSError))(gen)
