"""Events: immutable records of every decision a strategy makes.

A listener is any ``Callable[[Event], None]``; pass it to ``Pipeline(listeners=[...])`` or
install it globally with `buttress.add_listener`. Strategies only build events when at
least one listener is installed, so with no listener the cost is one attribute check.
A listener that raises is reported once through the ``buttress`` logger and never changes
the result of the call.

Every event carries:

* ``pipeline``: the pipeline's name;
* ``strategy``: the strategy instance's name (for example ``"retry"`` or ``"payments-db"``);
* ``time``: the pipeline clock's reading in seconds (monotonic; compare, don't display).

``kind`` is a stable dotted name (``"retry.scheduled"``) used by telemetry adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "AttemptCompleted",
    "CallCompleted",
    "CacheHit",
    "CacheMiss",
    "CacheRefreshed",
    "CacheStaleServed",
    "CallRejected",
    "CallStarted",
    "CircuitStateChanged",
    "EndpointEjected",
    "EndpointHealthChanged",
    "EndpointReadmitted",
    "Event",
    "FallbackUsed",
    "FaultInjected",
    "HedgeStarted",
    "MembershipRefreshFailed",
    "PriorityChanged",
    "RateLimitWaited",
    "RetryBudgetExhausted",
    "RetryGaveUp",
    "RetryScheduled",
    "StoreFailed",
    "StoreRecovered",
    "TimeoutExpired",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event.

    Attributes:
        pipeline: Name of the pipeline that made the decision.
        strategy: Name of the strategy instance.
        time: Pipeline clock reading in seconds (monotonic).
    """

    kind: ClassVar[str] = "event"
    pipeline: str
    strategy: str
    time: float


# -- pipeline --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStarted(Event):
    """A pipeline execution began (emitted only when the pipeline had listeners at build time).

    ``strategy`` is ``"pipeline"``. Telemetry adapters use it to open a span; it is always
    followed by a `CallCompleted` from the same thread or task.
    """

    kind: ClassVar[str] = "pipeline.started"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCompleted(Event):
    """A pipeline execution finished (the whole call, every attempt and wait included).

    Emitted only when the pipeline had listeners when its chain was built; a pipeline
    rebuilds that outer step when global listeners are added or removed, so with no
    listener at all there is no timing step and no cost.

    Attributes:
        duration: Seconds from entry to exit on the pipeline clock.
        outcome: ``"success"`` (returned), ``"rejected"`` (a `RejectedError` other than a
            timeout), ``"timeout"`` (a `TimeoutError`, including `TimeoutRejectedError`) or
            ``"error"`` (any other exception).
        error_type: Qualified name of the exception type, or ``None`` on success.
    """

    kind: ClassVar[str] = "pipeline.completed"
    duration: float
    outcome: str
    error_type: str | None = None


# -- retry -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptCompleted(Event):
    """One attempt inside a `Retry` finished.

    Attributes:
        attempt: 1-based attempt number.
        duration: Seconds the attempt took.
        outcome: ``"success"``, ``"handled"`` (will be retried or given up) or
            ``"unhandled"`` (propagates as is).
        error_type: Qualified name of the exception type, or ``None`` for a result.
    """

    kind: ClassVar[str] = "retry.attempt"
    attempt: int
    duration: float
    outcome: str
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """A retry will happen after ``delay`` seconds.

    Attributes:
        attempt: The attempt that failed (the next one is ``attempt + 1``).
        delay: Seconds the retry waits before the next attempt (0 means no sleep at all).
        error_type: Qualified name of the handled exception type, or ``None`` for a result.
        server_delay: Seconds the server asked for (``retry_after``/predicate), or ``None``.
    """

    kind: ClassVar[str] = "retry.scheduled"
    attempt: int
    delay: float
    error_type: str | None = None
    server_delay: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryGaveUp(Event):
    """A `Retry` stopped retrying and let the last outcome through.

    Attributes:
        attempts: Attempts made.
        waited: Total seconds slept between attempts.
        reason: ``"attempts"`` (limit reached), ``"max_elapsed"`` (the next sleep would end
            after it), ``"deadline"`` (the context deadline would pass) or ``"budget"``.
        error_type: Qualified name of the last exception type, or ``None`` for a result.
    """

    kind: ClassVar[str] = "retry.gave_up"
    attempts: int
    waited: float
    reason: str
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetExhausted(Event):
    """A retry budget refused a retry or a hedge.

    Attributes:
        attempt: The attempt that would have followed.
        budget: The budget's name.
    """

    kind: ClassVar[str] = "retry.budget_exhausted"
    attempt: int
    budget: str


# -- timeout and fallback -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutExpired(Event):
    """A `Timeout`'s own deadline expired; the call was cancelled (or abandoned).

    Attributes:
        timeout: The configured timeout in seconds.
    """

    kind: ClassVar[str] = "timeout.expired"
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(Event):
    """A `Fallback` replaced a handled outcome.

    Attributes:
        error_type: Qualified name of the handled exception type, or ``None`` for a result.
    """

    kind: ClassVar[str] = "fallback.used"
    error_type: str | None = None


# -- stateful strategies -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStateChanged(Event):
    """A circuit breaker moved between ``closed``, ``open``, ``half_open``, ``isolated``.

    Attributes:
        from_state: Previous state name.
        to_state: New state name.
        key: The partition key for per-key breakers, else ``None``.
        failure_ratio: Failure ratio over the window when the change happened (0..1).
        break_duration: Seconds the breaker stays open (``to_state == "open"``), else None.
    """

    kind: ClassVar[str] = "circuit.state_changed"
    from_state: str
    to_state: str
    key: str | None = None
    failure_ratio: float | None = None
    break_duration: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRejected(Event):
    """A strategy refused a call.

    Attributes:
        reason: ``"circuit_open"``, ``"circuit_isolated"``, ``"bulkhead_full"``,
            ``"rate_limited"``, ``"budget_exhausted"``, ``"load_shed"`` or ``"deadline"``.
        retry_after: Seconds until a call may be admitted, or ``None``.
        key: Partition key for per-key strategies, else ``None``.
    """

    kind: ClassVar[str] = "call.rejected"
    reason: str
    retry_after: float | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitWaited(Event):
    """A rate limiter made a call wait for a permit.

    Attributes:
        wait: Seconds waited.
        key: Partition key, else ``None``.
    """

    kind: ClassVar[str] = "ratelimit.waited"
    wait: float
    key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeStarted(Event):
    """A hedging strategy started another attempt.

    Attributes:
        hedge: 1-based number of the extra attempt (the primary is 0).
        delay: Seconds after the primary's start.
    """

    kind: ClassVar[str] = "hedge.started"
    hedge: int
    delay: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInjected(Event):
    """A fault-injection strategy injected a fault.

    Attributes:
        fault: ``"exception"``, ``"latency"`` or ``"result"``.
        detail: The exception type name, the latency in seconds, or the result's repr.
    """

    kind: ClassVar[str] = "fault.injected"
    fault: str
    detail: str


# -- cache-aside ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheHit(Event):
    """A cache lookup found a fresh value.

    Attributes:
        key: The cache key.
        tier: ``"local"`` or ``"remote"``.
    """

    kind: ClassVar[str] = "cache.hit"
    key: str
    tier: str = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheMiss(Event):
    """A cache lookup found nothing usable; the loader runs (or joins a running load)."""

    kind: ClassVar[str] = "cache.miss"
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheStaleServed(Event):
    """A stale value was served.

    Attributes:
        key: The cache key.
        reason: ``"revalidating"`` (stale-while-revalidate) or ``"error"`` (stale-if-error).
    """

    kind: ClassVar[str] = "cache.stale_served"
    key: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheRefreshed(Event):
    """A value was loaded and stored.

    Attributes:
        key: The cache key.
        early: ``True`` when refreshed before expiry (XFetch or stale-while-revalidate).
        duration: Seconds the loader took.
    """

    kind: ClassVar[str] = "cache.refreshed"
    key: str
    early: bool = False
    duration: float = 0.0


# -- stores ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreFailed(Event):
    """A shared-state store operation failed.

    Attributes:
        store: The store's description (no credentials).
        operation: The operation that failed.
        error_type: Qualified name of the error.
        fail_open: ``True`` when the strategy fell back to local state.
    """

    kind: ClassVar[str] = "store.failed"
    store: str
    operation: str
    error_type: str
    fail_open: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreRecovered(Event):
    """A store answered again after failures; shared state is used again."""

    kind: ClassVar[str] = "store.recovered"
    store: str


# -- routing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointEjected(Event):
    """Outlier detection ejected an endpoint.

    Attributes:
        endpoint: The endpoint's name.
        reason: ``"consecutive_failures"``, ``"failure_percentage"`` or ``"success_rate"``.
        duration: Seconds the ejection lasts.
    """

    kind: ClassVar[str] = "endpoint.ejected"
    endpoint: str
    reason: str
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointReadmitted(Event):
    """An ejected endpoint was returned to rotation."""

    kind: ClassVar[str] = "endpoint.readmitted"
    endpoint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointHealthChanged(Event):
    """An active health check changed an endpoint's health.

    Attributes:
        endpoint: The endpoint's name.
        healthy: New health.
    """

    kind: ClassVar[str] = "endpoint.health_changed"
    endpoint: str
    healthy: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipRefreshFailed(Event):
    """Refreshing an endpoint group failed; the last good list is kept."""

    kind: ClassVar[str] = "endpoint.refresh_failed"
    error_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityChanged(Event):
    """Traffic moved between priority tiers (failover or fail-back).

    Attributes:
        from_priority: Previous tier.
        to_priority: New tier.
        healthy_share: Healthy share of the previous tier when the move happened (0..1).
    """

    kind: ClassVar[str] = "endpoint.priority_changed"
    from_priority: int
    to_priority: int
    healthy_share: float
