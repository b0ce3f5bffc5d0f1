"""A `Timeout` under an earlier *advisory* deadline (`scope(timeout=...)`, which nothing
enforces) must still enforce its own deadline; an earlier enclosing `Timeout` still wins
and reports the expiry itself."""

from __future__ import annotations

import asyncio

import pytest

from buttress import Pipeline, Timeout, TimeoutRejectedError, current_context, scope
from buttress.testing import ManualClock, autojump


async def _hang() -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize("form", ["acall", "decorator"])
async def test_async_timeout_enforced_under_earlier_scope_deadline(form: str) -> None:
    clock = ManualClock()
    p = Pipeline(Timeout(5.0), clock=clock)
    call = p(_hang) if form == "decorator" else (lambda: p.acall(_hang))
    with scope(timeout=1.0, clock=clock), pytest.raises(TimeoutRejectedError) as info:
        await autojump(clock, call())
    assert info.value.timeout == 5.0
    assert clock.now() == 5.0  # its own deadline; the scope's is advisory
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_async_context_still_shows_the_earlier_deadline() -> None:
    clock = ManualClock()
    p = Pipeline(Timeout(5.0), clock=clock)

    async def read() -> float | None:
        ctx = current_context()
        assert ctx is not None
        return ctx.deadline

    with scope(timeout=1.0, clock=clock):
        assert await p.acall(read) == 1.0
        assert await p(read)() == 1.0


async def test_async_enclosing_timeout_still_reports_its_own_expiry() -> None:
    clock = ManualClock()
    inner = Pipeline(Timeout(5.0), clock=clock, name="inner")
    outer = Pipeline(Timeout(1.0), clock=clock, name="outer")

    async def nested() -> None:
        await inner.acall(_hang)

    with pytest.raises(TimeoutRejectedError) as info:
        await autojump(clock, outer.acall(nested))
    assert info.value.timeout == 1.0
    assert clock.now() == 1.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


def test_sync_cooperative_checks_own_deadline_under_earlier_scope() -> None:
    clock = ManualClock()
    p = Pipeline(Timeout(5.0), clock=clock)

    def slow(seconds: float) -> str:
        clock.advance(seconds)
        return "late"

    with scope(timeout=1.0, clock=clock):
        assert p.call(slow, 2.0) == "late"  # past the advisory deadline, within its own
        with pytest.raises(TimeoutRejectedError):
            p.call(slow, 6.0)
