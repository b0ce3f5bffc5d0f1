"""Fallback: value, sync/async handler, outcome and context, never on cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from buttress import (
    ConfigurationError,
    Context,
    Fallback,
    Outcome,
    Pipeline,
    on_result,
)
from buttress.events import FallbackUsed
from buttress.testing import RecordingListener


def boom() -> int:
    raise ConnectionError("down")


def test_value_replaces_handled_exception() -> None:
    assert Pipeline(Fallback(on=ConnectionError, value=-1)).call(boom) == -1


def test_unhandled_exception_propagates() -> None:
    with pytest.raises(ConnectionError):
        Pipeline(Fallback(on=KeyError, value=-1)).call(boom)


def test_handler_receives_outcome_and_context() -> None:
    seen: list[Any] = []

    def handler(outcome: Outcome[Any], ctx: Context) -> str:
        seen.append((outcome, ctx))
        return "cached"

    assert Pipeline(Fallback(on=ConnectionError, handler=handler), name="p").call(boom) == "cached"
    outcome, ctx = seen[0]
    assert isinstance(outcome.exception, ConnectionError)
    assert ctx.operation_key == "p"


def test_result_handle() -> None:
    p = Pipeline(Fallback(on=on_result(lambda r: r is None), value="default"))
    assert p.call(lambda: None) == "default"
    assert p.call(lambda: "real") == "real"


def test_event_emitted() -> None:
    events = RecordingListener()
    Pipeline(Fallback(on=ConnectionError, value=0), listeners=[events]).call(boom)
    (event,) = events.of_type(FallbackUsed)
    assert event.error_type == "ConnectionError"


async def test_async_handler() -> None:
    async def handler(outcome: Outcome[Any], ctx: Context) -> str:
        await asyncio.sleep(0)
        return "async-fallback"

    async def aboom() -> str:
        raise ConnectionError

    p = Pipeline(Fallback(on=ConnectionError, handler=handler))
    assert await p.acall(aboom) == "async-fallback"


def test_async_handler_refused_for_sync_calls() -> None:
    async def handler(outcome: Outcome[Any], ctx: Context) -> str:
        return "x"  # pragma: no cover

    p = Pipeline(Fallback(on=ConnectionError, handler=handler))
    with pytest.raises(ConfigurationError, match="async handler"):
        p.call(boom)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(0), asyncio.CancelledError()])
def test_never_replaces_base_exceptions(exc: BaseException) -> None:
    def raise_it() -> None:
        raise exc

    with pytest.raises(type(exc)):
        Pipeline(Fallback(on=BaseException, value=1)).call(raise_it)


def test_exactly_one_of_value_and_handler() -> None:
    with pytest.raises(ConfigurationError):
        Fallback(on=KeyError)
    with pytest.raises(ConfigurationError):
        Fallback(on=KeyError, value=1, handler=lambda o, c: 2)
    with pytest.raises(ConfigurationError) as info:
        Fallback(on=KeyError, handler="nope")  # type: ignore[arg-type]
    assert info.value.parameter == "handler"
