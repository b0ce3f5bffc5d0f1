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
from .._runtime.asyncio_rt import (
    AsyncioRuntime,
    _get_ident,
    _tasks_by_loop,
    enter_lane,
    lane_clock,
    lane_task,
)
from ..events import TimeoutExpired
from ..typing import AsyncStep, SyncStep

__all__ = ["Timeout"]

_SIM_MODULE = "buttress.lab.sim"  # the only setter of RUNTIME_OVERRIDE
_modules = sys.modules
_NEW_ASYNCIO = sys.version_info >= (3, 12)  # fast C get_running_loop / current_task


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
        enter = _enter_finder(env)
        cv_get = CURRENT.get
        direct = next_step is ainvoke
        cache: list[Any] = [None]  # this step's DeadlineLane on the last loop it ran on

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
            owner, handle = enter(cache, deadline, None)
            record[DEADLINE] = deadline if outer is None or deadline < outer else outer
            try:
                result = await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
            except BaseException as exc:
                record[DEADLINE] = outer
                if owner.exit_deadline(handle, exc):
                    raise self._error(env) from exc
                raise
            record[DEADLINE] = outer
            owner.exit_deadline(handle, None)
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

        On asyncio with a monotonic clock the deadline goes to this step's
        `DeadlineLane`, and the lane's ``add`` and happy-path exit are inlined below
        (about 0.2 us less per call than a method call into a shared heap; Python 3.11).
        """
        timeout = self.timeout
        now = env.clock.now
        enter = _enter_finder(env)
        cv_get = CURRENT.get
        cv_set = CURRENT.set
        cv_reset = CURRENT.reset
        direct = next_step is ainvoke
        cache: list[Any] = [None]

        async def bound(*args: Any, **kwargs: Any) -> Any:
            if env.listeners:
                return await generic(args, kwargs)
            parent = cv_get()
            outer = parent[DEADLINE] if parent is not None else None
            deadline = now() + timeout
            effective = deadline if outer is None or deadline < outer else outer
            lane = cache[0]
            if (
                lane is not None
                and _SIM_MODULE not in _modules
                and (
                    # 3.11: the loop's thread is this one, so it is the running loop; 3.12+:
                    # ask asyncio (fast C calls there)
                    task := _tasks_by_loop.get(lane._loop)  # type: ignore[union-attr]
                    if lane._fast_loop._thread_id == _get_ident()
                    else _NEW_ASYNCIO and lane_task(lane)
                )
            ):
                # the execution record is the lane entry: slots 0-4 as context.py
                # (attempt 1 in slot 4), 5-8 the lane's (see DeadlineLane)
                record = [env, parent, None, effective, 1, deadline, task, task.cancelling(), False]
                lane._entries.append(record)
                if lane._handle is None:
                    lane._arm(deadline)
                owner: Any = lane
                handle: Any = record
                inline = True
            else:
                record = [env, parent, None, effective]
                owner, handle = enter(cache, deadline, record)  # own deadline: see build_async
                inline = False
            token = cv_set(record)
            try:
                result = await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
            except BaseException as exc:
                cv_reset(token)
                if owner.exit_deadline(handle, exc):
                    raise self._error(env) from exc
                raise
            cv_reset(token)
            if handle[8] or not inline:  # fired, or not the inlined lane path
                owner.exit_deadline(handle, None)
            else:  # inlined `DeadlineLane.finished`
                handle[6] = None
                entries = owner._entries
                if entries[0] is handle:
                    entries.popleft()
                    if entries and entries[0][6] is None:
                        owner.finished(handle)  # drops the finished calls behind it
                elif len(entries) > owner._compact_at:
                    owner.finished(handle)  # compacts
            return result

        return bound


def _enter_finder(env: Env) -> Callable[[list[Any], float, list[Any] | None], tuple[Any, Any]]:
    """The general form of a `Timeout` entry: ``(owner, handle)`` for the current task.

    ``owner`` is the `DeadlineLane` (asyncio on a monotonic clock) or the runtime (trio,
    the lab's simulator, other clocks); either has ``exit_deadline(handle, exc)``.

    A lane cached from an earlier call is used at once (as in the inlined fast path of
    `Timeout._bind_async`) when no simulator is loaded (its tasks may run inside an
    asyncio task) and the lane's loop has a current task on this thread: a lane is made
    here only for the asyncio runtime, so never under a forced non-asyncio runtime, and
    trio code, guest mode included, never runs inside an asyncio task step.
    """
    find = env.async_runtime
    lanes = lane_clock(env.clock)
    clock = env.clock

    def enter(cache: list[Any], deadline: float, record: list[Any] | None) -> tuple[Any, Any]:
        lane = cache[0]
        if lane is not None and _SIM_MODULE not in _modules and (task := lane_task(lane)):
            # the lane of the last call is the running loop's: no runtime lookup
            if record is not None:  # the record becomes the lane entry (slots 4 to 8)
                record.append(1)
            return lane, lane.add(deadline, task, record)
        rt = find()
        if lanes and rt.__class__ is AsyncioRuntime:
            if record is not None:  # the record becomes the lane entry (slots 4 to 8)
                record.append(1)
            handle = enter_lane(cache, clock, deadline, record)
            return cache[0], handle
        return rt, rt.enter_deadline(deadline)

    return enter
