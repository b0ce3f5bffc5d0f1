"""Helpers for tests: a manual clock and a listener that records events.

Example:
    >>> from buttress import Pipeline, Retry, backoff
    >>> from buttress.testing import ManualClock, RecordingListener
    >>> clock, events = ManualClock(), RecordingListener()
    >>> p = Pipeline(Retry(on=OSError, backoff=backoff.constant(2.0)), clock=clock,
    ...              listeners=[events])
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TypeVar

from .._core.clock import ManualClock, TimerHandle
from ..events import Event

__all__ = ["ManualClock", "RecordingListener", "TimerHandle"]

E = TypeVar("E", bound=Event)


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
