"""Stores: where strategies keep shared state.

In-memory stores are the embedded defaults; `RedisStore` (the ``redis`` extra) shares state
between processes and machines. See ``docs/stores.md``.
"""

from __future__ import annotations

from .base import BudgetStore, CacheRecord, CacheStore
from .guard import StoreGuard
from .memory import MemoryBudgetStore, MemoryCacheStore
from .serializers import JsonSerializer, PickleSerializer, Serializer

__all__ = [
    "BudgetStore",
    "CacheRecord",
    "CacheStore",
    "JsonSerializer",
    "MemoryBudgetStore",
    "MemoryCacheStore",
    "PickleSerializer",
    "Serializer",
    "StoreGuard",
]
