"""In-memory stores: the embedded defaults, and stand-ins for Redis in tests.

They implement the same protocols as the Redis stores with the same semantics (relative
durations measured on the store's own clock, fencing tokens, invalidation callbacks), so
everything a strategy does with a shared store can be tested without a server.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections.abc import Callable, Hashable

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.validate import check_count
from .._state.circuit import CLOSED, Admission, CircuitPolicy, CircuitSnapshot, CircuitState
from .._state.gcra import GcraTable
from .base import CacheRecord, CircuitAction

__all__ = [
    "MemoryBucketStore",
    "MemoryBudgetStore",
    "MemoryCacheStore",
    "MemoryCircuit",
    "MemoryCircuitStore",
]


class _Subscription:
    __slots__ = ("_callback", "_store")

    def __init__(self, store: MemoryCacheStore, callback: Callable[[str, str], None]) -> None:
        self._store = store
        self._callback = callback

    def close(self) -> None:
        subs = self._store._subs
        for ns, callbacks in subs.items():
            subs[ns] = [c for c in callbacks if c is not self._callback]


class MemoryCacheStore:
    """A `CacheStore` in this process's memory (a shared remote tier for tests and demos).

    Args:
        clock: The store's clock (default: the system monotonic clock). Durations are
            measured on it, like a Redis server measures them with ``TIME``.
        max_entries: Most values kept (the oldest written are dropped first), >= 1.

    Values past their retention are dropped when read and on every write.
    """

    def __init__(self, clock: Clock | None = None, *, max_entries: int = 100_000) -> None:
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self.max_entries = max_entries
        self.description = "memory"
        # key -> (payload, fresh_until, hard_until, delta, token)
        self._data: dict[tuple[str, str], tuple[bytes, float, float, float, int]] = {}
        self._locks: dict[tuple[str, str], tuple[int, float]] = {}
        self._fence = itertools.count(1)
        self._subs: dict[str, list[Callable[[str, str], None]]] = {}
        self._mutex = threading.Lock()
        self.gets = 0
        self.sets = 0

    def __repr__(self) -> str:
        return f"MemoryCacheStore(entries={len(self._data)})"

    def cache_get(self, ns: str, key: str) -> CacheRecord | None:
        """See `CacheStore.cache_get`."""
        now = self.clock.now()
        with self._mutex:
            self.gets += 1
            item = self._data.get((ns, key))
            if item is None:
                return None
            if now >= item[2]:
                del self._data[(ns, key)]
                return None
        return CacheRecord(item[0], item[1] - now, item[3], item[4])

    def cache_set(
        self, ns: str, key: str, payload: bytes, ttl: float, keep: float, delta: float, token: int
    ) -> bool:
        """See `CacheStore.cache_set` (fenced by ``token``)."""
        now = self.clock.now()
        with self._mutex:
            old = self._data.get((ns, key))
            if old is not None and now < old[2] and old[4] > token:
                return False
            self.sets += 1
            self._data[(ns, key)] = (payload, now + ttl, now + ttl + keep, delta, token)
            if len(self._data) > self.max_entries:
                for k in [k for k, v in self._data.items() if now >= v[2]]:
                    del self._data[k]
                while len(self._data) > self.max_entries:
                    del self._data[next(iter(self._data))]
        return True

    def _publish(self, ns: str, kind: str, key: str) -> None:
        for callback in list(self._subs.get(ns, ())):
            callback(kind, key)

    def cache_delete(self, ns: str, key: str) -> None:
        """See `CacheStore.cache_delete`."""
        with self._mutex:
            self._data.pop((ns, key), None)
        self._publish(ns, "key", key)

    def cache_delete_prefix(self, ns: str, prefix: str) -> int:
        """See `CacheStore.cache_delete_prefix`."""
        with self._mutex:
            doomed = [k for k in self._data if k[0] == ns and k[1].startswith(prefix)]
            for k in doomed:
                del self._data[k]
        self._publish(ns, "prefix", prefix)
        return len(doomed)

    def cache_lock(self, ns: str, key: str, lease: float) -> tuple[bool, int, float]:
        """See `CacheStore.cache_lock`."""
        now = self.clock.now()
        with self._mutex:
            token = next(self._fence)
            held = self._locks.get((ns, key))
            if held is not None and now < held[1]:
                return False, token, held[1] - now
            self._locks[(ns, key)] = (token, now + lease)
            return True, token, 0.0

    def cache_unlock(self, ns: str, key: str, token: int) -> None:
        """See `CacheStore.cache_unlock`."""
        with self._mutex:
            held = self._locks.get((ns, key))
            if held is not None and held[0] == token:
                del self._locks[(ns, key)]

    def cache_subscribe(self, ns: str, callback: Callable[[str, str], None]) -> _Subscription:
        """See `CacheStore.cache_subscribe` (callbacks run in the invalidating thread)."""
        self._subs.setdefault(ns, []).append(callback)
        return _Subscription(self, callback)

    async def acache_get(self, ns: str, key: str) -> CacheRecord | None:
        """Async `cache_get`."""
        return self.cache_get(ns, key)

    async def acache_set(
        self, ns: str, key: str, payload: bytes, ttl: float, keep: float, delta: float, token: int
    ) -> bool:
        """Async `cache_set`."""
        return self.cache_set(ns, key, payload, ttl, keep, delta, token)

    async def acache_delete(self, ns: str, key: str) -> None:
        """Async `cache_delete`."""
        self.cache_delete(ns, key)

    async def acache_delete_prefix(self, ns: str, prefix: str) -> int:
        """Async `cache_delete_prefix`."""
        return self.cache_delete_prefix(ns, prefix)

    async def acache_lock(self, ns: str, key: str, lease: float) -> tuple[bool, int, float]:
        """Async `cache_lock`."""
        return self.cache_lock(ns, key, lease)

    async def acache_unlock(self, ns: str, key: str, token: int) -> None:
        """Async `cache_unlock`."""
        self.cache_unlock(ns, key, token)


def budget_step(
    kind: str,
    params: tuple[float, ...],
    balance: float | None,
    last: float | None,
    now: float,
    deposit: float,
) -> float:
    """The shared budget arithmetic (the Redis Lua script mirrors it line by line).

    ``"ratio"``: params ``(ratio, min_retries_per_second, window)``; the balance decays
    with time constant ``window`` and grows by ``ratio * deposit`` plus
    ``min_retries_per_second`` per second (`RatioBudget`). ``"bucket"``: params
    ``(capacity,)``; the balance grows by ``deposit`` up to ``capacity``.
    """
    if kind == "ratio":
        ratio, floor, window = params
        if balance is None:
            balance = floor * window
        elapsed = 0.0 if last is None else max(0.0, now - last)
        add = ratio * deposit + floor * elapsed
        if elapsed > 0.0:
            decay = math.exp(-elapsed / window)
            return balance * decay + add * (1.0 - decay) * window / elapsed
        return balance + add
    (capacity,) = params
    if balance is None:
        balance = capacity
    return min(capacity, balance + deposit)


class MemoryBudgetStore:
    """A `BudgetStore` in this process's memory (for tests; same arithmetic as Redis)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self.description = "memory"
        self._state: dict[str, tuple[float, float]] = {}
        self._seen: dict[tuple[str, str], float] = {}
        self._mutex = threading.Lock()

    def _new_deposit(self, name: str, client: str, total: float) -> float:
        seen = self._seen.get((name, client), 0.0)
        self._seen[(name, client)] = max(seen, total)
        return max(0.0, total - seen)

    def budget_withdraw(
        self,
        name: str,
        kind: str,
        params: tuple[float, ...],
        client: str,
        total: float,
        cost: float,
    ) -> tuple[bool, float]:
        """See `BudgetStore.budget_withdraw`."""
        now = self.clock.now()
        with self._mutex:
            balance, last = self._state.get(name, (None, None))
            deposit = self._new_deposit(name, client, total)
            balance = budget_step(kind, params, balance, last, now, deposit)
            taken = balance >= cost
            if taken:
                balance -= cost
            self._state[name] = (balance, now)
            return taken, balance

    def budget_deposit(
        self, name: str, kind: str, params: tuple[float, ...], client: str, total: float
    ) -> float:
        """See `BudgetStore.budget_deposit`."""
        now = self.clock.now()
        with self._mutex:
            balance, last = self._state.get(name, (None, None))
            deposit = self._new_deposit(name, client, total)
            balance = budget_step(kind, params, balance, last, now, deposit)
            self._state[name] = (balance, now)
            return balance

    def __repr__(self) -> str:
        return "MemoryBudgetStore()"


# -- circuit breaker ---------------------------------------------------------------------------


class MemoryCircuit:
    """One breaker's state in this process (implements `FastCircuit`).

    Args:
        policy: The breaker's thresholds.

    Attributes:
        state: The wrapped `CircuitState` (read it only under ``lock``).
        lock: The lock serialising every operation.
    """

    __slots__ = (
        "_ok",
        "_ok_base",
        "batch_until",
        "closed_gen",
        "count_success",
        "lock",
        "state",
    )

    def __init__(self, policy: CircuitPolicy) -> None:
        self.state = CircuitState(policy)
        self.lock = threading.Lock()
        self._ok = itertools.count()
        self._ok_base = 0
        self.count_success = self._ok.__next__
        self.closed_gen = 0
        self.batch_until = math.inf if policy.window is not None else -math.inf

    # -- internals (call with the lock held) --------------------------------------------

    def _fold(self, now: float) -> None:
        seen = next(self._ok)
        pending = seen - self._ok_base
        self._ok_base = seen + 1
        if pending:
            self.state.add_successes(pending, now)

    def _publish(self, now: float) -> None:
        state = self.state
        if state.state == CLOSED:
            self.batch_until = state.batch_until(now)
            self.closed_gen = state.generation
        else:
            self.closed_gen = -1

    # -- Circuit protocol ------------------------------------------------------------------

    def try_acquire(self, now: float, rng: random.Random | None = None) -> Admission:
        """See `buttress.stores.base.Circuit.try_acquire`."""
        with self.lock:
            self._fold(now)
            admission = self.state.try_acquire(now, rng)
            if admission.previous_state is not None:
                self._publish(now)
            return admission

    def record(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> CircuitSnapshot:
        """See `buttress.stores.base.Circuit.record`."""
        with self.lock:
            self._fold(now)
            previous = self.state.record(token, failed, duration, now, rng)
            self._publish(now)
            return self.state.snapshot(now, previous)

    def record_fast(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> str | None:
        """Like `record`, but return only the previous state name on a change (no
        snapshot allocation; the strategy's failure path uses it)."""
        with self.lock:
            self._fold(now)
            previous = self.state.record(token, failed, duration, now, rng)
            self._publish(now)
            return previous

    def release(self, token: int, now: float) -> None:
        """See `buttress.stores.base.Circuit.release`."""
        with self.lock:
            self.state.release(token, now)

    def snapshot(self, now: float) -> CircuitSnapshot:
        """See `buttress.stores.base.Circuit.snapshot`."""
        with self.lock:
            self._fold(now)
            return self.state.snapshot(now)

    def transition(self, action: CircuitAction, now: float) -> CircuitSnapshot:
        """See `buttress.stores.base.Circuit.transition`."""
        with self.lock:
            self._fold(now)
            state = self.state
            if action == "isolate":
                previous = state.isolate(now)
            elif action == "close":
                previous = state.close(now)
            elif action == "reset":
                previous = state.reset(now)
            else:
                raise ValueError(f"unknown circuit action {action!r}")
            self._publish(now)
            return state.snapshot(now, previous)

    async def atry_acquire(self, now: float, rng: random.Random | None = None) -> Admission:
        """Async `try_acquire` (no I/O: runs inline)."""
        return self.try_acquire(now, rng)

    async def arecord(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> CircuitSnapshot:
        """Async `record` (no I/O: runs inline)."""
        return self.record(token, failed, duration, now, rng)

    async def arelease(self, token: int, now: float) -> None:
        """Async `release` (no I/O: runs inline)."""
        self.release(token, now)

    async def asnapshot(self, now: float) -> CircuitSnapshot:
        """Async `snapshot` (no I/O: runs inline)."""
        return self.snapshot(now)

    async def atransition(self, action: CircuitAction, now: float) -> CircuitSnapshot:
        """Async `transition` (no I/O: runs inline)."""
        return self.transition(action, now)

    def __repr__(self) -> str:
        return f"MemoryCircuit({self.state!r})"


class MemoryCircuitStore:
    """In-process state (the default store of every stateful strategy).

    Holds nothing itself: each breaker keeps the circuits it is handed (one, or one per
    key in its bounded LRU of keys), so memory is bounded by the breakers' ``max_keys``.
    """

    local = True
    description = "memory"

    def circuit(self, name: str, key: Hashable | None, policy: CircuitPolicy) -> MemoryCircuit:
        """A fresh `MemoryCircuit` for breaker ``name`` and ``key``."""
        return MemoryCircuit(policy)

    def __repr__(self) -> str:
        return "MemoryCircuitStore()"


# -- rate limiter buckets ---------------------------------------------------------------------


class MemoryBucketStore:
    """A `BucketStore` in this process's memory (GCRA, same semantics as the Redis store).

    Useful to share one set of buckets between several `RateLimiter` instances (by name)
    and as a stand-in for Redis in tests. Time comes from ``clock``, never from the caller.

    Args:
        clock: Where time comes from (default: the system's monotonic clock). Pass the
            pipeline's `ManualClock` in tests.
        max_keys: Most buckets kept (over every name and key), an int >= 1 (default
            100,000); the least recently used bucket is forgotten beyond it (it comes back
            full: see `buttress._state.gcra.GcraTable`).

    Raises:
        ConfigurationError: ``max_keys`` < 1.
    """

    def __init__(self, clock: Clock | None = None, *, max_keys: int = 100_000) -> None:
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self.description = "memory"
        self._table = GcraTable(check_count("MemoryBucketStore", "max_keys", max_keys))

    def bucket_take(
        self, name: str, key: str, permits: float, rate: float, burst: float, max_wait: float
    ) -> float:
        """See `BucketStore.bucket_take`."""
        interval = 1.0 / rate
        return self._table.take(
            (name, key), self.clock.now(), permits, interval, burst * interval, max_wait
        )

    async def abucket_take(
        self, name: str, key: str, permits: float, rate: float, burst: float, max_wait: float
    ) -> float:
        """See `BucketStore.bucket_take`."""
        return self.bucket_take(name, key, permits, rate, burst, max_wait)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"MemoryBucketStore(max_keys={self._table.max_keys})"
