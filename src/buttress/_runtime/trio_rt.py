"""trio runtime (the ``trio`` extra): cancel scopes and trio's sleep."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from .._core.clock import SYSTEM_CLOCK, Clock, ManualClock

try:
    import trio
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "buttress needs trio to run under trio: pip install 'buttress[trio]'"
    ) from exc

__all__ = ["TrioRace", "TrioRuntime", "TrioWaiter"]


class TrioWaiter:
    """`AsyncWaiter` for trio: a `trio.Event` set by `wake`.

    From a foreign thread, `wake` goes through the run's `TrioToken` (a finished run makes
    it a no-op). The deadline is a ``move_on_at`` scope on trio's clock, or a `ManualClock`
    timer when the pipeline runs on a manual clock.
    """

    __slots__ = ("_clock", "_event", "_thread", "_token", "woken")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        self.woken = False

    def _signal(self) -> None:
        if threading.get_ident() == self._thread:
            self._event.set()
        else:
            try:
                self._token.run_sync_soon(self._event.set)
            except trio.RunFinishedError:
                pass

    def wake(self) -> None:
        """Wake the waiting task (any thread may call this; idempotent)."""
        if not self.woken:
            self.woken = True
            self._signal()

    async def wait(self, deadline: float | None) -> bool:
        """Suspend until woken (``True``) or until the clock passes ``deadline`` (``False``)."""
        if self.woken:
            return True
        event = self._event
        if deadline is None:
            await event.wait()
            return True
        clock = self._clock
        remaining = deadline - clock.now()
        if remaining <= 0:
            return self.woken
        if isinstance(clock, ManualClock):
            timer = clock.call_at(deadline, self._signal)
            try:
                await event.wait()
            finally:
                timer.cancel()
        else:
            with trio.move_on_at(trio.current_time() + remaining):
                await event.wait()
        return self.woken


class TrioRuntime:
    """trio runtime. Deadlines (pipeline clock seconds) are translated to trio's clock."""

    __slots__ = ("clock",)
    name = "trio"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def _to_trio(self, deadline: float) -> float:
        return float(trio.current_time()) + (deadline - self.clock.now())

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` on trio's clock (with a manual pipeline clock, advance it too)."""
        clock = self.clock
        if clock is not SYSTEM_CLOCK and hasattr(clock, "advance"):
            clock.sleep(max(0.0, seconds))
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep(max(0.0, seconds))

    def new_event(self) -> trio.Event:
        """A fresh `trio.Event` (see `AsyncRuntime.new_event`)."""
        return trio.Event()

    def waiter(self) -> TrioWaiter:
        """A new `TrioWaiter` for the current task (see `buttress._runtime.base`)."""
        return TrioWaiter(self.clock)

    def enter_deadline(self, deadline: float) -> Any:
        """Open a `trio.CancelScope` for ``deadline``.

        With a `ManualClock` the scope is cancelled by a clock timer, so the deadline
        follows virtual time (as on asyncio); otherwise the deadline is translated to
        trio's clock.
        """
        clock = self.clock
        if isinstance(clock, ManualClock):
            return self._enter_manual(clock, deadline)
        scope = trio.CancelScope(deadline=self._to_trio(deadline))
        scope.__enter__()
        return scope

    @staticmethod
    def _enter_manual(clock: ManualClock, deadline: float) -> tuple[trio.CancelScope, Any]:
        scope = trio.CancelScope()
        scope.__enter__()
        token = trio.lowlevel.current_trio_token()
        thread = threading.get_ident()

        def fire() -> None:  # runs in whichever thread advances the clock
            if threading.get_ident() == thread:
                scope.cancel()
            else:
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass

        timer = clock.call_at(deadline, fire)
        if clock.now() >= deadline:
            scope.cancel()
        return (scope, timer)

    def exit_deadline(self, handle: Any, exc: BaseException | None) -> bool:
        """Close the scope; ``True`` when it absorbed its own cancellation."""
        if isinstance(handle, tuple):
            scope, timer = handle
            timer.cancel()
        else:
            scope = handle
        if exc is None:
            scope.__exit__(None, None, None)
            return False
        return bool(scope.__exit__(type(exc), exc, exc.__traceback__))

    # -- racing attempts (hedging) ---------------------------------------------------------
    def race(self) -> TrioRace:
        """A new `TrioRace` on this runtime's clock (see `AsyncRace`)."""
        return TrioRace(self.clock)


# -- racing attempts (hedging) ---------------------------------------------------------------


class TrioRace:
    """`AsyncRace` on trio: a nursery whose cancel scope ends the losers.

    Leaving the race cancels the nursery's own scope, which encloses exactly the attempts
    (never the owner's code around the ``async with``), and waits for them. An inner
    `Timeout` scope inside an attempt absorbs only its own cancellation; a cancellation
    coming from outside (an enclosing deadline) propagates out of the attempts and the
    nursery as trio requires.
    """

    __slots__ = ("_clock", "_closed", "_done", "_event", "_manager", "_nursery", "_started")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._manager: Any = None
        self._nursery: Any = None
        self._started = 0
        self._done: deque[tuple[int, Any, BaseException | None]] = deque()
        self._event: trio.Event | None = None
        self._closed = False

    async def __aenter__(self) -> TrioRace:
        self._manager = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._done.clear()
        nursery = self._nursery
        if nursery.child_tasks:
            nursery.cancel_scope.cancel()
        # Close the nursery as if its body had ended normally, so an exception leaving
        # the block propagates as itself (not wrapped in an exception group).
        await self._manager.__aexit__(None, None, None)

    def start(self, attempt: Callable[[], Awaitable[Any]]) -> int:
        index = self._started
        self._started += 1
        self._nursery.start_soon(self._run, index, attempt)
        return index

    async def _run(self, index: int, attempt: Callable[[], Awaitable[Any]]) -> None:
        if self._closed:  # lost before it ever ran
            return
        try:
            value = await attempt()
        except trio.Cancelled:
            raise  # the nursery absorbs ours; an outer one must propagate
        except BaseException as exc:  # reported to the owner, never handled here
            self._report((index, None, exc))
            return
        self._report((index, value, None))

    def _report(self, item: tuple[int, Any, BaseException | None]) -> None:
        if self._closed:
            return
        self._done.append(item)
        event = self._event
        if event is not None:
            event.set()

    async def wait(self, deadline: float | None) -> tuple[int, Any, BaseException | None] | None:
        done = self._done
        if not done:
            clock = self._clock
            if deadline is None:
                if len(self._nursery.child_tasks) == 0:
                    raise RuntimeError("TrioRace.wait: no attempt left to wait for")
            elif clock.now() >= deadline:
                return None
            event = self._event = trio.Event()
            try:
                if deadline is None:
                    await event.wait()
                elif clock is SYSTEM_CLOCK or not callable(getattr(clock, "call_at", None)):
                    with trio.move_on_at(trio.current_time() + (deadline - clock.now())):
                        await event.wait()
                else:  # a manual clock: wake when it is advanced past the deadline
                    token = trio.lowlevel.current_trio_token()
                    handle = clock.call_at(deadline, lambda: token.run_sync_soon(event.set))  # type: ignore[attr-defined]
                    try:
                        if clock.now() < deadline:
                            await event.wait()
                    finally:
                        handle.cancel()
            finally:
                self._event = None
            if not done:
                return None
        return done.popleft()
