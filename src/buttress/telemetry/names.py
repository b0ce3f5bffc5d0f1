"""The one table of buttress metric names, instruments, units and attributes.

Every adapter (OpenTelemetry, Prometheus) and every shipped alert rule and dashboard panel
uses this table; `docs/telemetry.md` reproduces it and a test keeps the two in sync.

Naming follows OpenTelemetry semantic-convention style: ``buttress.<strategy>.<what>``,
units in UCUM (``s`` for seconds, ``{call}`` for counts of calls), attributes ``pipeline``,
``strategy``, ``outcome``, ``error.type`` plus a few strategy-specific ones. The Prometheus
name replaces dots by underscores, appends ``_seconds`` to durations and ``_total`` to
counters (attribute ``error.type`` becomes label ``error_type``).

=================================  =========  ========  ==========================================
name                               kind       unit      attributes (source event)
=================================  =========  ========  ==========================================
buttress.pipeline.calls            counter    {call}    pipeline, outcome, error.type
buttress.pipeline.duration         histogram  s         pipeline, outcome (CallCompleted)
buttress.retry.attempts            counter    {attempt} pipeline, strategy, outcome, error.type
buttress.retry.attempt.duration    histogram  s         pipeline, strategy, outcome
buttress.retry.delay               histogram  s         pipeline, strategy (RetryScheduled)
buttress.retry.gave_up             counter    {call}    pipeline, strategy, reason
buttress.retry.budget.exhausted    counter    {retry}   pipeline, strategy, budget
buttress.retry.budget.level        gauge      {retry}   pipeline, strategy (gauge registry)
buttress.rejections                counter    {call}    pipeline, strategy, reason (CallRejected)
buttress.timeout.expired           counter    {call}    pipeline, strategy
buttress.fallback.used             counter    {call}    pipeline, strategy, error.type
buttress.circuit.transitions       counter    {change}  pipeline, strategy, from_state, state
buttress.circuit.state             gauge      1         pipeline, strategy, state (one-hot)
buttress.bulkhead.in_use           gauge      {call}    pipeline, strategy
buttress.bulkhead.queued           gauge      {call}    pipeline, strategy
buttress.ratelimit.wait            histogram  s         pipeline, strategy (RateLimitWaited)
buttress.hedge.started             counter    {attempt} pipeline, strategy
buttress.cache.hits                counter    {lookup}  pipeline, strategy, tier
buttress.cache.misses              counter    {lookup}  pipeline, strategy
buttress.cache.stale_served        counter    {lookup}  pipeline, strategy, reason
buttress.fault.injected            counter    {fault}   pipeline, strategy, fault
buttress.store.failures            counter    {error}   pipeline, strategy, operation
buttress.endpoint.ejections        counter    {event}   pipeline, strategy, endpoint, reason
=================================  =========  ========  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["METRICS", "MetricSpec", "metric", "prometheus_name"]

Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One row of the metric table.

    Attributes:
        name: OpenTelemetry-style name (``buttress.<strategy>.<what>``).
        kind: ``"counter"``, ``"histogram"`` or ``"gauge"`` (observable).
        unit: UCUM unit (``"s"`` seconds, ``"1"`` dimensionless, ``"{call}"`` a count).
        attributes: Attribute names, in label order for Prometheus.
        description: One line for the metric's help text.
        source: The event (or ``"gauge registry"``) it is derived from.
    """

    name: str
    kind: Kind
    unit: str
    attributes: tuple[str, ...]
    description: str
    source: str

    @property
    def prometheus(self) -> str:
        """The Prometheus metric name (``_total``/``_seconds`` suffixes applied)."""
        return prometheus_name(self)

    @property
    def labels(self) -> tuple[str, ...]:
        """Prometheus label names (``error.type`` -> ``error_type``)."""
        return tuple(a.replace(".", "_") for a in self.attributes)


def prometheus_name(spec: MetricSpec) -> str:
    """Prometheus name of ``spec``: dots to underscores, ``_seconds`` for second-valued
    metrics, ``_total`` for counters (the full exposed name of the counter sample)."""
    base = spec.name.replace(".", "_")
    if spec.unit == "s" and not base.endswith("_seconds"):
        base += "_seconds"
    if spec.kind == "counter":
        base += "_total"
    return base


_P = ("pipeline",)
_PS = ("pipeline", "strategy")

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "buttress.pipeline.calls",
        "counter",
        "{call}",
        (*_P, "outcome", "error.type"),
        "Pipeline executions by outcome (success, error, timeout, rejected, cancelled).",
        "CallCompleted",
    ),
    MetricSpec(
        "buttress.pipeline.duration",
        "histogram",
        "s",
        (*_P, "outcome"),
        "Duration of whole pipeline executions, every attempt and wait included.",
        "CallCompleted",
    ),
    MetricSpec(
        "buttress.retry.attempts",
        "counter",
        "{attempt}",
        (*_PS, "outcome", "error.type"),
        "Attempts made by retry strategies by outcome (success, handled, unhandled).",
        "AttemptCompleted",
    ),
    MetricSpec(
        "buttress.retry.attempt.duration",
        "histogram",
        "s",
        (*_PS, "outcome"),
        "Duration of single attempts inside a retry.",
        "AttemptCompleted",
    ),
    MetricSpec(
        "buttress.retry.delay",
        "histogram",
        "s",
        _PS,
        "Backoff delay before a retry (server-directed delays included).",
        "RetryScheduled",
    ),
    MetricSpec(
        "buttress.retry.gave_up",
        "counter",
        "{call}",
        (*_PS, "reason"),
        "Retries that stopped retrying (reason: attempts, max_elapsed, deadline, budget).",
        "RetryGaveUp",
    ),
    MetricSpec(
        "buttress.retry.budget.exhausted",
        "counter",
        "{retry}",
        (*_PS, "budget"),
        "Retries or hedges refused by a retry budget.",
        "RetryBudgetExhausted",
    ),
    MetricSpec(
        "buttress.retry.budget.level",
        "gauge",
        "{retry}",
        _PS,
        "Retries currently available in a retry budget (strategy = budget name).",
        "gauge registry",
    ),
    MetricSpec(
        "buttress.rejections",
        "counter",
        "{call}",
        (*_PS, "reason"),
        "Calls refused by a strategy, by reason (circuit_open, bulkhead_full, ...).",
        "CallRejected",
    ),
    MetricSpec(
        "buttress.timeout.expired",
        "counter",
        "{call}",
        _PS,
        "Calls or attempts cut by a timeout's own deadline.",
        "TimeoutExpired",
    ),
    MetricSpec(
        "buttress.fallback.used",
        "counter",
        "{call}",
        (*_PS, "error.type"),
        "Handled outcomes replaced by a fallback.",
        "FallbackUsed",
    ),
    MetricSpec(
        "buttress.circuit.transitions",
        "counter",
        "{change}",
        (*_PS, "from_state", "state"),
        "Circuit breaker state changes (state = the new state).",
        "CircuitStateChanged",
    ),
    MetricSpec(
        "buttress.circuit.state",
        "gauge",
        "1",
        (*_PS, "state"),
        "Circuit breaker state, one-hot: 1 for the current state, 0 for the others.",
        "gauge registry",
    ),
    MetricSpec(
        "buttress.bulkhead.in_use",
        "gauge",
        "{call}",
        _PS,
        "Bulkhead permits currently held (calls running).",
        "gauge registry",
    ),
    MetricSpec(
        "buttress.bulkhead.queued",
        "gauge",
        "{call}",
        _PS,
        "Calls waiting in a bulkhead's queue.",
        "gauge registry",
    ),
    MetricSpec(
        "buttress.ratelimit.wait",
        "histogram",
        "s",
        _PS,
        "Time calls waited for a rate-limiter permit.",
        "RateLimitWaited",
    ),
    MetricSpec(
        "buttress.hedge.started",
        "counter",
        "{attempt}",
        _PS,
        "Hedged (backup) attempts started.",
        "HedgeStarted",
    ),
    MetricSpec(
        "buttress.cache.hits",
        "counter",
        "{lookup}",
        (*_PS, "tier"),
        "Cache lookups that found a fresh value (tier: local, remote).",
        "CacheHit",
    ),
    MetricSpec(
        "buttress.cache.misses",
        "counter",
        "{lookup}",
        _PS,
        "Cache lookups that found nothing usable.",
        "CacheMiss",
    ),
    MetricSpec(
        "buttress.cache.stale_served",
        "counter",
        "{lookup}",
        (*_PS, "reason"),
        "Stale cache values served (reason: revalidating, error).",
        "CacheStaleServed",
    ),
    MetricSpec(
        "buttress.fault.injected",
        "counter",
        "{fault}",
        (*_PS, "fault"),
        "Faults injected (fault: exception, latency, result).",
        "FaultInjected",
    ),
    MetricSpec(
        "buttress.store.failures",
        "counter",
        "{error}",
        (*_PS, "operation"),
        "Shared-state store operations that failed.",
        "StoreFailed",
    ),
    MetricSpec(
        "buttress.endpoint.ejections",
        "counter",
        "{event}",
        (*_PS, "endpoint", "reason"),
        "Endpoints ejected by outlier detection.",
        "EndpointEjected",
    ),
)

_BY_NAME = {m.name: m for m in METRICS}


def metric(name: str) -> MetricSpec:
    """The table row named ``name``.

    Raises:
        KeyError: No such metric.
    """
    return _BY_NAME[name]
