"""`ReplicaSet`: route database reads to replicas and writes to the primary.

Generic over whatever reaches a database: an endpoint's ``address`` can be a DSN, a
psycopg connection pool, an SQLAlchemy engine or any client; your function receives the
chosen `Endpoint` and uses ``endpoint.address``. One `Router` holds every member: the
replicas form priority tier 0 and the primary tier 1, so reads fail over to the primary
only when no replica is available (unhealthy, ejected or lagging beyond ``max_lag``) and
come back as soon as one is. Writes always go to the primary and fail fast with
`PrimaryUnavailableError` (a `RejectedError`, so a `Retry` or `Fallback` can handle it)
while it is known to be down, instead of waiting for a connection timeout on each call.

Read-your-writes: a write marks the outermost `buttress.scope()` (for example the web
request or the user session); for ``read_your_writes`` seconds after it, reads in that scope
go to the primary, so a user sees their own change even if replication lags.
"""

from __future__ import annotations

import random as _random
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from .._core.clock import Clock
from .._core.context import CURRENT, Context, Key, materialize, new_record
from .._core.env import Env, Listener
from .._core.handle import HandleLike
from .._core.invoke import ainvoke, invoke
from .._core.validate import check_optional_duration
from .._exceptions import ConfigurationError
from .balancers import Balancer, EndpointState
from .endpoint import Endpoint
from .health import HealthCheck
from .outlier import OutlierDetector
from .router import NoEndpointAvailableError
from .strategy import LoadBalance

__all__ = ["PrimaryUnavailableError", "ReplicaSet"]

R = TypeVar("R")

_LAST_WRITE: Key[float] = Key("buttress.routing.last_write")
_DEFAULT: Any = object()


class PrimaryUnavailableError(NoEndpointAvailableError):
    """The primary is known to be down (failed health checks or ejected after failures);
    the write was not attempted. ``retry_after`` is the seconds until the primary is tried
    again, when known."""


def _as_endpoint(item: Any, priority: int) -> Endpoint:
    e = item if isinstance(item, Endpoint) else Endpoint(item)
    return Endpoint(e.address, name=e.name, zone=e.zone, priority=priority, labels=e.labels)


def _root(ctx: Context) -> Context:
    while ctx.parent is not None:
        ctx = ctx.parent
    return ctx


class _Reads(LoadBalance):
    """The read strategy of a `ReplicaSet` (shares all state with it)."""

    _rs: ReplicaSet

    def _select(self, now: float, rng: Any, avoid: Any) -> EndpointState:
        rs = self._rs
        window = rs.read_your_writes
        if window is not None:
            record = CURRENT.get()
            if record is not None and (record[1] is not None or record[2] is not None):
                last = materialize(record).get(_LAST_WRITE, None)
                if last is not None and now - last < window:
                    primary = rs.primary_state
                    if primary.available and not (avoid and primary in avoid):
                        self.router.picks += 1
                        primary.picks += 1
                        return primary
        return self.router.pick(now, rng, avoid)


class _Writes(LoadBalance):
    """The write strategy of a `ReplicaSet` (shares all state with it)."""

    _rs: ReplicaSet

    def _select(self, now: float, rng: Any, avoid: Any) -> EndpointState:
        rs = self._rs
        router = self.router
        if router._dirty or now >= router._next_check:
            router.tick(now)
        primary = rs.primary_state
        if not primary.available:
            until = primary.ejected_until
            why = "ejected after failures" if until is not None else "failing health checks"
            raise PrimaryUnavailableError(
                f"{rs.name}: primary {primary.name!r} is down ({why}); write not attempted",
                strategy=rs.name,
                retry_after=(until - now) if until is not None else None,
            )
        if rs.read_your_writes is not None:
            record = CURRENT.get()
            if record is not None:
                _root(materialize(record)).set(_LAST_WRITE, now)
        return primary


class ReplicaSet:
    """A primary and its read replicas, routed by role.

    Args:
        primary: The primary (an `Endpoint` or a bare address such as a DSN).
        replicas: The replicas (non-empty iterable of endpoints or addresses; unique names,
            different from the primary's).
        balancer: How reads are spread over replicas: a name as for `LoadBalance` (default
            ``"peak_ewma"``) or a `Balancer`.
        health: A `HealthCheck` or probe callable run for every member by the background
            runner (`start_background`, `run_background`, `maintain`). For replicas the
            probe may return the replication lag in seconds (a number) instead of ``True``.
            Default ``None``: passive detection only.
        max_lag: Largest replica lag in seconds (reported by the probe) still served reads
            (float or `timedelta`, >= 0); ``None`` (default) means no bound.
        read_your_writes: Seconds after a write during which reads in the same outermost
            `buttress.scope()` go to the primary (>= 0; default 5.0); ``None`` disables.
        on: Outcomes counting as a member failure (default ``Exception``).
        outlier: Passive ejection; default ``OutlierDetector(consecutive_failures=3,
            base_ejection_time=10, max_ejection_ratio=1.0, success_rate_minimum_hosts=None,
            failure_ratio_threshold=None)``: three failures in a row take a member out for
            10 s (doubling on repeats), the primary included, so writes then fail fast.
        zone: The caller's zone for zone-aware replica choice (default ``None``).
        handoff: ``"argument"`` (default), ``"context"`` or ``"both"``, as for `LoadBalance`.
        name: Name for events and errors (default ``"replica-set"``).
        clock: Clock of the `read` / `write` conveniences and of background health checks
            (default the system clock).
        random: `random.Random` for them (seed it for reproducible runs).
        listeners: Event listeners for them.

    Attributes:
        reads: The read strategy, to put in your own pipeline (``Pipeline(Retry(...),
            rs.reads)``).
        writes: The write strategy (raises `PrimaryUnavailableError` while the primary is
            down).

    Raises:
        ConfigurationError: No replica, duplicate names, or a parameter out of range.
    """

    def __init__(
        self,
        primary: Any,
        replicas: Iterable[Any],
        *,
        balancer: str | Balancer = "peak_ewma",
        health: HealthCheck | Callable[[Endpoint], Any] | None = None,
        max_lag: float | timedelta | None = None,
        read_your_writes: float | timedelta | None = 5.0,
        on: HandleLike = Exception,
        outlier: OutlierDetector | None = _DEFAULT,
        zone: str | None = None,
        handoff: Any = "argument",
        name: str = "replica-set",
        clock: Clock | None = None,
        random: _random.Random | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        if isinstance(replicas, (str, bytes)) or not isinstance(replicas, Iterable):
            raise ConfigurationError.invalid(
                "ReplicaSet", "replicas", replicas, "a non-empty list of endpoints"
            )
        reps = [_as_endpoint(r, 0) for r in replicas]
        if not reps:
            raise ConfigurationError.invalid(
                "ReplicaSet", "replicas", [], "at least one replica (use LoadBalance otherwise)"
            )
        prim = _as_endpoint(primary, 1)
        self.read_your_writes = check_optional_duration(
            "ReplicaSet", "read_your_writes", read_your_writes
        )
        if outlier is _DEFAULT:
            outlier = OutlierDetector(
                consecutive_failures=3,
                base_ejection_time=10.0,
                max_ejection_time=300.0,
                max_ejection_ratio=1.0,
                success_rate_minimum_hosts=None,
                failure_ratio_threshold=None,
            )
        self.name = name
        base = _Reads(
            [*reps, prim],
            balancer=balancer,
            on=on,
            handoff=handoff,
            outlier=outlier,
            health=health,
            zone=zone,
            panic_threshold=0.0,
            failover_threshold=1e-9,
            failback_threshold=1e-9,
            failback_delay=0.0,
            max_lag=max_lag,
            name=name,
        )
        base._rs = self
        base._lag_exempt = frozenset({prim.name})
        self._lb = base
        self.reads: LoadBalance = base
        writes = _Writes.__new__(_Writes)
        writes.__dict__ = base.__dict__  # one state, two selection rules
        self.writes: LoadBalance = writes
        self.primary = prim
        self.replicas = tuple(reps)
        self.primary_state = base.router.state(prim.name)
        self._env = Env(name, clock, random, listeners)
        base._env = self._env
        self._sync: tuple[Any, Any] | None = None
        self._async: tuple[Any, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"ReplicaSet(primary={self.primary.name!r}, "
            f"replicas={[r.name for r in self.replicas]!r}, name={self.name!r})"
        )

    # -- conveniences (the same flows a pipeline would run) ----------------------------------

    def _run(self, role: int, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        chains = self._sync
        if chains is None:
            env = self._env
            chains = self._sync = (
                self.reads.build_sync(invoke, env),
                self.writes.build_sync(invoke, env),
            )
        token = CURRENT.set(new_record(self._env))
        try:
            return chains[role](fn, args, kwargs)
        finally:
            CURRENT.reset(token)

    async def _arun(self, role: int, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        chains = self._async
        if chains is None:
            env = self._env
            chains = self._async = (
                self.reads.build_async(ainvoke, env),
                self.writes.build_async(ainvoke, env),
            )
        token = CURRENT.set(new_record(self._env))
        try:
            return await chains[role](fn, args, kwargs)
        finally:
            CURRENT.reset(token)

    def read(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Call ``fn(endpoint, *args, **kwargs)`` on a replica (or the primary on failover).

        For retries, timeouts or fallbacks, put `reads` in your own `Pipeline` instead.

        Raises:
            NoEndpointAvailableError: No replica and no primary available.
        """
        return self._run(0, fn, args, kwargs)  # type: ignore[no-any-return]

    def write(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Call ``fn(endpoint, *args, **kwargs)`` on the primary.

        Raises:
            PrimaryUnavailableError: The primary is known to be down (not attempted).
        """
        return self._run(1, fn, args, kwargs)  # type: ignore[no-any-return]

    async def aread(self, fn: Callable[..., Awaitable[R]], /, *args: Any, **kwargs: Any) -> R:
        """Async `read`."""
        return await self._arun(0, fn, args, kwargs)  # type: ignore[no-any-return]

    async def awrite(self, fn: Callable[..., Awaitable[R]], /, *args: Any, **kwargs: Any) -> R:
        """Async `write`."""
        return await self._arun(1, fn, args, kwargs)  # type: ignore[no-any-return]

    # -- health and observation ------------------------------------------------------------

    def maintain(self) -> float:
        """Run due health probes now (see `LoadBalance.maintain`)."""
        return self._lb.maintain()

    async def amaintain(self) -> float:
        """Async `maintain`."""
        return await self._lb.amaintain()

    def start_background(self) -> Any:
        """Start the health-check thread (see `LoadBalance.start_background`)."""
        return self._lb.start_background()

    async def run_background(self) -> None:
        """Run health checks forever in the current task (see `LoadBalance.run_background`)."""
        await self._lb.run_background()

    def stats(self) -> dict[str, Any]:
        """`LoadBalance.stats` plus ``primary_available``."""
        out = self._lb.stats()
        out["primary_available"] = self.primary_state.available
        return out

    @property
    def primary_available(self) -> bool:
        """``True`` unless the primary is known to be down."""
        return self.primary_state.available
