"""The blocking runtime: sleeps on the pipeline clock."""

from __future__ import annotations

from .._core.clock import Clock

__all__ = ["SyncRuntime"]


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
