"""Runtime protocols that strategy flows program against."""

from __future__ import annotations

from typing import Any, Protocol

from .._core.clock import Clock

__all__ = ["AsyncRuntime", "SyncRuntime"]


class SyncRuntime(Protocol):
    """Blocking runtime used by sync pipelines."""

    clock: Clock

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` on the pipeline clock."""
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
