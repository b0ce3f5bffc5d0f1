"""The public export list is curated: changing it must be deliberate."""

from __future__ import annotations

import buttress

EXPECTED = [
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


def test_export_list_is_pinned_and_sorted() -> None:
    assert buttress.__all__ == sorted(buttress.__all__)
    assert buttress.__all__ == EXPECTED


def test_every_export_exists() -> None:
    for name in buttress.__all__:
        assert getattr(buttress, name) is not None, name
