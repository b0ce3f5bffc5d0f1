"""Helpers for tests: a manual clock and a listener that records events.

Example:
    >>> from buttress import Pipeline, Retry, backoff
    >>> from buttress.testing import ManualClock, RecordingListener
    >>> clock, events = ManualClock(), RecordingListener()
    >>> p = Pipeline(Retry(on=OSError, backoff=backoff.constant(2.0)), clock=clock,
    ...              listeners=[events])
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from .._core.clock import ManualClock, TimerHandle
from ..events import Event

__all__ = ["ManualClock", "RecordingListener", "TimerHandle", "autojump"]

E = TypeVar("E", bound=Event)
T = TypeVar("T")


async def autojump(clock: ManualClock, awaitable: Awaitable[T], *, settle: int = 20) -> T:
    """Run ``awaitable`` on asyncio in virtual time: jump the clock to each next timer.

    Whenever the loop has had ``settle`` turns to run everything that is ready, the clock
    jumps to its earliest pending timer (a `Timeout` deadline registered on it); retry
    backoff sleeps on a `ManualClock` advance the clock by themselves. So a pipeline run
    on ``clock`` sees exact times, like trio's ``MockClock(autojump_threshold=0)``.

    Args:
        clock: The pipeline's `ManualClock`.
        awaitable: What to run (for example ``pipeline.acall(fn)``).
        settle: Loop turns to wait before deciding that everything is blocked (default 20).

    Returns:
        The awaitable's result (its exception propagates).

    Raises:
        RuntimeError: Everything is blocked and no timer is pending (a deadlock in virtual
            time; for example a call waiting on an event nobody sets, with no timeout).
    """
    task = asyncio.ensure_future(awaitable)
    try:
        while not task.done():
            for _ in range(settle):
                await asyncio.sleep(0)
                if task.done():
                    break
            else:
                when = clock.next_timer()
                if when is None:
                    raise RuntimeError("autojump: every task is blocked and no timer is pending")
                clock.set(max(when, clock.now()))
        return task.result()
    finally:
        if not task.done():
            task.cancel()


class RecordingListener:
    """A listener that keeps every event it receives, in order (thread-safe).

    Attributes:
        events: The recorded events.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of_type(self, kind: type[E]) -> list[E]:
        """The recorded events that are instances of ``kind``."""
        return [e for e in self.events if isinstance(e, kind)]

    def kinds(self) -> list[str]:
        """The ``kind`` strings of the recorded events, in order."""
        return [e.kind for e in self.events]

    def clear(self) -> None:
        """Forget every recorded event."""
        with self._lock:
            self.events.clear()

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self.events))

    def __len__(self) -> int:
        return len(self.events)
