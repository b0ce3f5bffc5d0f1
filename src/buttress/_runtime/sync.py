"""The blocking runtime: sleeps and waits on the pipeline clock."""

from __future__ import annotations

import threading

from .._core.clock import Clock, ManualClock

__all__ = ["SyncRuntime", "ThreadWaiter"]

_TIMEOUT_MAX = threading.TIMEOUT_MAX


class ThreadWaiter:
    """`SyncWaiter` for threads: a pre-acquired `threading.Lock` released by `wake`.

    A lock (not a `threading.Event`/`Condition`) because it is the cheapest blocking
    primitive with a timeout: one allocation, and `wake` is a single ``release``.
    With a `ManualClock` the deadline is a clock timer, so the wait ends when another
    thread advances the clock past it.
    """

    __slots__ = ("_clock", "_lock", "woken")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._lock.acquire()
        self.woken = False

    def wake(self) -> None:
        """Wake the waiting thread (any thread may call this; idempotent)."""
        if not self.woken:
            self.woken = True
            self._signal()

    def _signal(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already released by a concurrent wake or the expiry timer
            pass

    def wait(self, deadline: float | None) -> bool:
        """Block until woken (``True``) or until the clock passes ``deadline`` (``False``)."""
        if self.woken:
            return True
        if deadline is None:
            self._lock.acquire()
            return True
        clock = self._clock
        remaining = deadline - clock.now()
        if remaining <= 0:
            return self.woken
        if isinstance(clock, ManualClock):
            timer = clock.call_at(deadline, self._signal)
            try:
                self._lock.acquire()
            finally:
                timer.cancel()
        else:
            self._lock.acquire(timeout=min(remaining, _TIMEOUT_MAX))
        return self.woken


class SyncRuntime:
    """Blocking runtime over a `Clock` (a `ManualClock` advances instead of blocking)."""

    __slots__ = ("clock",)
    name = "sync"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``; a zero or negative delay returns at once, no syscall."""
        if seconds > 0:
            self.clock.sleep(seconds)

    def waiter(self) -> ThreadWaiter:
        """A new `ThreadWaiter` on this runtime's clock (see `buttress._runtime.base`)."""
        return ThreadWaiter(self.clock)
