"""`RateLimiter`: a token bucket (GCRA) that rejects, or waits when the wait fits.

Flow design: the decision is one call into a GCRA bucket (`buttress._state.gcra`), a
per-key table, or a `BucketStore` (shared between processes). The happy path of the
default limiter (unkeyed, in-memory, fixed cost) is one clock read and one locked GCRA
step; only a call that cannot be admitted at once reads the context deadline, takes
again with its wait budget, sleeps through the runtime and emits events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Any

from .._core.context import CURRENT, DEADLINE, Context, materialize
from .._core.env import Env
from .._core.invoke import ainvoke
from .._core.store_guard import StoreGuard
from .._core.validate import check_count, check_duration, check_positive_number
from .._exceptions import ConfigurationError, RateLimitedError
from .._state.gcra import Gcra, GcraTable
from ..events import CallRejected, RateLimitWaited
from ..typing import AsyncStep, SyncStep

__all__ = ["RateLimiter"]

_UNSET: Any = object()


class RateLimiter:
    """Admit at most ``rate`` calls per second on average, in bursts of up to ``burst``.

    A token bucket of capacity ``burst`` refilled at ``rate`` permits per second, computed
    as GCRA (one number per bucket, no background thread, time from the pipeline's
    monotonic clock). A call takes ``cost`` permits. When none are available it is
    rejected with `RateLimitedError`, or, with ``max_wait``, it *reserves* its permits and
    sleeps until they are due, if that is soon enough.

    Args:
        rate: Permits per second, a finite number > 0 (e.g. ``0.5`` = one call every 2 s).
        burst: Bucket capacity in permits, a finite number >= 1: how many calls may pass
            at once after a quiet period. ``burst=1`` spaces calls evenly.
        max_wait: Longest a call may wait for its permits, in seconds (float or
            `timedelta`) >= 0. Default ``0``: never wait, reject at once. ``None``: wait
            as long as the context deadline allows (indefinitely without a deadline).
            A wait never extends past the context deadline of an enclosing `Timeout`,
            outer pipeline or `scope(timeout=...)`.
        key: Optional ``key(context) -> Hashable`` for per-key limits (per tenant, per
            client IP): each key has its own bucket with the same ``rate`` and ``burst``.
            ``None`` (default): one bucket for every call.
        max_keys: Most per-key buckets kept in memory, an int >= 1 (default 10,000). The
            least recently used key is forgotten beyond it and comes back with a full
            bucket, so a key evicted before it refilled can get one extra burst; keep
            ``max_keys`` above the number of keys active within ``burst / rate`` seconds.
        cost: Permits per call: a number > 0 and <= ``burst`` (default 1), or
            ``cost(context) -> number`` evaluated per call (a call costing more than
            ``burst`` can never be admitted and is rejected with ``retry_after=None``).
        store: A `buttress.stores.BucketStore` to share buckets between processes (e.g.
            the Redis store); ``None`` (default): this object's own memory. A store
            measures time on its own clock.
        fail_open: With a store: on a store error use the local in-memory bucket
            (``True``, default) or raise `StoreError` (``False``). See `StoreGuard`.
        name: Strategy name for events, metrics and store namespaces (default
            ``"rate_limiter"``).

    ``RateLimitedError.retry_after`` is exact: the seconds until the call's permits are
    available (a call made that much later is admitted without waiting, absent other
    traffic). A waiting call that is cancelled forfeits its reserved permits (the limiter
    never admits more than its rate; at most ``rate * max_wait`` permits can be lost).

    Events: `CallRejected` (``reason="rate_limited"``, or ``"deadline"`` when only the
    context deadline prevented waiting; ``retry_after``; ``key``) and `RateLimitWaited`
    (``wait`` seconds, after the wait).

    Raises:
        ConfigurationError: ``rate`` <= 0, ``burst`` < 1, NaN or infinite numbers, a
            negative ``max_wait``, ``cost`` <= 0 or > ``burst``, a non-callable ``key``,
            ``max_keys`` < 1, a ``store`` without ``bucket_take``, an empty ``name``.
    """

    __slots__ = (
        "_bucket",
        "_cost_fn",
        "_guard",
        "_table",
        "burst",
        "cost",
        "fail_open",
        "interval",
        "key",
        "max_keys",
        "max_wait",
        "name",
        "rate",
        "store",
        "tolerance",
    )

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_wait: float | timedelta | None = 0.0,
        key: Callable[[Context], Hashable] | None = None,
        max_keys: int = 10_000,
        cost: float | Callable[[Context], float] = 1.0,
        store: Any = None,
        fail_open: bool = True,
        name: str = "rate_limiter",
    ) -> None:
        owner = "RateLimiter"
        self.rate = check_positive_number(owner, "rate", rate)
        burst_value = (
            float(burst)
            if isinstance(burst, (int, float)) and not isinstance(burst, bool)
            else math.nan
        )
        if not (1.0 <= burst_value < math.inf):  # NaN, a bool or a non-number fails too
            raise ConfigurationError.invalid(owner, "burst", burst, "a finite number >= 1")
        self.burst = burst_value
        self.max_wait: float | None = (
            None if max_wait is None else check_duration(owner, "max_wait", max_wait)
        )
        if key is not None and not callable(key):
            raise ConfigurationError.invalid(
                owner, "key", key, "a callable key(context) -> hashable, or None"
            )
        self.key = key
        self.max_keys = check_count(owner, "max_keys", max_keys)
        self._cost_fn: Callable[[Context], float] | None = None
        if callable(cost):
            self._cost_fn = cost
            self.cost = 1.0
        else:
            value = check_positive_number(owner, "cost", cost)
            if value > self.burst:
                raise ConfigurationError.invalid(
                    owner, "cost", cost, f"a number > 0 and <= burst ({self.burst:g})"
                )
            self.cost = value
        if store is not None and not callable(getattr(store, "bucket_take", None)):
            raise ConfigurationError.invalid(
                owner, "store", store, "a BucketStore (with bucket_take/abucket_take) or None"
            )
        self.store = store
        if not isinstance(fail_open, bool):
            raise ConfigurationError.invalid(owner, "fail_open", fail_open, "a bool")
        self.fail_open = fail_open
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid(owner, "name", name, "a non-empty str")
        self.name = name
        self.interval = 1.0 / self.rate
        self.tolerance = self.burst * self.interval
        self._bucket = Gcra(self.rate, self.burst)
        self._table = GcraTable(self.max_keys) if key is not None else None
        self._guard = StoreGuard(store, name, fail_open=fail_open) if store is not None else None

    @property
    def _needs_context(self) -> bool:
        """Whether calls need an execution record of their own.

        Private protocol with `Pipeline`: only when ``key=`` or a ``cost`` function
        reads the context.
        Admission alone never does, so a pipeline made only of admission strategies
        publishes no Context (see `Pipeline`).
        """
        return self.key is not None or self._cost_fn is not None

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.rate!r}, {self.burst!r}, max_wait={self.max_wait!r}, "
            f"key={self.key!r}, name={self.name!r})"
        )

    # -- introspection ---------------------------------------------------------------------

    def available(self, now: float, *, key: Hashable = _UNSET) -> float:
        """Permits that a call could take at ``now`` without waiting (local state only).

        Args:
            now: A reading of the pipeline's clock (``pipeline.clock.now()``).
            key: For a keyed limiter, the key to report (an unknown key has a full bucket).
        """
        if self._table is None or key is _UNSET:
            return self._bucket.available(now)
        wait = self._table.wait_time(key, now, self.burst, self.interval, self.tolerance)
        return max(0.0, self.burst - wait * self.rate)

    # -- shared pieces -------------------------------------------------------------------------

    def _prepare(self) -> tuple[Hashable, float]:
        """Key and cost of the current call (materialises the context; slow modes only)."""
        record = CURRENT.get()
        ctx = materialize(record) if record is not None else None
        key: Hashable = None
        if self.key is not None:
            if ctx is None:  # pragma: no cover - a pipeline always pushes a record
                raise RuntimeError("RateLimiter with key= must run inside a pipeline")
            key = self.key(ctx)
        cost = self.cost
        if self._cost_fn is not None and ctx is not None:
            value = self._cost_fn(ctx)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError.invalid(
                    "RateLimiter", "cost", value, "cost(context) to return a number > 0"
                )
            cost = float(value)
        return key, cost

    def _budget(self, now: float) -> tuple[float, bool]:
        """(seconds this call may wait, whether the context deadline is what limits it)."""
        max_wait = self.max_wait
        if max_wait == 0.0:
            return 0.0, False
        limit = math.inf if max_wait is None else max_wait
        record = CURRENT.get()
        deadline = record[DEADLINE] if record is not None else None
        if deadline is not None and deadline - now < limit:
            return max(0.0, deadline - now), True
        return limit, False

    def _take_local(self, key: Hashable, cost: float, now: float, budget: float) -> float:
        table = self._table
        if table is None:
            return self._bucket.take(now, cost, budget)
        return table.take(key, now, cost, self.interval, self.tolerance, budget)

    def _reject(
        self, env: Env, key: Hashable, wait: float, budget: float, by_deadline: bool
    ) -> RateLimitedError:
        retry_after = None if math.isinf(wait) else wait
        reason = "rate_limited"
        if by_deadline and (self.max_wait is None or wait <= self.max_wait):
            reason = "deadline"
        shown = None if self.key is None else str(key)
        if env.listeners:
            env.emit(
                CallRejected(
                    pipeline=env.name,
                    strategy=self.name,
                    time=env.clock.now(),
                    reason=reason,
                    retry_after=retry_after,
                    key=shown,
                )
            )
        where = f" for key {shown!r}" if shown is not None else ""
        if retry_after is None:
            detail = f"the call's cost exceeds the burst of {self.burst:g} permits"
        elif reason == "deadline":
            detail = f"next permit in {wait:.6g}s, after the context deadline"
        else:
            detail = f"next permit in {wait:.6g}s"
        return RateLimitedError(
            f"{env.name}: rate limiter {self.name!r}{where} over {self.rate:g}/s "
            f"(burst {self.burst:g}): {detail}",
            strategy=self.name,
            retry_after=retry_after,
        )

    def _waited(self, env: Env, key: Hashable, wait: float) -> None:
        if env.listeners:
            env.emit(
                RateLimitWaited(
                    pipeline=env.name,
                    strategy=self.name,
                    time=env.clock.now(),
                    wait=wait,
                    key=None if self.key is None else str(key),
                )
            )

    def _store_args(self, key: Hashable, cost: float, budget: float) -> tuple[Any, ...]:
        return (
            self.name,
            "" if self.key is None else str(key),
            cost,
            self.rate,
            self.burst,
            budget,
        )

    # -- sync --------------------------------------------------------------------------------

    def _take_sync(self, env: Env, key: Hashable, cost: float, now: float, budget: float) -> float:
        guard = self._guard
        if guard is not None and guard.usable(now):
            try:
                wait: float = self.store.bucket_take(*self._store_args(key, cost, budget))
            except Exception as exc:
                guard.failed(env, "bucket_take", exc, now)  # raises when fail-closed
            else:
                if guard.down:
                    guard.succeeded(env, now)
                return wait
        return self._take_local(key, cost, now, budget)

    def _admit_sync(self, env: Env, key: Hashable, cost: float, now: float) -> None:
        """Slow path: wait if the budget allows, else raise `RateLimitedError`."""
        budget, by_deadline = self._budget(now)
        wait = self._take_sync(env, key, cost, now, budget)
        if wait > budget or wait == math.inf:
            raise self._reject(env, key, wait, budget, by_deadline)
        if wait > 0.0:
            env.sync_runtime().sleep(wait)
            self._waited(env, key, wait)

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        now = env.clock.now
        admit = self._admit_sync
        if self.key is None and self._cost_fn is None and self._guard is None:
            take = self._bucket.take
            cost = self.cost

            def rate_limiter_step(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                t = now()
                if take(t, cost, 0.0):  # not admitted now (nothing was taken)
                    admit(env, None, cost, t)
                return next_step(fn, args, kwargs)

            return rate_limiter_step

        prepare = self._prepare

        def general_rate_limiter_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key, cost = prepare()
            admit(env, key, cost, now())
            return next_step(fn, args, kwargs)

        return general_rate_limiter_step

    # -- async -------------------------------------------------------------------------------

    async def _take_async(
        self, env: Env, key: Hashable, cost: float, now: float, budget: float
    ) -> float:
        guard = self._guard
        if guard is not None and guard.usable(now):
            try:
                wait: float = await self.store.abucket_take(*self._store_args(key, cost, budget))
            except Exception as exc:
                guard.failed(env, "bucket_take", exc, now)  # raises when fail-closed
            else:
                if guard.down:
                    guard.succeeded(env, now)
                return wait
        return self._take_local(key, cost, now, budget)

    async def _admit_async(self, env: Env, key: Hashable, cost: float, now: float) -> None:
        """Slow path: wait if the budget allows, else raise `RateLimitedError`."""
        budget, by_deadline = self._budget(now)
        wait = await self._take_async(env, key, cost, now, budget)
        if wait > budget or wait == math.inf:
            raise self._reject(env, key, wait, budget, by_deadline)
        if wait > 0.0:
            await env.async_runtime().sleep(wait)
            self._waited(env, key, wait)

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        now = env.clock.now
        admit = self._admit_async
        direct = next_step is ainvoke
        if self.key is None and self._cost_fn is None and self._guard is None:
            take = self._bucket.take
            cost = self.cost

            async def rate_limiter_step(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                t = now()
                if take(t, cost, 0.0):  # not admitted now (nothing was taken)
                    await admit(env, None, cost, t)
                return await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))

            return rate_limiter_step

        prepare = self._prepare

        async def general_rate_limiter_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key, cost = prepare()
            await admit(env, key, cost, now())
            return await next_step(fn, args, kwargs)

        return general_rate_limiter_step
