"""The environment a pipeline hands to its strategies when it builds them.

It carries the pipeline's name, clock, random source and listeners, and knows how to
find the async runtime of the current call (asyncio, trio, or the lab's simulator).
Listeners installed globally with `add_listener` are folded into every environment's
``listeners`` tuple, so strategies test a single attribute before building an event.
"""

from __future__ import annotations

import logging
import random as _random
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._runtime.detect import RUNTIME_OVERRIDE as _override
from .._runtime.detect import detect_async_runtime as _detect
from .clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from .._runtime.base import AsyncRuntime, SyncRuntime
    from ..events import Event

__all__ = ["Env", "Listener", "add_listener", "remove_listener"]

Listener = Callable[["Event"], None]
"""Anything that accepts an `Event`. Must be fast and must not raise (if it does, the
error is logged once per listener and the call's result is unaffected)."""

_modules = sys.modules
_log = logging.getLogger("buttress")
_global_listeners: tuple[Listener, ...] = ()
_envs: weakref.WeakSet[Env] = weakref.WeakSet()
_lock = threading.Lock()
_reported: set[int] = set()


def add_listener(listener: Listener) -> None:
    """Install ``listener`` for every pipeline, existing and future.

    Raises:
        TypeError: ``listener`` is not callable.
    """
    global _global_listeners
    if not callable(listener):
        raise TypeError(f"listener must be callable, got {listener!r}")
    with _lock:
        if listener not in _global_listeners:
            _global_listeners = (*_global_listeners, listener)
        for env in list(_envs):
            env._refresh()


def remove_listener(listener: Listener) -> None:
    """Remove a listener installed with `add_listener` (no error if absent)."""
    global _global_listeners
    with _lock:
        _global_listeners = tuple(x for x in _global_listeners if x is not listener)
        for env in list(_envs):
            env._refresh()


class Env:
    """What a strategy sees of its pipeline (internal API for strategy authors).

    Attributes:
        name: The pipeline's name.
        clock: The pipeline's `Clock`.
        random: The pipeline's `random.Random` (seedable); draw jitter and rates from it.
        listeners: Pipeline listeners plus global ones; empty tuple means "emit nothing".
        runtime: An explicit runtime forced by the pipeline, or ``None`` to detect.
    """

    __slots__ = (
        "__weakref__",
        "_asyncio_rt",
        "_on_change",
        "_own",
        "_sync_rt",
        "clock",
        "listeners",
        "name",
        "random",
        "runtime",
    )

    def __init__(
        self,
        name: str,
        clock: Clock | None = None,
        random: _random.Random | None = None,
        listeners: Iterable[Listener] = (),
        runtime: Any = None,
    ) -> None:
        self.name = name
        self.clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self.random = random if random is not None else _random.Random()
        self._own = tuple(listeners)
        self.runtime = runtime
        self._sync_rt: SyncRuntime | None = None
        self._asyncio_rt: AsyncRuntime | None = None
        self.listeners: tuple[Listener, ...] = ()
        self._on_change: Callable[[], None] | None = None
        with _lock:
            _envs.add(self)
            self._refresh()

    def _refresh(self) -> None:
        self.listeners = self._own + tuple(x for x in _global_listeners if x not in self._own)
        if self._on_change is not None:
            self._on_change()  # the pipeline re-wraps its chains (telemetry call step)

    def now(self) -> float:
        """The clock's reading in seconds."""
        return self.clock.now()

    def emit(self, event: Event, listeners: tuple[Listener, ...] | None = None) -> None:
        """Deliver ``event`` to every listener; a raising listener is logged once.

        Args:
            event: The event.
            listeners: Deliver to these instead of the current ``listeners`` (the pipeline's
                call step sends `CallCompleted` to the listeners that saw `CallStarted`, so a
                listener removed mid-call still closes its span).
        """
        for listener in self.listeners if listeners is None else listeners:
            try:
                listener(event)
            except Exception:
                key = id(listener)
                if key not in _reported:
                    _reported.add(key)
                    _log.exception(
                        "buttress listener %r raised; the call is unaffected "
                        "(reported once per listener)",
                        listener,
                    )

    def sync_runtime(self) -> SyncRuntime:
        """The runtime for blocking code on this pipeline's clock."""
        rt = self._sync_rt
        if rt is None:
            from .._runtime.sync import SyncRuntime

            rt = self._sync_rt = SyncRuntime(self.clock)
        return rt

    def async_runtime(self) -> AsyncRuntime:
        """The runtime of the running async framework (lab simulator, asyncio or trio).

        Raises:
            RuntimeError: Called outside any supported event loop.
        """
        if self.runtime is not None:
            return self.runtime  # type: ignore[no-any-return]
        # Inlined `detect_async_runtime` for the common asyncio case (one Python call less,
        # about 60 ns, on every async Timeout); the other runtimes go through it.
        if _override.get() is None and "trio" not in _modules:
            rt = self._asyncio_rt
            if rt is not None:
                return rt
        return _detect(self)
