"""`Partitions`: per-key state with a bounded number of keys (LRU eviction).

Per-key breakers, bulkheads and limiters (per host, per tenant) must keep memory flat under
high key cardinality. ``Partitions(factory, max_keys)`` returns the state for a key,
creating it with ``factory(key)`` on first use and evicting the least recently used key
when more than ``max_keys`` exist. An evicted key starts fresh if it comes back (documented
on each strategy: eviction forgets history, which is the price of bounded memory).

A state that must not be forgotten while it is in use (a bulkhead partition with slots
held: forgetting it would let a fresh partition grant the same slots again) can be
*pinned*: with ``pinned=pred``, eviction skips states for which ``pred(state)`` is true
(moving them to the most recent end) and evicts the next candidate instead. If every
candidate looked at is pinned, the map grows past ``max_keys`` for a while (memory is
then bounded by ``max_keys`` plus the number of pinned states) and shrinks back on later
insertions.

Thread-safe; a lookup of an existing key costs one dict ``move_to_end`` under a lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from .._core.validate import check_count

__all__ = ["Partitions"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Partitions(Generic[K, V]):
    """A bounded LRU map from partition key to state.

    Args:
        factory: Builds the state of a new key: ``factory(key) -> state``.
        max_keys: Most keys kept, an int >= 1 (default 10,000).
        on_evict: Optional ``on_evict(key, state)`` called (outside the lock) on eviction.
        pinned: Optional ``pinned(state) -> bool``; a pinned state is never evicted
            (see the module docs). Called under the lock: keep it a cheap read.

    Raises:
        ConfigurationError: ``max_keys`` < 1.
    """

    __slots__ = ("_factory", "_lock", "_map", "_on_evict", "_pinned", "evictions", "max_keys")

    def __init__(
        self,
        factory: Callable[[K], V],
        max_keys: int = 10_000,
        on_evict: Callable[[K, V], None] | None = None,
        pinned: Callable[[V], bool] | None = None,
    ) -> None:
        self.max_keys = check_count("Partitions", "max_keys", max_keys)
        self._factory = factory
        self._on_evict = on_evict
        self._pinned = pinned
        self._map: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, key: K) -> V:
        """The state of ``key``, created on first use (may evict the LRU key)."""
        with self._lock:
            state = self._map.get(key)
            if state is not None:
                self._map.move_to_end(key)
                return state
            state = self._factory(key)
            self._map[key] = state
            evicted: list[tuple[K, V]] = []
            if len(self._map) > self.max_keys:
                self._evict(evicted, state)
        if evicted and self._on_evict is not None:
            for item in evicted:
                self._on_evict(*item)
        return state

    def _evict(self, evicted: list[tuple[K, V]], keep: V) -> None:
        map_ = self._map
        pinned = self._pinned
        if pinned is None:
            while len(map_) > self.max_keys:
                evicted.append(map_.popitem(last=False))
                self.evictions += 1
            return
        looked = 0
        while len(map_) > self.max_keys and looked < 16:
            key, state = next(iter(map_.items()))
            looked += 1
            if state is keep or pinned(state):
                map_.move_to_end(key)
                continue
            del map_[key]
            evicted.append((key, state))
            self.evictions += 1

    def peek(self, key: K) -> V | None:
        """The state of ``key`` if present, without creating it or touching recency."""
        return self._map.get(key)

    def __len__(self) -> int:
        return len(self._map)

    def items(self) -> Iterator[tuple[K, V]]:
        """A snapshot of (key, state) pairs, least recently used first."""
        with self._lock:
            return iter(list(self._map.items()))

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self._map.clear()
