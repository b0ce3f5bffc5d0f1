"""trio runtime (the ``trio`` extra): cancel scopes and trio's sleep."""

from __future__ import annotations

import threading
from typing import Any

from .._core.clock import SYSTEM_CLOCK, Clock, ManualClock

try:
    import trio
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "buttress needs trio to run under trio: pip install 'buttress[trio]'"
    ) from exc

__all__ = ["TrioRuntime", "TrioWaiter"]


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
        """Open a `trio.CancelScope` with ``deadline`` (translated to trio's clock)."""
        scope = trio.CancelScope(deadline=self._to_trio(deadline))
        scope.__enter__()
        return scope

    def exit_deadline(self, handle: Any, exc: BaseException | None) -> bool:
        """Close the scope; ``True`` when it absorbed its own cancellation."""
        scope: trio.CancelScope = handle
        if exc is None:
            scope.__exit__(None, None, None)
            return False
        return bool(scope.__exit__(type(exc), exc, exc.__traceback__))
