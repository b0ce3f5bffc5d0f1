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

from typing import Any, Protocol

from .._core.clock import Clock

__all__ = ["AsyncRuntime", "AsyncWaiter", "SyncRuntime", "SyncWaiter"]


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
