"""Stores: where strategies keep shared state.

In-memory stores are the embedded defaults; `RedisStore` (the ``redis`` extra) shares state
between processes and machines. See ``docs/stores.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core.store_guard import StoreGuard
from .base import (
    BucketStore,
    BudgetStore,
    CacheRecord,
    CacheStore,
    Circuit,
    CircuitStore,
    FastCircuit,
)
from .memory import (
    MemoryBucketStore,
    MemoryBudgetStore,
    MemoryCacheStore,
    MemoryCircuit,
    MemoryCircuitStore,
)
from .serializers import JsonSerializer, PickleSerializer, Serializer

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = [
    "BucketStore",
    "BudgetStore",
    "CacheRecord",
    "CacheStore",
    "Circuit",
    "CircuitStore",
    "FastCircuit",
    "JsonSerializer",
    "MemoryBucketStore",
    "MemoryBudgetStore",
    "MemoryCacheStore",
    "MemoryCircuit",
    "MemoryCircuitStore",
    "PickleSerializer",
    "RedisStore",
    "Serializer",
    "StoreGuard",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":  # imported lazily: redis-py is an optional extra
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(f"module 'buttress.stores' has no attribute {name!r}")
