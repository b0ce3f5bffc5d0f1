"""Find the async runtime of the running call: the lab's simulator, trio or asyncio.

Detection avoids `asyncio.get_running_loop()`, which costs about 220 ns on Python 3.11
(it calls ``getpid()`` for fork safety): the simulator announces itself through a
`ContextVar`, trio through ``trio.lowlevel.in_trio_run()`` (a thread-local check, done only
when trio has been imported), and anything else is asyncio.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .asyncio_rt import AsyncioRuntime

if TYPE_CHECKING:
    from .._core.env import Env
    from .base import AsyncRuntime

__all__ = ["RUNTIME_OVERRIDE", "detect_async_runtime"]

RUNTIME_OVERRIDE: ContextVar[Any] = ContextVar("buttress.runtime", default=None)
"""Set by a foreign scheduler (the lab's simulator) for the tasks it runs."""

_modules = sys.modules


def detect_async_runtime(env: Env) -> AsyncRuntime:
    """Return the runtime for the current task (simulator, trio or asyncio)."""
    override = RUNTIME_OVERRIDE.get()
    if override is not None:
        return override  # type: ignore[no-any-return]
    trio = _modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        from .trio_rt import TrioRuntime

        return TrioRuntime(env.clock)
    rt = env._asyncio_rt
    if rt is None:
        rt = env._asyncio_rt = AsyncioRuntime(env.clock)
    return rt
