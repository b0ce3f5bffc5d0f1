"""buttress: resilience strategies for Python services, for sync code, asyncio and trio.

Build a `Pipeline` of strategies, outermost first, and call through it::

    from buttress import Pipeline, Retry, Timeout, Fallback

    pipeline = Pipeline(
        Fallback(on=TimeoutError, value=None),
        Retry(on=ConnectionError, attempts=3),
        Timeout(2.0),                  # inside Retry: bounds each attempt
        name="inventory",
    )
    stock = pipeline.call(fetch_stock, "sku-1")

The top level holds the everyday names; specialised parts live in opt-in namespaces:
`buttress.backoff`, `buttress.events`, `buttress.testing`, `buttress.telemetry`,
`buttress.typing`, `buttress.routing`.
"""

from __future__ import annotations

from . import backoff, events
from ._core.clock import Clock, SystemClock
from ._core.context import Context, Key, current_context, scope
from ._core.env import add_listener, remove_listener
from ._core.handle import on_exception, on_result
from ._core.outcome import Outcome
from ._core.pipeline import Pipeline
from ._exceptions import (
    BulkheadFullError,
    ButtressError,
    CircuitIsolatedError,
    CircuitOpenError,
    ConfigurationError,
    InjectedFaultError,
    RateLimitedError,
    RejectedError,
    RetryBudgetExhaustedError,
    StoreError,
    TimeoutRejectedError,
)
from ._state.budget import RatioBudget, RetryBudget, TokenBucketBudget
from ._strategies.bulkhead import Bulkhead
from ._strategies.cache import CacheAside, cached
from ._strategies.circuit_breaker import CircuitBreaker
from ._strategies.fallback import Fallback
from ._strategies.faults import InjectFault, InjectLatency, InjectResult
from ._strategies.hedge import Hedge
from ._strategies.rate_limiter import RateLimiter
from ._strategies.retry import Retry
from ._strategies.timeout import Timeout
from .routing.strategy import LoadBalance

__version__ = "0.1.0.dev0"

__all__ = [
    "Bulkhead",
    "BulkheadFullError",
    "ButtressError",
    "CacheAside",
    "CircuitBreaker",
    "CircuitIsolatedError",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "Context",
    "Fallback",
    "Hedge",
    "InjectFault",
    "InjectLatency",
    "InjectResult",
    "InjectedFaultError",
    "Key",
    "LoadBalance",
    "Outcome",
    "Pipeline",
    "RateLimitedError",
    "RateLimiter",
    "RatioBudget",
    "RejectedError",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhaustedError",
    "StoreError",
    "SystemClock",
    "Timeout",
    "TimeoutRejectedError",
    "TokenBucketBudget",
    "add_listener",
    "backoff",
    "cached",
    "current_context",
    "events",
    "on_exception",
    "on_result",
    "remove_listener",
    "scope",
]
