"""Public protocols for implementers: strategies, clocks, listeners, runtimes.

A strategy is built once per pipeline into two *steps*: a sync step and an async step.
A step receives the user's callable and its arguments and returns the result::

    SyncStep  = Callable[[fn, args, kwargs], result]
    AsyncStep = Callable[[fn, args, kwargs], Awaitable[result]]

``build_sync(next_step, env)`` returns a step that does its work around ``next_step``.
Decisions belong in pure objects that take ``now``; waiting goes through
``env.sync_runtime()`` / ``env.async_runtime()`` so the same strategy runs on asyncio, trio
and the lab's simulator. Write the flows with care for the happy path: it runs on every call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from ._core.clock import Clock
from ._core.env import Env, Listener
from ._runtime.base import AsyncRuntime, SyncRuntime

__all__ = [
    "AsyncRuntime",
    "AsyncStep",
    "Clock",
    "Env",
    "Listener",
    "Strategy",
    "SyncRuntime",
    "SyncStep",
]

SyncStep = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
AsyncStep = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Awaitable[Any]]


@runtime_checkable
class Strategy(Protocol):
    """One behaviour in a pipeline (Polly's "resilience strategy")."""

    name: str

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        """Return the sync step wrapping ``next_step``.

        Raises:
            ConfigurationError: The strategy cannot run synchronously as configured.
        """
        ...

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        """Return the async step wrapping ``next_step``."""
        ...
