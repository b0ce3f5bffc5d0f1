"""Clocks: where time comes from. Monotonic seconds, never wall time for durations.

`SystemClock` reads `time.monotonic`; `ManualClock` (re-exported by `buttress.testing`)
moves only when told to and runs timers registered on it, so every timing behaviour can
be tested exactly.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock", "TimerHandle"]


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time in seconds, and a way to block for a while.

    Implementations: `SystemClock` (the default), `buttress.testing.ManualClock`, and the
    lab's virtual clock.
    """

    def now(self) -> float:
        """Monotonic time in seconds. Only differences between readings are meaningful."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` (used by the sync runtime only)."""
        ...


class SystemClock:
    """The process's monotonic clock (`time.monotonic`) and blocking `time.sleep`."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class TimerHandle:
    """A timer registered on a `ManualClock`; `cancel()` stops it from firing."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Prevent the callback from running. Idempotent."""
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to, for exact tests.

    ``sleep(d)`` advances the clock by ``d`` instead of blocking, so a sync retry with
    backoff finishes at once and the clock shows exactly how long it waited. Timers
    registered with `call_at` fire, in order, as `advance` passes them; the asyncio runtime
    uses them for `Timeout` when a pipeline runs on a manual clock.

    Args:
        start: Initial reading in seconds (default 0.0).

    Example:
        >>> clock = ManualClock()
        >>> clock.advance(1.5)
        >>> clock.now()
        1.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self.sleeps: list[float] = []
        """Every duration passed to `sleep` or `asleep`, in order (for assertions)."""

    def now(self) -> float:
        """Current reading in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), firing every timer that falls due.

        Raises:
            ValueError: ``seconds`` is negative or NaN.
        """
        if not seconds >= 0:
            raise ValueError(f"ManualClock.advance: seconds must be >= 0, got {seconds!r}")
        self.set(self._now + seconds)

    def set(self, when: float) -> None:
        """Move time forward to ``when``, firing due timers in deadline order.

        Raises:
            ValueError: ``when`` is earlier than the current reading (monotonic time).
        """
        if when < self._now:
            raise ValueError(f"ManualClock.set: time cannot go backwards ({when} < {self._now})")
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > when:
                    break
                due, _, handle = heapq.heappop(self._timers)
                self._now = max(self._now, due)
            if not handle.cancelled:
                handle.callback()
        self._now = when

    def sleep(self, seconds: float) -> None:
        """Record ``seconds`` and advance the clock by it (never blocks)."""
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    def next_timer(self) -> float | None:
        """When the earliest pending (not cancelled) timer fires, or ``None``."""
        with self._lock:
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            return self._timers[0][0] if self._timers else None

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` when the clock reaches ``when`` (seconds). Returns a handle."""
        handle = TimerHandle(when, callback)
        with self._lock:
            heapq.heappush(self._timers, (when, next(self._seq), handle))
        return handle

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"
