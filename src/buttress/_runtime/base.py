"""Runtime protocols that strategy flows program against.

Waiting primitive (used by `Bulkhead`, available to any strategy)
-----------------------------------------------------------------
A *waiter* is a one-shot wake-up signal owned by exactly one waiting thread or task. The
FIFO queue, the admission decision and the "who owns the slot" bookkeeping stay in the
strategy's own state, under its own lock; the runtime only supplies the blocking part.
That keeps the interface small enough for the lab's simulator to implement in a few lines.

Contract, identical for `SyncWaiter` and `AsyncWaiter`:

* ``runtime.waiter()`` creates a fresh, un-woken waiter. Creating one must not block or
  yield. An async waiter is created by (and belongs to) the task that will wait on it.
* ``waiter.wake()`` marks it woken. It never blocks, never raises, is idempotent, may be
  called from **any thread** (including one that runs no event loop, or another event
  loop), and may be called **before** ``wait`` starts (``wait`` then returns ``True`` at
  once). Waking a waiter whose task has gone (cancelled, loop closed) is a silent no-op.
* ``waiter.wait(deadline)`` suspends the caller until it is woken or until the pipeline
  clock reaches ``deadline`` (absolute seconds of the runtime's ``clock``; ``None`` means
  no deadline). It returns ``True`` when woken and ``False`` when the deadline passed
  first (a deadline already in the past returns ``False`` without suspending, unless the
  waiter was woken already). It is called at most once per waiter.
* When ``wake()`` and the deadline happen at (nearly) the same moment, either answer may
  be returned. Callers therefore record the *meaning* of the wake-up (e.g. "slot granted")
  in their own locked state before calling ``wake()``, and after ``wait`` returns
  (``True``, ``False`` or by raising) they re-check that state under their lock. That is
  how the bulkhead hands on a slot granted to a waiter that timed out or was cancelled at
  the same moment.
* Cancellation (asyncio ``CancelledError``, trio ``Cancelled``, ``KeyboardInterrupt``)
  propagates out of ``wait`` unchanged; the waiter is then dead and later ``wake()`` calls
  are no-ops. ``wait`` never swallows a cancellation and never leaves a timer behind.
* With a `ManualClock`, deadlines are clock timers: the wait ends when some other thread
  or task advances the clock past ``deadline`` (a sync waiter on a manual clock does not
  advance the clock itself, unlike ``sleep``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

from .._core.clock import Clock

__all__ = [
    "AsyncRace",
    "AsyncRuntime",
    "AsyncWaiter",
    "Finished",
    "SyncRace",
    "SyncRuntime",
    "SyncWaiter",
]


class SyncWaiter(Protocol):
    """A one-shot wake-up signal for one blocked thread (see the module docs)."""

    def wake(self) -> None:
        """Mark woken; thread-safe, idempotent, never blocks or raises."""
        ...

    def wait(self, deadline: float | None) -> bool:
        """Block until woken (``True``) or until ``deadline`` passes (``False``)."""
        ...


class AsyncWaiter(Protocol):
    """A one-shot wake-up signal for one task (see the module docs)."""

    def wake(self) -> None:
        """Mark woken; callable from any thread, idempotent, never blocks or raises."""
        ...

    async def wait(self, deadline: float | None) -> bool:
        """Suspend until woken (``True``) or until ``deadline`` passes (``False``)."""
        ...


class SyncRuntime(Protocol):
    """Blocking runtime used by sync pipelines."""

    clock: Clock

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` on the pipeline clock."""
        ...

    def waiter(self) -> SyncWaiter:
        """A new un-woken `SyncWaiter` for the calling thread."""

    # -- racing attempts (hedging) ---------------------------------------------------------
    def race(self) -> SyncRace:
        """A new `SyncRace`: run attempts on worker threads and wait for the first ones."""
        ...


class AsyncRuntime(Protocol):
    """What an async strategy flow may await. Implemented for asyncio, trio and the lab.

    Every deadline is absolute, in the pipeline clock's seconds.
    """

    name: str
    clock: Clock

    async def sleep(self, seconds: float) -> None:
        """Suspend the current task for ``seconds`` (0 still yields once)."""
        ...

    def new_event(self) -> Any:
        """A one-shot event for this runtime: ``set()``, ``is_set()`` and ``await wait()``.

        Used by single-flight waiters (cache-aside); asyncio gives `asyncio.Event`, trio
        `trio.Event`. Not thread-safe: set it from the task's own event loop.
        """
        ...

    def enter_deadline(self, deadline: float) -> Any:
        """Start cancelling the current task at ``deadline``; returns a handle.

        Must be paired with `exit_deadline` in the same task, like a cancel scope.
        """
        ...

    def exit_deadline(self, handle: Any, exc: BaseException | None) -> bool:
        """Close the deadline opened by `enter_deadline`.

        Args:
            handle: What `enter_deadline` returned.
            exc: The exception leaving the guarded code, or ``None`` on success.

        Returns:
            ``True`` when ``exc`` is the cancellation caused by *this* deadline (the caller
            then raises its timeout error from ``exc``); ``False`` otherwise, including for
            an outer cancellation or an enclosing deadline. Never leaves a pending
            cancellation of its own behind.
        """
        ...

    def waiter(self) -> AsyncWaiter:
        """A new un-woken `AsyncWaiter` owned by the current task (see the module docs).

        Raises:
            RuntimeError: Called outside a running task of this runtime.
        """
        ...

    # -- racing attempts (hedging) ---------------------------------------------------------
    def race(self) -> AsyncRace:
        """A new `AsyncRace`, to be entered with ``async with`` in the current task."""
        ...


# -- racing attempts (hedging) -------------------------------------------------------------
# Kept in its own section: the waiting primitives (semaphores, events) live elsewhere.

Finished = tuple[int, Any, BaseException | None]
"""One finished attempt, as `AsyncRace.wait` / `SyncRace.wait` report it:
``(index, value, error)``. ``index`` is what `start` returned; ``error`` is ``None`` for a
returned ``value``, else whatever the attempt raised (any `BaseException`, including a
cancellation the race did not cause itself)."""


class AsyncRace(Protocol):
    """Concurrent attempts owned by one task: the capability `Hedge` needs.

    Use::

        async with runtime.race() as race:
            race.start(attempt)                 # runs concurrently from now on
            finished = await race.wait(deadline)
            ...                                 # decide, maybe start more attempts
        # leaving the block: every attempt still running is cancelled and awaited

    Rules every implementation (asyncio, trio, the lab's simulator) follows:

    * `start` runs ``attempt()`` as a new concurrent task, in a **copy of the contextvars**
      of the task that called `start` (so ``buttress.current_context()`` and the runtime
      override carry over, and a context variable set inside the attempt stays inside it).
      Indexes are 0, 1, 2... in start order. An attempt cancelled before it ever ran never
      calls ``attempt`` at all.
    * `wait` reports each finished attempt exactly once, in completion order.
    * Leaving the ``async with`` block cancels every attempt still running **and waits for
      them to stop** (structured concurrency: nothing outlives the block). Results of
      attempts cancelled that way are never reported. Exceptions are never suppressed,
      and the block itself must not raise an `Exception` (trio would wrap it in an
      exception group): decide inside, raise after the block.
    * A cancellation of the owning task (an enclosing timeout, the caller giving up)
      interrupts `wait` and then cancels the attempts as above.
    * An attempt's own cancellation machinery (an inner `Timeout`) is independent: the
      race cancels an attempt only by leaving the block, and an attempt's inner timeout
      never cancels the race's owner or its siblings.
    """

    async def __aenter__(self) -> AsyncRace:
        """Open the race (trio: opens a nursery)."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Cancel every attempt still running and wait until all have stopped."""
        ...

    def start(self, attempt: Callable[[], Awaitable[Any]]) -> int:
        """Start ``attempt()`` concurrently; returns its index."""
        ...

    async def wait(self, deadline: float | None) -> Finished | None:
        """The next finished attempt, or ``None`` once the clock reaches ``deadline``.

        Args:
            deadline: Absolute time in the pipeline clock's seconds, or ``None`` to wait
                for the next attempt however long it takes. A deadline already passed
                returns ``None`` at once when no finished attempt is waiting.

        Raises:
            RuntimeError: ``deadline`` is ``None`` and no attempt is left to report.
        """
        ...


class SyncRace(Protocol):
    """The blocking counterpart of `AsyncRace`, over worker threads.

    Same rules as `AsyncRace`, except that Python cannot stop a thread: leaving the
    ``with`` block **abandons** the attempts still running. They run to completion in the
    background on their worker threads, their results are dropped, and whatever they hold
    (connections, locks) stays held until they return. The function must therefore be
    safe to call from several threads at once. ``attempt`` runs in a copy of the calling
    thread's contextvars.
    """

    def __enter__(self) -> SyncRace:
        """Open the race."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Abandon every attempt still running (see the class docs)."""
        ...

    def start(self, attempt: Callable[[], Any]) -> int:
        """Start ``attempt()`` on a worker thread; returns its index."""
        ...

    def wait(self, deadline: float | None) -> Finished | None:
        """Block for the next finished attempt, or ``None`` at ``deadline`` (see `AsyncRace`)."""
        ...
