"""Store protocols: where shared state lives, one protocol per pattern.

Each protocol exposes the *atomic* operations its strategy needs (never a generic get/set),
so a Redis implementation can run each one as a single Lua script: one round trip, no race
between processes. Durations inside a store are measured by the store itself (the Redis
server's ``TIME``; the memory store's clock) and exchanged as *relative* seconds, so
processes whose monotonic clocks disagree still agree on expiries.

Every store exposes ``description`` (for events and logs; never credentials).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "BudgetStore",
    "CacheRecord",
    "CacheStore",
]


# -- cache -------------------------------------------------------------------------------------


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


# -- retry budget ---------------------------------------------------------------------------------


@runtime_checkable
class BudgetStore(Protocol):
    """Shared balance of a retry budget.

    Deposits are batched by the caller (first tries are counted locally, for free) and
    handed over with the next withdrawal: one round trip per retry, none per first try.
    ``kind`` and ``params`` describe the budget's arithmetic (``"ratio"``: ratio,
    min_retries_per_second, window; ``"bucket"``: capacity), evaluated by the store on its
    own clock.
    """

    description: str

    def budget_withdraw(
        self, name: str, kind: str, params: tuple[float, ...], deposit: float, cost: float
    ) -> tuple[bool, float]:
        """Add ``deposit`` then take ``cost`` if available; returns (taken, balance after)."""
        ...

    def budget_deposit(
        self, name: str, kind: str, params: tuple[float, ...], deposit: float
    ) -> float:
        """Add ``deposit`` (a refund); returns the balance."""
        ...
