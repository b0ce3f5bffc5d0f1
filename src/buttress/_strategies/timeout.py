"""`Timeout`: bound a call (outside a `Retry`) or each attempt (inside it) by a deadline.

asyncio and trio: the call is cancelled at the deadline and `TimeoutRejectedError` is
raised with the framework's cancellation chained as ``__cause__``; nothing keeps running.
On asyncio, deadlines share one timer per loop (see `buttress._runtime.asyncio_rt`).

Sync, ``mode="cooperative"`` (default): Python cannot pre-empt a blocking call, so the
deadline is placed on the `Context` (``current_context().remaining()``) for the code and
integrations to honour (the httpx transport shrinks each request's timeout to it). When
the call returns **after** the deadline, its result is discarded and
`TimeoutRejectedError` is raised: a late answer is never turned into a success silently.
An exception raised after the deadline is likewise replaced by `TimeoutRejectedError`,
chained to it.

Sync, ``mode="thread"`` (opt-in): the call runs in a new daemon thread (with a copy of the
caller's contextvars) and the caller stops waiting at the deadline. The thread is
**abandoned, not stopped**: it runs to completion in the background, holding whatever it
holds. Cost: about 60-100 us per call to start a thread, plus the leak risk for calls
that never finish. Use it only for calls that are safe to abandon.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from .._core.context import CURRENT, DEADLINE
from .._core.env import Env
from .._core.invoke import ainvoke
from .._core.validate import check_duration
from .._exceptions import ConfigurationError, TimeoutRejectedError
from ..events import TimeoutExpired
from ..typing import AsyncStep, SyncStep

__all__ = ["Timeout"]

_SIM_MODULE = "buttress.lab.sim"  # the only setter of RUNTIME_OVERRIDE


class Timeout:
    """Cancel (async) or reject (sync) a call that runs past ``timeout`` seconds.

    Args:
        timeout: Seconds (float or `timedelta`), > 0. Scope follows position: outside a
            `Retry` it bounds the whole call including waits, inside it bounds one attempt.
            The effective deadline is the earlier of this one and any enclosing deadline
            (an outer `Timeout` or an outer pipeline's context).
        mode: Sync behaviour: ``"cooperative"`` (default) or ``"thread"`` (see module
            docs for costs). Ignored by async calls, which are always cancelled.
        name: Strategy name for events and metrics (default ``"timeout"``).

    Raises:
        ConfigurationError: ``timeout`` <= 0, NaN or infinite, an unknown ``mode``, or an
            empty ``name``.

    Events: `TimeoutExpired` when this timeout's own deadline expires.
    """

    __slots__ = ("mode", "name", "timeout")

    def __init__(
        self,
        timeout: float | timedelta,
        *,
        mode: Literal["cooperative", "thread"] = "cooperative",
        name: str = "timeout",
    ) -> None:
        self.timeout = check_duration("Timeout", "timeout", timeout, strictly_positive=True)
        if mode not in ("cooperative", "thread"):
            raise ConfigurationError.invalid("Timeout", "mode", mode, "'cooperative' or 'thread'")
        self.mode = mode
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("Timeout", "name", name, "a non-empty str")
        self.name = name

    def __repr__(self) -> str:
        return f"Timeout({self.timeout!r}, mode={self.mode!r}, name={self.name!r})"

    def _error(self, env: Env) -> TimeoutRejectedError:
        if env.listeners:
            env.emit(
                TimeoutExpired(
                    pipeline=env.name,
                    strategy=self.name,
                    time=env.clock.now(),
                    timeout=self.timeout,
                )
            )
        return TimeoutRejectedError(
            f"{env.name}: timed out after {self.timeout:g}s ({self.name})",
            strategy=self.name,
            timeout=self.timeout,
        )

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        timeout = self.timeout
        clock = env.clock
        if self.mode == "thread":
            return self._build_thread(next_step, env)

        def timeout_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            record: Any = CURRENT.get()
            outer = record[DEADLINE]
            deadline = clock.now() + timeout
            own = outer is None or deadline < outer
            if own:
                record[DEADLINE] = deadline
            try:
                result = next_step(fn, args, kwargs)
            except Exception as exc:
                # this strategy's own deadline is checked even under an earlier enclosing
                # one: that may be an advisory scope() deadline that nothing enforces
                if clock.now() >= deadline and not isinstance(exc, TimeoutRejectedError):
                    raise self._error(env) from exc
                raise
            finally:
                record[DEADLINE] = outer
            if clock.now() >= deadline:
                raise self._error(env)
            return result

        return timeout_step

    def _build_thread(self, next_step: SyncStep, env: Env) -> SyncStep:
        timeout = self.timeout
        clock = env.clock

        def thread_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            record: Any = CURRENT.get()
            outer = record[DEADLINE]
            deadline = clock.now() + timeout
            own = outer is None or deadline < outer
            if own:
                record[DEADLINE] = deadline
            box: list[Any] = []
            done = threading.Event()
            snapshot = contextvars.copy_context()

            def run() -> None:
                try:
                    box.append((True, snapshot.run(next_step, fn, args, kwargs)))
                except BaseException as exc:  # delivered to the caller below
                    box.append((False, exc))
                finally:
                    done.set()

            worker = threading.Thread(target=run, name=f"buttress-timeout-{self.name}", daemon=True)
            try:
                worker.start()
                wait = max(0.0, (deadline if own else outer) - clock.now())
                finished = done.wait(wait)
            finally:
                record[DEADLINE] = outer
            if not finished:
                raise (
                    self._error(env)
                    if own
                    else TimeoutRejectedError(
                        f"{env.name}: enclosing deadline passed",
                        strategy=self.name,
                        timeout=timeout,
                    )
                )
            ok, value = box[0]
            if ok:
                return value
            raise value

        return thread_step

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        timeout = self.timeout
        now = env.clock.now  # bound once: for the system clock this is time.monotonic
        runtime = _runtime_finder(env)
        cv_get = CURRENT.get
        direct = next_step is ainvoke

        async def timeout_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            record: Any = cv_get()
            outer = record[DEADLINE]
            deadline = now() + timeout
            # The timer is armed for this strategy's own deadline even when an enclosing
            # one is earlier: that may be an advisory scope() deadline that nothing
            # enforces. An enclosing Timeout's earlier expiry still wins and is reported by
            # it (the uncancel protocol), never by this one. The context shows the earlier.
            rt = runtime()
            handle = rt.enter_deadline(deadline)
            record[DEADLINE] = deadline if outer is None or deadline < outer else outer
            try:
                result = await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
            except BaseException as exc:
                record[DEADLINE] = outer
                if rt.exit_deadline(handle, exc):
                    raise self._error(env) from exc
                raise
            record[DEADLINE] = outer
            rt.exit_deadline(handle, None)
            return result

        return timeout_step

    def _bind_async(
        self,
        fn: Callable[..., Any],
        next_step: AsyncStep,
        env: Env,
        generic: Callable[[tuple[Any, ...], dict[str, Any]], Any],
        publish: bool = True,  # always True with this strategy in the pipeline
    ) -> Callable[..., Any]:
        """The decorator form of `build_async` when this strategy is outermost.

        Private protocol with `Pipeline.__call__`: the returned coroutine function *is*
        the decorated function. It pushes the execution record itself (with the deadline
        already in it) instead of the pipeline's wrapper awaiting a separate step: one
        coroutine layer less per call (measured about 0.15-0.25 us, Python 3.11). With
        listeners installed it defers to ``generic`` (the pipeline's own path, which adds
        call telemetry).
        """
        timeout = self.timeout
        now = env.clock.now
        runtime = _runtime_finder(env)
        cv_get = CURRENT.get
        cv_set = CURRENT.set
        cv_reset = CURRENT.reset
        direct = next_step is ainvoke

        async def bound(*args: Any, **kwargs: Any) -> Any:
            if env.listeners:
                return await generic(args, kwargs)
            parent = cv_get()
            outer = parent[DEADLINE] if parent is not None else None
            deadline = now() + timeout
            rt = runtime()
            handle = rt.enter_deadline(deadline)  # own deadline: see build_async
            token = cv_set(
                [env, parent, None, deadline if outer is None or deadline < outer else outer]
            )
            try:
                result = await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
            except BaseException as exc:
                cv_reset(token)
                if rt.exit_deadline(handle, exc):
                    raise self._error(env) from exc
                raise
            cv_reset(token)
            rt.exit_deadline(handle, None)
            return result

        return bound


def _runtime_finder(env: Env) -> Callable[[], Any]:
    """A zero-argument function returning the async runtime of the current call.

    The common case (asyncio, no simulator, trio not imported, no forced runtime) is
    answered inline from the env's cached asyncio runtime, saving the Python calls of
    `Env.async_runtime` on every async `Timeout` (about 0.1 us, Python 3.11).
    """
    find = env.async_runtime
    modules = sys.modules

    def runtime() -> Any:
        # Only the lab's simulator sets RUNTIME_OVERRIDE: while its module was never
        # imported, skip that ContextVar read (a miss costs about 0.1 us on 3.11).
        if "trio" not in modules and _SIM_MODULE not in modules and env.runtime is None:
            rt = env._asyncio_rt
            if rt is not None:
                return rt
        return find()

    return runtime
