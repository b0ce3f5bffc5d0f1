"""The blocking runtime: sleeps and waits on the pipeline clock; races attempts on threads."""

from __future__ import annotations

import contextvars
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .._core.clock import SYSTEM_CLOCK, Clock, ManualClock

__all__ = ["BackgroundLoop", "SyncRace", "SyncRuntime", "ThreadWaiter"]

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

    # -- racing attempts (hedging) ---------------------------------------------------------
    def race(self) -> SyncRace:
        """A new `SyncRace` on this runtime's clock (see `buttress._runtime.base.SyncRace`)."""
        return SyncRace(self.clock)


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


# -- racing attempts (hedging) ---------------------------------------------------------------


class _Workers:
    """Daemon worker threads shared by every `SyncRace` in the process.

    A job goes to an idle worker if there is one, else to a new thread: a job never
    queues behind another (a hedge that waits for a thread would defeat its purpose), so
    the number of threads equals the number of attempts running at once. Idle workers
    exit after ``idle_timeout`` seconds of real time. Threads are daemons, so an abandoned
    attempt that never returns does not block interpreter exit.

    Invariant (under ``_lock``): workers waiting for a job == ``_idle`` + jobs queued.
    """

    idle_timeout = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self.threads = 0
        """Worker threads alive (for tests and diagnostics)."""

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                self._jobs.put(job)
                return
            self.threads += 1
        # the job goes in a list the worker empties: `threading.Thread` keeps its ``args``
        # until the thread exits, which would keep the first job (an attempt's function,
        # arguments and execution record) alive for as long as the worker lives
        thread = threading.Thread(
            target=self._work, args=([job],), name="buttress-race-worker", daemon=True
        )
        thread.start()

    def _work(self, first: list[Callable[[], None]]) -> None:
        job: Callable[[], None] | None = first.pop()
        while job is not None:
            job()
            job = None
            with self._lock:
                self._idle += 1
            while job is None:
                try:
                    job = self._jobs.get(timeout=self.idle_timeout)
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0:  # no job was promised to us: leave
                            self._idle -= 1
                            self.threads -= 1
                            return

    def _after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]


_WORKERS = _Workers()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKERS._after_fork)


class SyncRace:
    """`SyncRace` over the shared worker threads (see `buttress._runtime.base.SyncRace`).

    Cost per attempt: handing a job to a worker thread (a new thread, about 60-100 us,
    only when none is idle) plus a `threading.Condition` notification; `wait` blocks on
    the condition. With a `ManualClock`, a ``wait`` deadline is a clock timer: the waiting
    thread wakes when another thread advances the clock past it.
    """

    __slots__ = ("_clock", "_closed", "_cond", "_done", "_running", "_started")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._done: deque[tuple[int, Any, BaseException | None]] = deque()
        self._started = 0
        self._running = 0
        self._closed = False

    def __enter__(self) -> SyncRace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._cond:
            self._closed = True
            self._done.clear()

    def start(self, attempt: Callable[[], Any]) -> int:
        index = self._started
        self._started += 1
        context = contextvars.copy_context()
        cond = self._cond
        done = self._done

        def job() -> None:
            try:
                item: tuple[int, Any, BaseException | None] = (index, context.run(attempt), None)
            except BaseException as exc:  # reported to the waiting thread
                item = (index, None, exc)
            try:
                with cond:
                    self._running -= 1
                    if not self._closed:
                        done.append(item)
                        cond.notify_all()
            finally:
                # the reported exception's traceback holds this frame: no cycle through it
                item = None  # type: ignore[assignment]

        with cond:
            self._running += 1
        _WORKERS.submit(job)
        return index

    def wait(self, deadline: float | None) -> tuple[int, Any, BaseException | None] | None:
        clock = self._clock
        cond = self._cond
        done = self._done
        with cond:
            if done:
                return done.popleft()
            if deadline is None:
                if self._running == 0:
                    raise RuntimeError("SyncRace.wait: no attempt left to wait for")
                while not done:
                    cond.wait()
                return done.popleft()
            if clock.now() >= deadline:
                return None
            if clock is SYSTEM_CLOCK:
                while not done:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0.0:
                        return None
                    cond.wait(remaining)
                return done.popleft()
        if callable(getattr(clock, "call_at", None)):
            return self._wait_manual(deadline)
        return self._wait_translated(deadline)

    def _wait_manual(self, deadline: float) -> tuple[int, Any, BaseException | None] | None:
        clock: Any = self._clock
        cond = self._cond
        done = self._done
        fired = [False]

        def fire() -> None:
            with cond:
                fired[0] = True
                cond.notify_all()

        handle = clock.call_at(deadline, fire)
        try:
            with cond:
                if clock.now() >= deadline:  # advanced while registering
                    fired[0] = True
                while not done and not fired[0]:
                    cond.wait()
                return done.popleft() if done else None
        finally:
            handle.cancel()

    def _wait_translated(self, deadline: float) -> tuple[int, Any, BaseException | None] | None:
        # another clock: wait the remaining time in real seconds
        cond = self._cond
        done = self._done
        until = time.monotonic() + max(0.0, deadline - self._clock.now())
        with cond:
            while not done:
                remaining = until - time.monotonic()
                if remaining <= 0.0:
                    return None
                cond.wait(remaining)
            return done.popleft()
