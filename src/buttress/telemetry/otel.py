"""OpenTelemetry adapters: metrics (`OpenTelemetryMetrics`) and traces (`OpenTelemetryTracing`).

Both are listeners (``Callable[[Event], None]``): pass them to ``Pipeline(listeners=[...])``
or install them globally with `buttress.telemetry.instrument` / `buttress.add_listener`.
They need ``opentelemetry-api`` (``pip install 'buttress[otel]'``); the SDK (or any other
API implementation) decides where data goes.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

from .. import __version__
from .._core.gauges import gauge_readings
from .._exceptions import ConfigurationError
from ..events import CallCompleted, CallStarted, Event
from ._lazy import require
from ._measure import measurements
from .names import METRICS

__all__ = ["DEFAULT_BUCKETS", "OpenTelemetryMetrics", "OpenTelemetryTracing"]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Histogram bucket boundaries in seconds (0.5 ms .. 60 s), for OpenTelemetry and Prometheus."""


class OpenTelemetryMetrics:
    """Record buttress events as OpenTelemetry metrics (see `buttress.telemetry.names`).

    Counters and histograms are updated from events; observable gauges (breaker state,
    bulkhead in use and queued, retry-budget level) are read from the gauge registry when the
    SDK collects.

    Args:
        meter_provider: A ``MeterProvider``; ``None`` (default) uses the global one
            (``opentelemetry.metrics.get_meter_provider()``).
        buckets: Histogram bucket boundaries in seconds, passed as the advisory boundaries
            (default `DEFAULT_BUCKETS`; views configured in the SDK take precedence).

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
    """

    def __init__(
        self, meter_provider: Any = None, *, buckets: tuple[float, ...] = DEFAULT_BUCKETS
    ) -> None:
        otel_metrics = require("opentelemetry.metrics", "otel", "opentelemetry-api")
        provider = (
            meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
        )
        meter = provider.get_meter("buttress", __version__)
        self._observation = otel_metrics.Observation
        self._instruments: dict[str, Any] = {}
        for spec in METRICS:
            if spec.kind == "counter":
                self._instruments[spec.name] = meter.create_counter(
                    spec.name, unit=spec.unit, description=spec.description
                ).add
            elif spec.kind == "histogram":
                try:
                    hist = meter.create_histogram(
                        spec.name,
                        unit=spec.unit,
                        description=spec.description,
                        explicit_bucket_boundaries_advisory=list(buckets),
                    )
                except TypeError:  # pragma: no cover - opentelemetry-api < 1.23
                    hist = meter.create_histogram(
                        spec.name, unit=spec.unit, description=spec.description
                    )
                self._instruments[spec.name] = hist.record
            else:
                meter.create_observable_gauge(
                    spec.name,
                    callbacks=[self._gauge_callback(spec.name)],
                    unit=spec.unit,
                    description=spec.description,
                )

    def _gauge_callback(self, name: str) -> Any:
        observation = self._observation

        def observe(options: Any) -> list[Any]:
            return [
                observation(v, attrs) for metric, v, attrs in gauge_readings() if metric == name
            ]

        return observe

    def __call__(self, event: Event) -> None:
        instruments = self._instruments
        for name, value, attributes in measurements(event):
            instruments[name](value, attributes)


_SPANS: ContextVar[tuple[tuple[Any, Any], ...]] = ContextVar("buttress.otel.spans", default=())


def _attributes(event: Event) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name in event.__dataclass_fields__:
        if name == "time":
            continue
        value = getattr(event, name)
        if value is None:
            continue
        key = "error.type" if name == "error_type" else f"buttress.{name}"
        attrs[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return attrs


class OpenTelemetryTracing:
    """Record pipeline executions as OpenTelemetry spans or span events.

    ``mode="span"`` (default): every pipeline execution is a span named
    ``"buttress <pipeline>"`` (kind INTERNAL) made current for the call, so spans created
    inside (an instrumented HTTP client, a nested pipeline) become its children and every
    retry and hedge of the call shares its trace. Each strategy decision is a span event on
    it: ``buttress.retry.attempt`` (attributes ``buttress.attempt``, ``buttress.duration``,
    ``buttress.outcome``, ``error.type``), ``buttress.retry.scheduled``
    (``buttress.attempt``, ``buttress.delay``, ``error.type``), ``buttress.call.rejected``, ...
    The span ends with ``buttress.outcome`` and ``error.type`` attributes and an ERROR
    status when the call failed.

    ``mode="events"``: no span of its own; every event, including
    ``buttress.pipeline.completed``, is added to the span current at the time (the caller's
    request span, for instance). Cheaper and flatter.

    Args:
        tracer_provider: A ``TracerProvider``; ``None`` uses the global one.
        mode: ``"span"`` or ``"events"``.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
        ConfigurationError: Unknown ``mode``.
    """

    def __init__(
        self, tracer_provider: Any = None, *, mode: Literal["span", "events"] = "span"
    ) -> None:
        if mode not in ("span", "events"):
            raise ConfigurationError.invalid(
                "OpenTelemetryTracing", "mode", mode, "'span' or 'events'"
            )
        trace = require("opentelemetry.trace", "otel", "opentelemetry-api")
        self._context = require("opentelemetry.context", "otel", "opentelemetry-api")
        self._trace = trace
        self._tracer = trace.get_tracer("buttress", __version__, tracer_provider=tracer_provider)
        self.mode = mode

    def __call__(self, event: Event) -> None:
        trace = self._trace
        if self.mode == "span":
            if isinstance(event, CallStarted):
                span = self._tracer.start_span(
                    f"buttress {event.pipeline}",
                    kind=trace.SpanKind.INTERNAL,
                    attributes={"buttress.pipeline": event.pipeline},
                )
                token = self._context.attach(trace.set_span_in_context(span))
                _SPANS.set((*_SPANS.get(), (span, token)))
                return
            if isinstance(event, CallCompleted):
                stack = _SPANS.get()
                if not stack:
                    return
                span, token = stack[-1]
                _SPANS.set(stack[:-1])
                span.set_attribute("buttress.outcome", event.outcome)
                if event.error_type is not None:
                    span.set_attribute("error.type", event.error_type)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, event.error_type))
                span.end()
                self._context.detach(token)
                return
        elif isinstance(event, CallStarted):
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(f"buttress.{event.kind}", attributes=_attributes(event))
