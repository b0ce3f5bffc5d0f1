"""Store protocols: where shared state lives, one protocol per pattern.

Each protocol exposes the *atomic* operations its strategy needs (never a generic get/set),
so a Redis implementation can run each one as a single Lua script: one round trip, no race
between processes. Durations inside a store are measured by the store itself (the Redis
server's ``TIME``; the memory store's clock) and exchanged as *relative* seconds, so
processes whose monotonic clocks disagree still agree on expiries.

Every store exposes ``description`` (for events and logs; never credentials).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from .._state.circuit import Admission, CircuitPolicy, CircuitSnapshot

__all__ = [
    "BucketStore",
    "BudgetStore",
    "CacheRecord",
    "CacheStore",
    "Circuit",
    "CircuitAction",
    "CircuitStore",
    "FastCircuit",
]


# -- cache ------------------------------------------------------------------------------------


class CacheRecord(NamedTuple):
    """A value read from a cache store, with its metadata.

    Attributes:
        payload: The serialised value.
        fresh_for: Seconds until the value stops being fresh, on the store's clock
            (negative: stale by that much; the store keeps stale values for a while so
            stale-while-revalidate and stale-if-error can serve them).
        delta: Seconds the load that produced the value took (XFetch's delta).
        token: Fencing token of that load.
    """

    payload: bytes
    fresh_for: float
    delta: float
    token: int


@runtime_checkable
class CacheStore(Protocol):
    """Remote tier of `CacheAside`: values with TTLs, invalidation and a loader lock.

    ``ns`` is the cache's namespace (its name): every key lives under it. Sync methods
    serve sync calls, ``a``-prefixed ones async calls; both see the same data.
    """

    description: str

    def cache_get(self, ns: str, key: str) -> CacheRecord | None:
        """The record of ``key``, or ``None`` when absent (or past its retention)."""
        ...

    def cache_set(
        self, ns: str, key: str, payload: bytes, ttl: float, keep: float, delta: float, token: int
    ) -> bool:
        """Store ``payload`` fresh for ``ttl`` seconds and retained ``keep`` more seconds.

        Fencing: refused (returns ``False``) when the stored value was written with a
        larger ``token``, so a loader that outlived its lease cannot overwrite a newer
        value.
        """
        ...

    def cache_delete(self, ns: str, key: str) -> None:
        """Remove ``key`` and tell every subscriber (other processes' local tiers)."""
        ...

    def cache_delete_prefix(self, ns: str, prefix: str) -> int:
        """Remove every key starting with ``prefix`` and tell every subscriber."""
        ...

    def cache_lock(self, ns: str, key: str, lease: float) -> tuple[bool, int, float]:
        """Try to take the loader lock of ``key`` for ``lease`` seconds.

        Returns:
            ``(acquired, token, wait)``: ``token`` is a fresh fencing token (strictly
            larger than any earlier one in ``ns``) whether or not the lock was taken;
            ``wait`` is the seconds left on the holder's lease when it was not.
        """
        ...

    def cache_unlock(self, ns: str, key: str, token: int) -> None:
        """Release the lock of ``key`` if ``token`` still holds it."""
        ...

    def cache_subscribe(self, ns: str, callback: Any) -> Any:
        """Call ``callback(kind, key)`` for invalidations in ``ns`` made by anyone.

        ``kind`` is ``"key"``, ``"prefix"`` or ``"reset"`` (messages may have been lost:
        drop everything local). Returns an object with ``close()``.
        """
        ...

    async def acache_get(self, ns: str, key: str) -> CacheRecord | None:
        """Async `cache_get`."""
        ...

    async def acache_set(
        self, ns: str, key: str, payload: bytes, ttl: float, keep: float, delta: float, token: int
    ) -> bool:
        """Async `cache_set`."""
        ...

    async def acache_delete(self, ns: str, key: str) -> None:
        """Async `cache_delete`."""
        ...

    async def acache_delete_prefix(self, ns: str, prefix: str) -> int:
        """Async `cache_delete_prefix`."""
        ...

    async def acache_lock(self, ns: str, key: str, lease: float) -> tuple[bool, int, float]:
        """Async `cache_lock`."""
        ...

    async def acache_unlock(self, ns: str, key: str, token: int) -> None:
        """Async `cache_unlock`."""
        ...


# -- retry budget -----------------------------------------------------------------------------


@runtime_checkable
class BudgetStore(Protocol):
    """Shared balance of a retry budget.

    Deposits are batched by the caller (first tries are counted locally, for free) and
    handed over with the next withdrawal: one round trip per retry, none per first try.
    Each caller (``client``, unique per budget object) sends the *running total* of its
    deposits; the store applies only the part it has not seen yet, so an exchange that
    timed out after the server applied it is not counted twice when it is repeated.
    ``kind`` and ``params`` describe the budget's arithmetic (``"ratio"``: ratio,
    min_retries_per_second, window; ``"bucket"``: capacity), evaluated by the store on its
    own clock.
    """

    description: str

    def budget_withdraw(
        self,
        name: str,
        kind: str,
        params: tuple[float, ...],
        client: str,
        total: float,
        cost: float,
    ) -> tuple[bool, float]:
        """Settle ``client``'s deposits up to ``total``, then take ``cost`` if available.

        Returns:
            ``(taken, balance after)``.
        """
        ...

    def budget_deposit(
        self, name: str, kind: str, params: tuple[float, ...], client: str, total: float
    ) -> float:
        """Settle ``client``'s deposits up to ``total``; returns the balance."""
        ...


# -- circuit breaker ---------------------------------------------------------------------------

# Circuit breakers.
#
# A `CircuitStore` hands out one `Circuit` per (breaker name, partition key). A `Circuit`
# offers atomic operations over the pure `buttress._state.circuit.CircuitState` machine:
#
# * ``try_acquire(now, rng) -> Admission``: may a call start? (may move open -> half_open,
#   takes a trial slot in half-open, or rejects with ``retry_after``);
# * ``record(token, failed, duration, now, rng) -> CircuitSnapshot``: the outcome of a call
#   admitted with ``token``; returns the snapshot after the update, whose
#   ``previous_state`` is set when the outcome changed the state;
# * ``release(token, now)``: a trial ended without a verdict (cancelled, unhandled
#   exception): give its slot back;
# * ``snapshot(now)`` and ``transition(action, now)`` (``"isolate"``, ``"close"``,
#   ``"reset"``) for reading and manual control;
# * the same five as coroutines (``atry_acquire``, ``arecord``, ``arelease``,
#   ``asnapshot``, ``atransition``) for the async flow of a store doing I/O.
#
# Each operation must be atomic with respect to every other holder of the same circuit
# (a lock in memory; a script or compare-and-set on a shared server). ``now`` is the
# caller's monotonic clock reading; a store shared between processes should use its own
# time source (the Redis server's ``TIME``) instead, consistently for all operations, and
# may ignore ``now``. ``rng`` is the pipeline's random source, used only by a jittered
# break schedule. ``token`` is `Admission.token` (the state's generation at admission):
# outcomes carrying another generation are ignored by the state machine.
#
# Local circuits (``CircuitStore.local`` is ``True``) also implement `FastCircuit`, which
# lets the strategy run a closed breaker's happy path without a lock or an allocation.

CircuitAction = Literal["isolate", "close", "reset"]
"""Manual transitions: hold open, close (keeping the open history), or reset fully."""


@runtime_checkable
class Circuit(Protocol):
    """One breaker's state (one partition key), with atomic operations."""

    def try_acquire(self, now: float, rng: random.Random | None = None) -> Admission:
        """Decide whether a call may start at ``now`` (see `CircuitState.try_acquire`)."""
        ...

    def record(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> CircuitSnapshot:
        """Record an outcome and return the snapshot after it.

        Args:
            token: `Admission.token` of the call.
            failed: ``True`` when the breaker's ``on=`` handled the outcome.
            duration: Seconds the call took, or ``None`` when not measured.
            now: Time of the outcome (seconds).
            rng: Random source for a jittered break schedule.
        """
        ...

    def release(self, token: int, now: float) -> None:
        """Give back a half-open trial slot without a verdict."""
        ...

    def snapshot(self, now: float) -> CircuitSnapshot:
        """The state at ``now``."""
        ...

    def transition(self, action: CircuitAction, now: float) -> CircuitSnapshot:
        """Apply a manual transition; ``previous_state`` is set if the state changed."""
        ...

    async def atry_acquire(self, now: float, rng: random.Random | None = None) -> Admission:
        """Async `try_acquire`."""
        ...

    async def arecord(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> CircuitSnapshot:
        """Async `record`."""
        ...

    async def arelease(self, token: int, now: float) -> None:
        """Async `release`."""
        ...

    async def asnapshot(self, now: float) -> CircuitSnapshot:
        """Async `snapshot`."""
        ...

    async def atransition(self, action: CircuitAction, now: float) -> CircuitSnapshot:
        """Async `transition`."""
        ...


@runtime_checkable
class FastCircuit(Circuit, Protocol):
    """A `Circuit` in this process whose closed happy path needs no lock.

    Attributes:
        closed_gen: The generation while the breaker is closed, ``-1`` otherwise. The
            strategy reads it before the call; a call admitted this way is reported with
            ``record(closed_gen, ...)`` when it fails or is slow.
        batch_until: Clock reading before which a plain success may be counted with
            `count_success` (``inf`` for a count window; the newest bucket's end for a
            time window). Later successes go through ``record``.
        count_success: Count one plain success of the current closed epoch (atomic,
            lock-free, e.g. ``itertools.count().__next__``); folded into the window
            before any other operation.
    """

    closed_gen: int
    batch_until: float
    count_success: Callable[[], object]

    def record_fast(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> str | None:
        """Like `Circuit.record`, but return only the previous state name when the outcome
        changed the state (``None`` otherwise): no snapshot is built."""
        ...


@runtime_checkable
class CircuitStore(Protocol):
    """Hands out the `Circuit` of a breaker (and partition key).

    Attributes:
        local: ``True`` when circuits live in this process and implement `FastCircuit`.
    """

    local: bool

    def circuit(self, name: str, key: Hashable | None, policy: CircuitPolicy) -> Circuit:
        """The circuit of breaker ``name`` for ``key`` (``None`` for an unkeyed breaker).

        Called once per breaker (or once per key, when the key enters the breaker's LRU
        of keys); the breaker keeps the object. A shared store keys its data by ``name``
        and ``key`` so that every process sees the same circuit, and must bound its own
        memory (for example with expiry), since evicting a key locally forgets only the
        local handle.
        """


# -- rate limiter (token bucket, GCRA) --------------------------------------------------------


@runtime_checkable
class BucketStore(Protocol):
    """Shared token buckets for `RateLimiter` (GCRA, see `buttress._state.gcra`).

    One atomic operation: *try to take ``permits`` now, or reserve them if the wait fits*.
    A bucket is identified by ``(name, key)``: ``name`` is the limiter's name (its
    namespace), ``key`` the partition key (``""`` for an unkeyed limiter). ``rate`` and
    ``burst`` travel with every call, so a store needs no configuration per bucket and a
    changed limit applies at once. Time is the store's own (the memory store's clock, the
    Redis server's ``TIME``), so processes with different monotonic clocks agree; a store
    must treat a reading earlier than the latest it has seen for a bucket as that latest
    one (a clock stepping back must not lock callers out), and must never keep credit
    beyond a full bucket (a clock stepping forward must not let more than a burst through).
    Idle buckets may expire once full again (after ``burst / rate`` seconds): an expired
    bucket and a full one are the same thing.
    """

    description: str

    def bucket_take(
        self, name: str, key: str, permits: float, rate: float, burst: float, max_wait: float
    ) -> float:
        """Atomically take ``permits`` from the bucket, or reserve them.

        Args:
            name: The limiter's name (namespace).
            key: The partition key, ``""`` when the limiter is not keyed.
            permits: Permits to take, > 0.
            rate: Refill rate in permits per second, > 0.
            burst: Bucket capacity in permits, >= 1.
            max_wait: Longest acceptable wait in seconds, >= 0 (``inf`` allowed).

        Returns:
            The wait in seconds. ``0.0``: taken, proceed now. ``0 < wait <= max_wait``:
            reserved (the bucket was charged), proceed after sleeping ``wait``.
            ``wait > max_wait``: nothing was taken; ``wait`` is exactly how long until
            the permits are available. ``inf``: nothing was taken and never can be
            (``permits > burst``), even when ``max_wait`` is ``inf``.
        """
        ...

    async def abucket_take(
        self, name: str, key: str, permits: float, rate: float, burst: float, max_wait: float
    ) -> float:
        """Async `bucket_take` (same semantics)."""
        ...
