"""trio runtime (the ``trio`` extra): cancel scopes and trio's sleep."""

from __future__ import annotations

from typing import Any

from .._core.clock import SYSTEM_CLOCK, Clock

try:
    import trio
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "buttress needs trio to run under trio: pip install 'buttress[trio]'"
    ) from exc

__all__ = ["TrioRuntime"]


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
