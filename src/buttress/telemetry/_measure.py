"""Event -> measurements mapping shared by the OpenTelemetry and Prometheus adapters.

`measurements(event)` returns ``(metric name, value, attributes)`` triples following the
table in `buttress.telemetry.names`. Attributes whose value is ``None`` are left out
(OpenTelemetry convention: ``error.type`` is absent on success); the Prometheus adapter
fills absent labels with ``""``. One dict lookup by event type selects the mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import events as ev

__all__ = ["Measurement", "measurements"]

Measurement = tuple[str, float, dict[str, str]]


def _base(e: ev.Event, **extra: Any) -> dict[str, str]:
    attrs = {"pipeline": e.pipeline, "strategy": e.strategy}
    for key, value in extra.items():
        if value is not None:
            attrs[key] = str(value)
    return attrs


def _call(e: Any) -> list[Measurement]:
    calls = {"pipeline": e.pipeline, "outcome": e.outcome}
    if e.error_type is not None:
        calls["error.type"] = e.error_type
    return [
        ("buttress.pipeline.calls", 1.0, calls),
        ("buttress.pipeline.duration", e.duration, {"pipeline": e.pipeline, "outcome": e.outcome}),
    ]


def _attempt(e: Any) -> list[Measurement]:
    attrs = _base(e, outcome=e.outcome)
    counted = dict(attrs)
    if e.error_type is not None:
        counted["error.type"] = e.error_type
    return [
        ("buttress.retry.attempts", 1.0, counted),
        ("buttress.retry.attempt.duration", e.duration, attrs),
    ]


def _one(name: str, value: Callable[[Any], float], **fields: str) -> Callable[[Any], list[Any]]:
    def convert(e: Any) -> list[Measurement]:
        extra = {attr: getattr(e, field) for attr, field in fields.items()}
        return [(name, value(e), _base(e, **extra))]

    return convert


def _count(name: str, **fields: str) -> Callable[[Any], list[Any]]:
    return _one(name, lambda e: 1.0, **fields)


_MAPPING: dict[type[ev.Event], Callable[[Any], list[Measurement]]] = {
    ev.CallCompleted: _call,
    ev.AttemptCompleted: _attempt,
    ev.RetryScheduled: _one("buttress.retry.delay", lambda e: e.delay),
    ev.RetryGaveUp: _count("buttress.retry.gave_up", reason="reason"),
    ev.RetryBudgetExhausted: _count("buttress.retry.budget.exhausted", budget="budget"),
    ev.CallRejected: _count("buttress.rejections", reason="reason"),
    ev.TimeoutExpired: _count("buttress.timeout.expired"),
    ev.FallbackUsed: _count("buttress.fallback.used", **{"error.type": "error_type"}),
    ev.CircuitStateChanged: _count(
        "buttress.circuit.transitions", from_state="from_state", state="to_state"
    ),
    ev.RateLimitWaited: _one("buttress.ratelimit.wait", lambda e: e.wait),
    ev.HedgeStarted: _count("buttress.hedge.started"),
    ev.CacheHit: _count("buttress.cache.hits", tier="tier"),
    ev.CacheMiss: _count("buttress.cache.misses"),
    ev.CacheStaleServed: _count("buttress.cache.stale_served", reason="reason"),
    ev.FaultInjected: _count("buttress.fault.injected", fault="fault"),
    ev.StoreFailed: _count("buttress.store.failures", operation="operation"),
    ev.EndpointEjected: _count("buttress.endpoint.ejections", endpoint="endpoint", reason="reason"),
}


def measurements(event: ev.Event) -> list[Measurement]:
    """The measurements ``event`` contributes (empty for events without a metric)."""
    convert = _MAPPING.get(type(event))
    if convert is None:
        for cls, fn in _MAPPING.items():  # subclasses of known events
            if isinstance(event, cls):
                return fn(event)
        return []
    return convert(event)
