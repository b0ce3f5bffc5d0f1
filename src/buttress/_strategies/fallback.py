"""`Fallback`: replace a handled outcome with a value or a handler's answer."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._core.context import CURRENT, Context, materialize
from .._core.env import Env
from .._core.handle import Handle, HandleLike, compile_handle
from .._core.naming import error_type as _error_type
from .._core.outcome import Outcome
from .._exceptions import ConfigurationError
from ..events import FallbackUsed
from ..typing import AsyncStep, SyncStep

__all__ = ["Fallback"]

_UNSET: Any = object()


class Fallback:
    """Return a fallback when the call's outcome is handled by ``on=``.

    Args:
        on: What to replace (required): exception types, a tuple, a predicate over
            `Outcome`, ``on_result(pred)`` or ``on_exception(pred)``.
        value: The value to return instead. Give exactly one of ``value`` and ``handler``.
        handler: ``handler(outcome, context)`` returning the replacement; may be ``async``
            (async calls only). ``outcome`` is the handled `Outcome`; ``context`` the
            current `Context`.
        name: Strategy name for events and metrics (default ``"fallback"``).

    Cancellation and other `BaseException` subclasses are never replaced.

    Events: `FallbackUsed`.

    Raises:
        ConfigurationError: Neither or both of ``value`` and ``handler``; a handler that is
            not callable; an empty ``name``; an ``async`` handler used by a sync call
            (raised when the sync path is first built).
    """

    __slots__ = ("handle", "handler", "is_async", "name", "value")

    def __init__(
        self,
        *,
        on: HandleLike,
        value: Any = _UNSET,
        handler: Callable[[Outcome[Any], Context], Any] | None = None,
        name: str = "fallback",
    ) -> None:
        self.handle: Handle = compile_handle(on, "Fallback")
        if (value is _UNSET) == (handler is None):
            both = value is not _UNSET
            raise ConfigurationError(
                "Fallback: expected exactly one of value= or handler= ("
                + ("both were given" if both else "neither was given; value=None is a valid value")
                + ")",
                parameter="value/handler",
                value=(value, handler) if both else None,
                expected="exactly one of value= or handler=",
            )
        if handler is not None and not callable(handler):
            raise ConfigurationError.invalid("Fallback", "handler", handler, "a callable")
        self.value = value
        self.handler = handler
        self.is_async = handler is not None and inspect.iscoroutinefunction(handler)
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("Fallback", "name", name, "a non-empty str")
        self.name = name

    def __repr__(self) -> str:
        what = f"handler={self.handler!r}" if self.handler is not None else f"value={self.value!r}"
        return f"Fallback(on={self.handle.source!r}, {what}, name={self.name!r})"

    def _used(self, env: Env, exc: BaseException | None) -> None:
        if env.listeners:
            env.emit(
                FallbackUsed(
                    pipeline=env.name,
                    strategy=self.name,
                    time=env.clock.now(),
                    error_type=_error_type(exc),
                )
            )

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        if self.is_async:
            raise ConfigurationError(
                f"Fallback {self.name!r} has an async handler and cannot serve a sync call; "
                "use pipeline.acall() or a sync handler",
                parameter="handler",
                value=self.handler,
                expected="a sync callable for sync calls",
            )
        handle = self.handle
        checks_results = handle.checks_results
        handler = self.handler
        value = self.value

        def replace(outcome: Outcome[Any]) -> Any:
            self._used(env, outcome.exception)
            if handler is None:
                return value
            return handler(outcome, materialize(CURRENT.get()))  # type: ignore[arg-type]

        def fallback_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            try:
                result = next_step(fn, args, kwargs)
            except Exception as exc:
                if handle.exception(exc) is False:
                    raise
                return replace(Outcome(None, exc))
            if checks_results and handle.result(result) is not False:
                return replace(Outcome(result, None))
            return result

        return fallback_step

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        handle = self.handle
        checks_results = handle.checks_results
        handler = self.handler
        value = self.value

        async def replace(outcome: Outcome[Any]) -> Any:
            self._used(env, outcome.exception)
            if handler is None:
                return value
            answer = handler(outcome, materialize(CURRENT.get()))  # type: ignore[arg-type]
            if inspect.isawaitable(answer):
                answer = await answer
            return answer

        async def fallback_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            try:
                result = await next_step(fn, args, kwargs)
            except Exception as exc:
                if handle.exception(exc) is False:
                    raise
                return await replace(Outcome(None, exc))
            if checks_results and handle.result(result) is not False:
                return await replace(Outcome(result, None))
            return result

        return fallback_step
