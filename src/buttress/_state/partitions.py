"""`Partitions`: per-key state with a bounded number of keys (LRU eviction).

Per-key breakers, bulkheads and limiters (per host, per tenant) must keep memory flat under
high key cardinality. ``Partitions(factory, max_keys)`` returns the state for a key,
creating it with ``factory(key)`` on first use and evicting the least recently used key
when more than ``max_keys`` exist. An evicted key starts fresh if it comes back (documented
on each strategy: eviction forgets history, which is the price of bounded memory).

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

    Raises:
        ConfigurationError: ``max_keys`` < 1.
    """

    __slots__ = ("_factory", "_lock", "_map", "_on_evict", "evictions", "max_keys")

    def __init__(
        self,
        factory: Callable[[K], V],
        max_keys: int = 10_000,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        self.max_keys = check_count("Partitions", "max_keys", max_keys)
        self._factory = factory
        self._on_evict = on_evict
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
            evicted = None
            if len(self._map) > self.max_keys:
                evicted = self._map.popitem(last=False)
                self.evictions += 1
        if evicted is not None and self._on_evict is not None:
            self._on_evict(*evicted)
        return state

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
