"""`LoadBalance`: a pipeline strategy that routes each call to one endpoint of a group.

Flow design: the per-call path reads the clock twice (start and end: latency feeds the
balancer), takes the router's lock twice (pick + start, finish) and calls the user's
function with the endpoint; no allocation besides the argument tuple, no event unless a
decision changed something. Retry avoidance costs nothing until an attempt fails: the
failed endpoint is then remembered on the execution's `Context`, which a `Retry` outside
reuses for its next attempt.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar

from .._core.context import CTX, CURRENT, Key, materialize
from .._core.env import Env
from .._core.handle import HandleLike, compile_handle
from .._core.invoke import ainvoke, invoke
from .._core.naming import type_name as _type_name
from .._core.validate import check_optional_duration
from .._exceptions import ConfigurationError
from .._runtime.sync import BackgroundLoop
from ..events import Event, MembershipRefreshFailed
from ..typing import AsyncStep, SyncStep
from .balancers import Balancer, EndpointState
from .endpoint import Endpoint, EndpointGroup
from .health import HealthCheck, ProbeSchedule, probe_verdict
from .outlier import OutlierDetector
from .router import NoEndpointAvailableError, Router

__all__ = ["ENDPOINT", "LoadBalance", "acall_routed", "call_routed", "current_endpoint"]

if TYPE_CHECKING:
    from .._core.pipeline import Pipeline

_log = logging.getLogger("buttress")
P = ParamSpec("P")
R = TypeVar("R")

ENDPOINT: Key[Endpoint] = Key("buttress.routing.endpoint")
"""Context property holding the `Endpoint` chosen for the current attempt (set when
``LoadBalance(handoff="context")`` or ``"both"``)."""

_TRIED: Key[list[EndpointState]] = Key("buttress.routing.tried")

_DEFAULT: Any = object()


def current_endpoint() -> Endpoint | None:
    """The endpoint chosen for the running attempt, or ``None``.

    Works with ``handoff="context"`` or ``"both"`` (the property is only set then), from
    inside the function a `LoadBalance` calls (and anything it calls).
    """
    record = CURRENT.get()
    if record is None:
        return None
    return materialize(record).get(ENDPOINT, None)


def call_routed(
    pipeline: Pipeline,
    fn: Callable[Concatenate[Endpoint, P], R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """``pipeline.call(fn, *args, **kwargs)`` typed for ``handoff="argument"``.

    A `LoadBalance` inserts the endpoint as the first argument, which ``Pipeline.call``'s
    signature cannot express; this wrapper tells the type checker that ``fn`` takes an
    `Endpoint` first and the caller passes the rest. No runtime difference.
    """
    call: Any = pipeline.call
    return call(fn, *args, **kwargs)  # type: ignore[no-any-return]


async def acall_routed(
    pipeline: Pipeline,
    fn: Callable[Concatenate[Endpoint, P], Awaitable[R]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Async `call_routed` (``await pipeline.acall(fn, *args, **kwargs)``)."""
    acall: Any = pipeline.acall
    return await acall(fn, *args, **kwargs)  # type: ignore[no-any-return]


class LoadBalance:
    """Route each call to one endpoint of a group (client-side load balancing).

    The chosen `Endpoint` is handed to the call: with ``handoff="argument"`` (default) the
    function is called as ``fn(endpoint, *args, **kwargs)``; with ``"context"`` it is called
    unchanged and reads `current_endpoint()` (or ``current_context().get(ENDPOINT)``);
    ``"both"`` does both. Put a `Retry` outside: each retry picks a different endpoint
    (the ones that failed in this call are avoided while others are available), and a
    `Timeout` inside, so a timed-out attempt counts against its endpoint.

    Args:
        endpoints: An `EndpointGroup`, or what `EndpointGroup` accepts (a non-empty list of
            `Endpoint`/addresses, or a sync/async callable returning one).
        balancer: ``"peak_ewma"`` (default; also ``"ewma"``), ``"least_request"`` (also
            ``"p2c"``), ``"round_robin"``, ``"random"``, or a `Balancer` instance (its state is
            then shared with whoever else holds it).
        on: Outcomes that count as an endpoint failure (for the penalty, outlier detection
            and retry avoidance): an exception type, tuple or predicate as for `Retry`
            (default ``Exception``: every exception, including a `TimeoutRejectedError` from
            an inner `Timeout`). A cancellation is never a failure: it only releases the
            endpoint (and feeds its latency to `PeakEwma`).
        handoff: ``"argument"`` (default), ``"context"`` or ``"both"`` (see above).
        outlier: An `OutlierDetector` (default ``OutlierDetector()``: Envoy's detectors and
            defaults, with ``max_ejection_ratio`` 0.5) or ``None`` to disable ejection.
        health: A `HealthCheck`, or a bare probe callable (wrapped with
            ``HealthCheck(probe)``), or ``None`` (default: no active checks). Probes run only
            in `start_background` / `run_background` / `maintain`.
        zone: The caller's zone (default ``None``: no zone preference).
        zone_threshold: Healthy share (0..1) of the local zone under which traffic spills to
            other zones (default 0.7).
        panic_threshold: Healthy share (0..1) of the active priority tier under which health
            is ignored (default 0.5; 0 disables panic mode).
        failover_threshold: Healthy share (0..1] a priority tier needs to keep traffic
            (default 0.5).
        failback_threshold: Healthy share (0..1] a better tier needs before traffic moves
            back (default 0.7; >= ``failover_threshold``).
        failback_delay: Seconds the better tier must stay above ``failback_threshold``
            before traffic moves back (float or `timedelta`, >= 0; default 10.0).
        max_lag: Largest replication lag in seconds an endpoint may report (through a
            health probe returning a number) and still receive calls; ``None`` (default)
            means no bound.
        name: Strategy name for events and metrics (default ``"load-balance"``).

    Events: `EndpointEjected`, `EndpointReadmitted`, `EndpointHealthChanged`,
    `PriorityChanged`, `MembershipRefreshFailed`.

    Raises:
        ConfigurationError: Empty group, duplicate endpoint names, a threshold out of range,
            an unknown balancer name, an unknown ``handoff``, or another invalid parameter.
        NoEndpointAvailableError: At call time, when no endpoint can take the call.
    """

    def __init__(
        self,
        endpoints: EndpointGroup | Iterable[Any] | Callable[[], Any],
        *,
        balancer: str | Balancer = "peak_ewma",
        on: HandleLike = Exception,
        handoff: Literal["argument", "context", "both"] = "argument",
        outlier: OutlierDetector | None = _DEFAULT,
        health: HealthCheck | Callable[[Endpoint], Any] | None = None,
        zone: str | None = None,
        zone_threshold: float = 0.7,
        panic_threshold: float = 0.5,
        failover_threshold: float = 0.5,
        failback_threshold: float = 0.7,
        failback_delay: float | timedelta = 10.0,
        max_lag: float | timedelta | None = None,
        name: str = "load-balance",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("LoadBalance", "name", name, "a non-empty str")
        self.name = name
        group = endpoints if isinstance(endpoints, EndpointGroup) else EndpointGroup(endpoints)
        self.group = group
        self.handle = compile_handle(on, "LoadBalance")
        if handoff not in ("argument", "context", "both"):
            raise ConfigurationError.invalid(
                "LoadBalance", "handoff", handoff, "'argument', 'context' or 'both'"
            )
        self.handoff = handoff
        if health is not None and not isinstance(health, HealthCheck):
            if not callable(health):
                raise ConfigurationError.invalid(
                    "LoadBalance", "health", health, "a HealthCheck, a probe callable or None"
                )
            health = HealthCheck(health)
        self.health: HealthCheck | None = health
        self.max_lag = check_optional_duration("LoadBalance", "max_lag", max_lag)
        self.router = Router(
            group.endpoints,
            balancer=balancer,
            outlier=OutlierDetector() if outlier is _DEFAULT else outlier,
            zone=zone,
            zone_threshold=zone_threshold,
            panic_threshold=panic_threshold,
            failover_threshold=failover_threshold,
            failback_threshold=failback_threshold,
            failback_delay=failback_delay,
            name=name,
            allow_empty=group.dynamic,
        )
        if health is not None and not health.initially_healthy:
            for s in self.router.states:
                s.healthy = False
        self._version = group.version
        self._env: Env | None = None
        self._env_fallback = False
        self._schedule = ProbeSchedule(health) if health is not None else None
        self._next_refresh = -math.inf
        self._lag_exempt: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return (
            f"LoadBalance({self.group!r}, balancer={self.router.balancer!r}, "
            f"zone={self.router.zone!r}, name={self.name!r})"
        )

    @property
    def balancer(self) -> Balancer:
        """The balancer instance."""
        return self.router.balancer

    # -- observation ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot: ``picks``, ``cross_zone_share`` (0..1), ``priority`` (active tier),
        ``panic``, and per endpoint ``outstanding``, ``picks``, ``healthy``, ``ejected``,
        ``lag``."""
        r = self.router
        with r.lock:
            return {
                "picks": r.picks,
                "cross_zone_share": r.cross_zone_share,
                "priority": r.priorities[r.tier] if r.priorities else None,
                "panic": r.panic,
                "endpoints": {
                    s.name: {
                        "outstanding": s.outstanding,
                        "picks": s.picks,
                        "healthy": s.healthy,
                        "ejected": s.ejected_until is not None,
                        "lag": s.lag,
                    }
                    for s in r.states
                },
            }

    # -- events and membership -------------------------------------------------------------

    def _emit(self, env: Env, pending: list[tuple[type[Event], dict[str, Any]]]) -> None:
        if env.listeners:
            for cls, fields in pending:
                env.emit(cls(pipeline=env.name, strategy=self.name, **fields))

    def _take_pending(self) -> list[tuple[type[Event], dict[str, Any]]]:
        r = self.router
        with r.lock:
            pending = r.pending
            r.pending = []
        return pending

    def _adopt(self, env: Env) -> None:
        group = self.group
        r = self.router
        with r.lock:
            if self._version != group.version:
                r.set_endpoints(group.endpoints)
                if self.health is not None and not self.health.initially_healthy:
                    for s in r.states:
                        if s.picks == 0 and s._hc_ok == 0 and s._hc_fail == 0:
                            s.healthy = False
                self._version = group.version

    def _refresh_failed(self, env: Env, exc: Exception) -> None:
        _log.debug("buttress: refreshing %r failed: %r", self.group, exc)
        if env.listeners:
            env.emit(
                MembershipRefreshFailed(
                    pipeline=env.name,
                    strategy=self.name,
                    time=env.clock.now(),
                    error_type=_type_name(type(exc)),
                )
            )

    def refresh(self) -> bool:
        """Refresh a sync dynamic group now; ``True`` on success (see `EndpointGroup`)."""
        env = self._background_env()
        try:
            self.group.refresh()
        except Exception as exc:
            self._refresh_failed(env, exc)
            return False
        self._adopt(env)
        return True

    async def arefresh(self) -> bool:
        """Refresh a dynamic group (sync or async source) now; ``True`` on success."""
        env = self._background_env()
        try:
            await self.group.arefresh()
        except Exception as exc:
            self._refresh_failed(env, exc)
            return False
        self._adopt(env)
        return True

    def _first_sync(self, env: Env) -> None:
        if not self.group.endpoints and self.group.dynamic:
            if self.group.is_async:
                raise NoEndpointAvailableError(
                    f"{self.name}: the endpoint group has an async source and was never "
                    "refreshed; call `await lb.arefresh()` (or run it in an async pipeline) first",
                    strategy=self.name,
                )
            try:
                self.group.refresh()
            except Exception as exc:
                self._refresh_failed(env, exc)
                raise NoEndpointAvailableError(
                    f"{self.name}: the first membership refresh failed", strategy=self.name
                ) from exc
        self._adopt(env)

    async def _first_async(self, env: Env) -> None:
        if not self.group.endpoints and self.group.dynamic:
            try:
                await self.group.arefresh()
            except Exception as exc:
                self._refresh_failed(env, exc)
                raise NoEndpointAvailableError(
                    f"{self.name}: the first membership refresh failed", strategy=self.name
                ) from exc
        self._adopt(env)

    # -- flows ---------------------------------------------------------------------------

    def _select(self, now: float, rng: Any, avoid: Any) -> EndpointState:
        return self.router.pick(now, rng, avoid)

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        if self._env is None or self._env_fallback:
            self._env = env
            self._env_fallback = False
        router = self.router
        lock = router.lock
        # skip one frame each: plain LoadBalance selects with the router directly
        select = router.pick if type(self)._select is LoadBalance._select else self._select
        start = router.balancer.on_start
        clock = env.clock
        rng = env.random
        group = self.group
        cv = CURRENT
        decide_exc = self.handle.exception
        decide_result = self.handle.result if self.handle.checks_results else None
        to_arg = self.handoff != "context"
        to_ctx = self.handoff != "argument"
        finish = self._finish
        router_finish = router.finish
        direct = next_step is invoke

        def balance_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if self._version != group.version or not router.states:
                self._first_sync(env)
            record = cv.get()
            ctx = record[CTX] if record is not None else None
            avoid = ctx.get(_TRIED, None) if ctx is not None else None
            t0 = clock.now()
            with lock:
                state = select(t0, rng, avoid)
                start(state, t0)
                pending = router.pending
                if pending:
                    router.pending = []
            if pending:
                self._emit(env, pending)
            endpoint = state.endpoint
            if to_ctx and record is not None:
                materialize(record).set(ENDPOINT, endpoint)
            if to_arg:
                args = (endpoint, *args)
            try:
                result = fn(*args, **kwargs) if direct else next_step(fn, args, kwargs)
            except Exception as exc:
                finish(env, record, state, t0, decide_exc(exc) is not False)
                raise
            except BaseException:
                t1 = clock.now()
                with lock:
                    router.cancel(state, t1, t1 - t0)
                raise
            if decide_result is not None and decide_result(result) is not False:
                finish(env, record, state, t0, True)
                return result
            t1 = clock.now()
            with lock:
                router_finish(state, t1, t1 - t0, False)
                pending = router.pending
                if pending:
                    router.pending = []
            if pending:
                self._emit(env, pending)
            return result

        return balance_step

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        if self._env is None or self._env_fallback:
            self._env = env
            self._env_fallback = False
        router = self.router
        lock = router.lock
        # skip one frame each: plain LoadBalance selects with the router directly
        select = router.pick if type(self)._select is LoadBalance._select else self._select
        start = router.balancer.on_start
        clock = env.clock
        rng = env.random
        group = self.group
        cv = CURRENT
        decide_exc = self.handle.exception
        decide_result = self.handle.result if self.handle.checks_results else None
        to_arg = self.handoff != "context"
        to_ctx = self.handoff != "argument"
        finish = self._finish
        router_finish = router.finish
        direct = next_step is ainvoke

        async def balance_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if self._version != group.version or not router.states:
                await self._first_async(env)
            record = cv.get()
            ctx = record[CTX] if record is not None else None
            avoid = ctx.get(_TRIED, None) if ctx is not None else None
            t0 = clock.now()
            with lock:
                state = select(t0, rng, avoid)
                start(state, t0)
                pending = router.pending
                if pending:
                    router.pending = []
            if pending:
                self._emit(env, pending)
            endpoint = state.endpoint
            if to_ctx and record is not None:
                materialize(record).set(ENDPOINT, endpoint)
            if to_arg:
                args = (endpoint, *args)
            try:
                result = await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
            except Exception as exc:
                finish(env, record, state, t0, decide_exc(exc) is not False)
                raise
            except BaseException:
                t1 = clock.now()
                with lock:
                    router.cancel(state, t1, t1 - t0)
                raise
            if decide_result is not None and decide_result(result) is not False:
                finish(env, record, state, t0, True)
                return result
            t1 = clock.now()
            with lock:
                router_finish(state, t1, t1 - t0, False)
                pending = router.pending
                if pending:
                    router.pending = []
            if pending:
                self._emit(env, pending)
            return result

        return balance_step

    def _finish(self, env: Env, record: Any, state: EndpointState, t0: float, failed: bool) -> None:
        router = self.router
        t1 = env.clock.now()
        with router.lock:
            router.finish(state, t1, t1 - t0, failed)
            pending = router.pending
            if pending:
                router.pending = []
        if pending:
            self._emit(env, pending)
        if failed and record is not None:
            ctx = materialize(record)
            tried = ctx.get(_TRIED, None)
            if tried is None:
                ctx.set(_TRIED, [state])
            elif state not in tried:
                tried.append(state)

    # -- background maintenance: health probes and membership refresh ----------------------

    def _background_env(self, pipeline: Any = None) -> Env:
        if pipeline is not None:
            env = getattr(pipeline, "env", pipeline)
            if not isinstance(env, Env):
                raise ConfigurationError.invalid(
                    "LoadBalance", "pipeline", pipeline, "a Pipeline (or its Env) or None"
                )
            self._env = env
            self._env_fallback = False
            return env
        env = self._env
        if env is None:
            env = self._env = Env(self.name)
            self._env_fallback = True
        return env

    def _apply_probe(self, state: EndpointState, ok: bool, lag: float | None, now: float) -> None:
        health = self.health
        assert health is not None
        router = self.router
        with router.lock:
            router.set_health(state, health.record(state, ok), now)
            if ok and state.name in self._lag_exempt:
                lag = 0.0 if lag is None else lag
            if ok and (lag is not None or self.max_lag is not None):
                router.set_lag(state, lag, self.max_lag)
            if ok and state.ejected_until is not None:
                router.readmit(state, now)

    def _probe_wait(self, env: Env, now: float) -> float:
        wait = math.inf
        if self.group.dynamic:
            wait = self._next_refresh - now
        schedule = self._schedule
        if schedule is not None:
            wait = min(wait, schedule.next_due(self.router.states, now, env.random) - now)
        with self.router.lock:
            self.router.tick(now)
            nxt = self.router._next_check
        wait = min(wait, nxt - now)
        return max(0.0, min(wait, 60.0))

    def maintain(self, pipeline: Any = None) -> float:
        """Run the sync background work due now: membership refresh and health probes.

        Returns the seconds until more work is due (at most 60). `start_background` calls
        it in a loop; call it yourself in tests with a `ManualClock`.

        Args:
            pipeline: The `Pipeline` whose clock, random source and listeners the
                background work uses. Default: the first pipeline this strategy was built
                into (a pipeline binds on its first call), else the system clock, a fresh
                random source and no listeners until one does.

        Raises:
            ConfigurationError: The probe or the group's source is async (use
                `run_background` / `amaintain`).
        """
        env = self._background_env(pipeline)
        health = self.health
        if (health is not None and health.is_async) or self.group.is_async:
            raise ConfigurationError(
                f"LoadBalance {self.name!r}: async probe or membership source; run "
                "`await lb.run_background()` in an asyncio/trio task instead",
                parameter="health",
                value=health,
                expected="sync probe and source for maintain()/start_background()",
            )
        now = env.clock.now()
        if self.group.dynamic and now >= self._next_refresh:
            self._next_refresh = now + self.group.refresh_interval
            self.refresh()
        schedule = self._schedule
        if schedule is not None and health is not None:
            for state in schedule.take_due(self.router.states, now, env.random):
                try:
                    ok, lag = probe_verdict(health.probe(state.endpoint))
                except Exception:
                    ok, lag = False, None
                self._apply_probe(state, ok, lag, env.clock.now())
        wait = self._probe_wait(env, env.clock.now())
        self._emit(env, self._take_pending())
        return wait

    async def amaintain(self, pipeline: Any = None) -> float:
        """Async `maintain`: also runs async probes (cancelled after ``health.timeout``)
        and async membership sources. ``pipeline`` as for `maintain`."""
        env = self._background_env(pipeline)
        health = self.health
        now = env.clock.now()
        if self.group.dynamic and now >= self._next_refresh:
            self._next_refresh = now + self.group.refresh_interval
            await self.arefresh()
        schedule = self._schedule
        if schedule is not None and health is not None:
            for state in schedule.take_due(self.router.states, now, env.random):
                ok, lag = await self._aprobe(env, health, state)
                self._apply_probe(state, ok, lag, env.clock.now())
        wait = self._probe_wait(env, env.clock.now())
        self._emit(env, self._take_pending())
        return wait

    async def _aprobe(
        self, env: Env, health: HealthCheck, state: EndpointState
    ) -> tuple[bool, float | None]:
        if not health.is_async:
            try:
                return probe_verdict(health.probe(state.endpoint))
            except Exception:
                return False, None
        rt = env.async_runtime()
        handle = rt.enter_deadline(env.clock.now() + health.timeout)
        try:
            result = await health.probe(state.endpoint)
        except Exception:
            rt.exit_deadline(handle, None)
            return False, None
        except BaseException as exc:
            if rt.exit_deadline(handle, exc):
                return False, None  # our probe timeout
            raise
        rt.exit_deadline(handle, None)
        if inspect.isawaitable(result):  # pragma: no cover - defensive
            result = await result
        return probe_verdict(result)

    def start_background(self, pipeline: Any = None) -> BackgroundLoop:
        """Start a daemon thread running `maintain` (health probes, membership refresh).

        Returns a handle; call ``handle.stop()`` to stop it (it is also a good idea to stop
        it in tests). Waits are real time. ``pipeline`` as for `maintain`.

        Raises:
            ConfigurationError: The probe or the group's source is async.
        """
        health = self.health
        if (health is not None and health.is_async) or self.group.is_async:
            raise ConfigurationError(
                f"LoadBalance {self.name!r}: async probe or membership source needs "
                "`await lb.run_background()`",
                parameter="health",
                value=health,
                expected="sync probe and source",
            )
        if pipeline is not None:
            self._background_env(pipeline)
        return BackgroundLoop(
            self.maintain,
            name=f"buttress-{self.name}",
            on_error=lambda exc: _log.error("buttress: %s maintenance failed: %r", self.name, exc),
        )

    async def run_background(self, pipeline: Any = None) -> None:
        """Run `amaintain` forever in the current asyncio / trio / lab task.

        Start it with ``asyncio.create_task(lb.run_background(pipeline))`` or
        ``nursery.start_soon(lb.run_background, pipeline)``; cancel the task to stop it.
        ``pipeline`` as for `maintain` (pass it when the background task may start before
        the pipeline's first call, so probes use its clock and listeners from the start).
        """
        if pipeline is not None:
            self._background_env(pipeline)
        while True:
            wait = await self.amaintain()
            await self._background_env().async_runtime().sleep(wait)
