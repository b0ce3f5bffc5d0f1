"""`Bulkhead`: limit how many calls run at once, with an optional bounded FIFO queue.

Flow design: the admission state lives in `buttress._state.slots.SlotPool` (slots, FIFO
queue, the grant/abandon protocol); waiting uses the runtime's one-shot waiters
(`buttress._runtime.base`), so the same flow runs on threads, asyncio, trio and the lab's
simulator, and sync and async callers can share one bulkhead (and one queue).

Happy path (a slot is free and nobody waits): take the pool's lock, bump a counter,
release the lock, call, and in ``finally`` return the slot. No clock read, no allocation,
no context lookup (unless ``key=`` is given: a per-key bulkhead materialises the
`Context` to compute the key).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .._core.context import CURRENT, DEADLINE, Context, materialize
from .._core.env import Env
from .._core.gauges import register_gauge
from .._core.invoke import ainvoke
from .._core.validate import check_count, check_optional_duration
from .._exceptions import BulkheadFullError, ConfigurationError
from .._state.partitions import Partitions
from .._state.slots import GRANTED, SlotPool, Ticket
from ..events import CallRejected
from ..typing import AsyncStep, SyncStep

__all__ = ["Bulkhead", "BulkheadSnapshot"]

_ALL: Any = object()
_RETRY: Any = object()  # a per-key partition was evicted under us: look it up again


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    """A point-in-time view of a bulkhead (or of one of its partitions).

    Attributes:
        in_use: Slots held by running calls (0..``max_concurrent`` per partition).
        queued: Callers waiting for a slot (0..``max_queued`` per partition).
        max_concurrent: Configured slots per partition.
        max_queued: Configured queue length per partition.
        partitions: Number of partitions tracked (1 for an unkeyed bulkhead; for a keyed
            one, the keys currently held in memory).
        retry_after: Current estimate of seconds until a slot frees, or ``None``.
    """

    in_use: int
    queued: int
    max_concurrent: int
    max_queued: int
    partitions: int = 1
    retry_after: float | None = None

    @property
    def available(self) -> int:
        """Free slots (for a keyed bulkhead's total: summed over tracked partitions)."""
        return self.max_concurrent * self.partitions - self.in_use


class Bulkhead:
    """Run at most ``max_concurrent`` calls at once; queue up to ``max_queued`` more.

    Works for threads (sync calls) and tasks (asyncio, trio), even mixed on one instance:
    the state lives in the `Bulkhead` object, so share the object (or a pipeline holding
    it) between call sites that should share the limit.

    Args:
        max_concurrent: Slots: the most calls running at once (per partition), an int >= 1.
        max_queued: Callers allowed to wait for a slot (per partition), an int >= 0
            (default 0: reject at once when every slot is taken). Waiters are admitted
            strictly first in, first out; a newcomer never overtakes a waiter.
        max_wait: Longest a caller waits in the queue, in seconds (float or `timedelta`)
            >= 0. ``None`` (default) means "as long as the context deadline allows": until
            the deadline of an enclosing `Timeout` or outer pipeline, or indefinitely when
            there is none. The wait always ends at the context deadline, whichever is
            earlier. Ignored when ``max_queued`` is 0.
        key: Optional ``key(context) -> Hashable`` for per-key partitions (per tenant,
            per host): each key gets its own ``max_concurrent`` slots and
            ``max_queued`` queue. ``None`` (default): one shared partition.
        max_keys: Most partitions kept in memory, an int >= 1 (default 10,000). The least
            recently used idle partition is forgotten beyond it; a partition with a held
            slot or a waiter is never forgotten (that would grant its slots twice), so
            memory is bounded by ``max_keys`` plus the partitions in use.
        name: Strategy name for events and metrics (default ``"bulkhead"``).

    Rejection raises `BulkheadFullError` (a `RejectedError`) with ``retry_after``: an
    estimate of the seconds until a slot frees, namely the moving average of the interval
    between slot releases observed while the partition was full; ``None`` until two such
    releases were seen (the estimate costs a clock read per release, only while full).

    Cancellation, timeouts and races: a waiter that is cancelled (or whose `Timeout`
    fires, or whose ``max_wait`` expires) leaves the queue; if a slot was granted to it at
    that very moment, the slot is handed to the next waiter, never lost and never granted
    twice. A running call's slot is returned however it ends (result, exception or
    cancellation).

    Events: `CallRejected` with ``reason="bulkhead_full"`` (every slot and queue place
    taken, or ``max_wait`` expired) or ``reason="deadline"`` (the context deadline left no
    time to wait, or expired while waiting), and ``key`` for per-key bulkheads.

    Raises:
        ConfigurationError: ``max_concurrent`` < 1, ``max_queued`` < 0, negative or NaN
            ``max_wait``, ``key`` not callable, ``max_keys`` < 1, empty ``name``.
    """

    __slots__ = (
        "__weakref__",
        "_partitions",
        "_pool",
        "key",
        "max_concurrent",
        "max_keys",
        "max_queued",
        "max_wait",
        "name",
    )

    Snapshot = BulkheadSnapshot

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_queued: int = 0,
        max_wait: float | timedelta | None = None,
        key: Callable[[Context], Hashable] | None = None,
        max_keys: int = 10_000,
        name: str = "bulkhead",
    ) -> None:
        self.max_concurrent = check_count("Bulkhead", "max_concurrent", max_concurrent)
        self.max_queued = check_count("Bulkhead", "max_queued", max_queued, minimum=0)
        self.max_wait = check_optional_duration("Bulkhead", "max_wait", max_wait)
        if key is not None and not callable(key):
            raise ConfigurationError.invalid(
                "Bulkhead", "key", key, "a callable key(context) -> hashable, or None"
            )
        self.key = key
        self.max_keys = check_count("Bulkhead", "max_keys", max_keys)
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("Bulkhead", "name", name, "a non-empty str")
        self.name = name
        self._pool = SlotPool(self.max_concurrent, self.max_queued)
        self._partitions: Partitions[Hashable, SlotPool] | None = None
        if key is not None:
            self._partitions = Partitions(
                self._new_pool, max_keys=self.max_keys, pinned=SlotPool.busy
            )

    def _new_pool(self, key: Hashable) -> SlotPool:
        return SlotPool(self.max_concurrent, self.max_queued)

    @property
    def _needs_context(self) -> bool:
        """Whether calls need an execution record of their own.

        Private protocol with `Pipeline`: only when a ``key=`` function reads the context.
        Admission alone never does, so a pipeline made only of admission strategies
        publishes no Context (see `Pipeline`).
        """
        return self.key is not None

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.max_concurrent}, max_queued={self.max_queued}, "
            f"max_wait={self.max_wait!r}, key={self.key!r}, name={self.name!r})"
        )

    # -- introspection ---------------------------------------------------------------------

    def snapshot(self, key: Hashable = _ALL) -> BulkheadSnapshot:
        """Current in-use and queued counts.

        Args:
            key: For a keyed bulkhead, the partition to report (an unknown key reports
                zeros); omitted, the totals over every tracked partition. Ignored by an
                unkeyed bulkhead.
        """
        parts = self._partitions
        if parts is None:
            pool = self._pool
            return BulkheadSnapshot(
                pool.in_use, pool.queued, self.max_concurrent, self.max_queued, 1, pool.interval
            )
        if key is not _ALL:
            found = parts.peek(key)
            if found is None:
                return BulkheadSnapshot(0, 0, self.max_concurrent, self.max_queued, 1)
            return BulkheadSnapshot(
                found.in_use,
                found.queued,
                self.max_concurrent,
                self.max_queued,
                1,
                found.interval,
            )
        in_use = queued = count = 0
        for item in parts.items():  # a snapshot taken under the partitions' lock
            pool = item[1]
            in_use += pool.in_use
            queued += pool.queued
            count += 1
        return BulkheadSnapshot(in_use, queued, self.max_concurrent, self.max_queued, count)

    # -- shared slow-path pieces -------------------------------------------------------------

    def _window(self, env: Env) -> tuple[float | None, bool, str]:
        """(wait-until, may wait, reason if the wait fails) for a caller about to queue."""
        if self.max_queued == 0:
            return None, False, "bulkhead_full"
        record = CURRENT.get()
        deadline = record[DEADLINE] if record is not None else None
        max_wait = self.max_wait
        if deadline is None and max_wait is None:
            return None, True, "bulkhead_full"
        now = env.clock.now()
        until = None if max_wait is None else now + max_wait
        reason = "bulkhead_full"
        if deadline is not None and (until is None or deadline <= until):
            until, reason = deadline, "deadline"
        return until, until > now, reason  # type: ignore[operator]

    def _reject(
        self,
        env: Env,
        pool: SlotPool,
        key: Hashable,
        reason: str,
        keyed: bool,
        waited: bool = False,
    ) -> BulkheadFullError:
        retry_after = pool.retry_after()
        shown = str(key) if keyed else None
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
        where = f" for key {shown!r}" if keyed else ""
        if reason == "deadline":
            why = "no slot before the context deadline"
        elif waited and self.max_wait is not None:
            why = f"no slot within max_wait={self.max_wait:g}s"
        else:
            why = "full"
        return BulkheadFullError(
            f"{env.name}: bulkhead {self.name!r}{where} {why} "
            f"({pool.in_use}/{self.max_concurrent} running, "
            f"{pool.queued}/{self.max_queued} queued)",
            strategy=self.name,
            retry_after=retry_after,
        )

    def _pool_for(self) -> tuple[SlotPool, Hashable]:
        record = CURRENT.get()
        if record is None:  # pragma: no cover - a pipeline always pushes a record
            raise RuntimeError("Bulkhead with key= must run inside a pipeline")
        key = self.key(materialize(record))  # type: ignore[misc]
        return self._partitions.get(key), key  # type: ignore[union-attr]

    def _settle(self, got: Ticket | bool, pool: SlotPool, key: Hashable, env: Env) -> Any:
        """For a keyed bulkhead: undo an admission into a partition evicted meanwhile."""
        if self._partitions is None or got is False or self._partitions.peek(key) is pool:
            return got
        if got is True:
            pool.release(env.clock.now)
        else:
            pool.abandon(got, env.clock.now)
        return _RETRY

    # -- sync ---------------------------------------------------------------------------------

    def _acquire_sync(self, env: Env, pool: SlotPool, key: Hashable, keyed: bool) -> bool:
        """Slow path: queue for a slot. ``True`` = slot held; ``False`` = look up again."""
        until, may_wait, reason = self._window(env)
        waiter = env.sync_runtime().waiter() if may_wait else None
        got = self._settle(pool.enqueue(waiter, until), pool, key, env)
        if got is _RETRY:
            return False
        if got is True:
            return True
        if got is False:
            raise self._reject(env, pool, key, reason if waiter is None else "bulkhead_full", keyed)
        try:
            woke = waiter.wait(until)  # type: ignore[union-attr]
        except BaseException:
            pool.abandon(got, env.clock.now)
            raise
        if woke and got.state == GRANTED:
            return True
        pool.abandon(got, env.clock.now)
        raise self._reject(env, pool, key, reason, keyed, waited=True)

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        register_gauge(self, env.name, env.clock, _read_gauges)
        now = env.clock.now
        acquire = self._acquire_sync
        if self._partitions is not None:
            pool_for = self._pool_for
            peek = self._partitions.peek

            def keyed_bulkhead_step(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                while True:
                    pool, key = pool_for()
                    if pool.try_acquire():
                        if peek(key) is pool:
                            break
                        pool.release(now)  # evicted between lookup and admission
                    elif acquire(env, pool, key, True):
                        break
                try:
                    return next_step(fn, args, kwargs)
                finally:
                    pool.release(now)

            return keyed_bulkhead_step

        pool = self._pool
        lock = pool.lock
        limit = pool.max_concurrent
        release = pool.release

        def bulkhead_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            with lock:
                fast = pool.in_use < limit and not pool.queued
                if fast:
                    pool.in_use += 1
            if not fast:
                acquire(env, pool, None, False)
            try:
                return next_step(fn, args, kwargs)
            finally:
                release(now)

        return bulkhead_step

    # -- async --------------------------------------------------------------------------------

    async def _acquire_async(self, env: Env, pool: SlotPool, key: Hashable, keyed: bool) -> bool:
        """Slow path: queue for a slot. ``True`` = slot held; ``False`` = look up again."""
        until, may_wait, reason = self._window(env)
        waiter = env.async_runtime().waiter() if may_wait else None
        got = self._settle(pool.enqueue(waiter, until), pool, key, env)
        if got is _RETRY:
            return False
        if got is True:
            return True
        if got is False:
            raise self._reject(env, pool, key, reason if waiter is None else "bulkhead_full", keyed)
        try:
            woke = await waiter.wait(until)  # type: ignore[union-attr]
        except BaseException:
            pool.abandon(got, env.clock.now)
            raise
        if woke and got.state == GRANTED:
            return True
        pool.abandon(got, env.clock.now)
        raise self._reject(env, pool, key, reason, keyed, waited=True)

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        register_gauge(self, env.name, env.clock, _read_gauges)
        now = env.clock.now
        acquire = self._acquire_async
        direct = next_step is ainvoke
        if self._partitions is not None:
            pool_for = self._pool_for
            peek = self._partitions.peek

            async def keyed_bulkhead_step(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                while True:
                    pool, key = pool_for()
                    if pool.try_acquire():
                        if peek(key) is pool:
                            break
                        pool.release(now)  # evicted between lookup and admission
                    elif await acquire(env, pool, key, True):
                        break
                try:
                    return await next_step(fn, args, kwargs)
                finally:
                    pool.release(now)

            return keyed_bulkhead_step

        pool = self._pool
        lock = pool.lock
        limit = pool.max_concurrent
        release = pool.release

        async def bulkhead_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            with lock:
                fast = pool.in_use < limit and not pool.queued
                if fast:
                    pool.in_use += 1
            if not fast:
                await acquire(env, pool, None, False)
            try:
                return await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
            finally:
                release(now)

        return bulkhead_step


def _read_gauges(bulkhead: Bulkhead, now: float) -> list[tuple[str, float, dict[str, str]]]:
    """Gauge-registry reader: in-use and queued totals (summed over partitions)."""
    snap = bulkhead.snapshot()
    attrs = {"strategy": bulkhead.name}
    return [
        ("buttress.bulkhead.in_use", float(snap.in_use), attrs),
        ("buttress.bulkhead.queued", float(snap.queued), attrs),
    ]
