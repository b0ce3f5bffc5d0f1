"""The blocking runtime: sleeps and waits on the pipeline clock."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .._core.clock import Clock, ManualClock

__all__ = ["BackgroundLoop", "SyncRuntime", "ThreadWaiter"]

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


class BackgroundLoop:
    """Run ``step()`` repeatedly in a daemon thread until `stop` (for background maintenance
    such as health checks and membership refreshes).

    ``step()`` does one round of work and returns the seconds to wait before the next round
    (real time: the wait is a `threading.Event` wait, so `stop` interrupts it at once). An
    `Exception` raised by ``step`` is reported through ``on_error`` and the loop waits
    ``error_delay`` seconds before the next round; it never dies silently.

    Args:
        step: The round of work.
        name: Thread name.
        on_error: Called with the exception when ``step`` raises.
        error_delay: Seconds to wait after a failed round (default 1.0).
    """

    __slots__ = ("_error_delay", "_on_error", "_step", "_stop", "_thread")

    def __init__(
        self,
        step: Callable[[], float],
        *,
        name: str,
        on_error: Callable[[Exception], None] | None = None,
        error_delay: float = 1.0,
    ) -> None:
        self._step = step
        self._on_error = on_error
        self._error_delay = error_delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                wait = self._step()
            except Exception as exc:
                if self._on_error is not None:
                    self._on_error(exc)
                wait = self._error_delay
            if wait > 0:
                stop.wait(wait)

    @property
    def running(self) -> bool:
        """``True`` until the thread has stopped."""
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the loop to stop and wait up to ``timeout`` seconds for the thread to end
        (a round in progress finishes first)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
