"""Telemetry: listeners that turn buttress events into logs, metrics and traces.

Turn everything on globally in one line::

    import buttress.telemetry
    buttress.telemetry.instrument(otel=True, prometheus=True, logging=True)

or pass individual listeners to ``Pipeline(listeners=[...])``. The logging adapter needs
nothing; the others import their dependency lazily (``pip install 'buttress[otel]'``,
``'buttress[prometheus]'``, ``'buttress[structlog]'``). The metric names, units and
attributes are listed in `buttress.telemetry.names` (and ``docs/telemetry.md``).
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING, Any, Literal

from .._core.env import Listener, add_listener, remove_listener
from .._exceptions import ConfigurationError
from .logging import JsonFormatter, LoggingListener
from .names import METRICS, MetricSpec

if TYPE_CHECKING:
    from .otel import OpenTelemetryMetrics, OpenTelemetryTracing
    from .prometheus import PrometheusMetrics
    from .structlog import StructlogListener

__all__ = [
    "METRICS",
    "Instrumentation",
    "JsonFormatter",
    "LoggingListener",
    "MetricSpec",
    "OpenTelemetryMetrics",
    "OpenTelemetryTracing",
    "PrometheusMetrics",
    "StructlogListener",
    "instrument",
]


def __getattr__(name: str) -> Any:
    # Adapters with optional dependencies are imported on first use only.
    if name in ("OpenTelemetryMetrics", "OpenTelemetryTracing"):
        from . import otel

        return getattr(otel, name)
    if name == "PrometheusMetrics":
        from .prometheus import PrometheusMetrics

        return PrometheusMetrics
    if name == "StructlogListener":
        from .structlog import StructlogListener

        return StructlogListener
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Instrumentation:
    """The listeners `instrument` installed; `close` (or leaving a ``with`` block) removes them.

    Attributes:
        listeners: The installed listeners, in installation order.
    """

    __slots__ = ("listeners",)

    def __init__(self, listeners: tuple[Listener, ...]) -> None:
        self.listeners = listeners

    def close(self) -> None:
        """Remove the listeners from every pipeline (idempotent)."""
        for listener in self.listeners:
            remove_listener(listener)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Instrumentation({', '.join(type(x).__name__ for x in self.listeners)})"


def instrument(
    *,
    otel: bool = False,
    traces: bool | None = None,
    prometheus: bool = False,
    logging: bool = False,
    structlog: bool = False,
    meter_provider: Any = None,
    tracer_provider: Any = None,
    registry: Any = None,
    span_mode: Literal["span", "events"] = "span",
    log_level: int = _logging.DEBUG,
) -> Instrumentation:
    """Install telemetry listeners globally (every pipeline, existing and future).

    Args:
        otel: OpenTelemetry metrics (`OpenTelemetryMetrics`) on ``meter_provider`` (default
            the global provider).
        traces: OpenTelemetry traces (`OpenTelemetryTracing`); ``None`` (default) follows
            ``otel``.
        prometheus: Prometheus metrics (`PrometheusMetrics`) on ``registry`` (default the
            global ``prometheus_client.REGISTRY``).
        logging: Stdlib logging (`LoggingListener`, logger ``"buttress"``, ``log_level``).
        structlog: structlog (`StructlogListener`).
        meter_provider: OpenTelemetry ``MeterProvider`` (``None``: global).
        tracer_provider: OpenTelemetry ``TracerProvider`` (``None``: global).
        registry: Prometheus ``CollectorRegistry`` (``None``: global).
        span_mode: ``"span"`` (a span per pipeline execution) or ``"events"`` (events on
            the current span); see `OpenTelemetryTracing`.
        log_level: Level of routine events for ``logging`` (default ``DEBUG``).

    Returns:
        An `Instrumentation`; call ``close()`` to remove the listeners again.

    Raises:
        ConfigurationError: Nothing was selected.
        ImportError: A selected adapter's dependency is missing (with the install hint).
    """
    if traces is None:
        traces = otel
    made: list[Listener] = []
    if otel:
        from .otel import OpenTelemetryMetrics

        made.append(OpenTelemetryMetrics(meter_provider))
    if traces:
        from .otel import OpenTelemetryTracing

        made.append(OpenTelemetryTracing(tracer_provider, mode=span_mode))
    if prometheus:
        from .prometheus import PrometheusMetrics

        made.append(PrometheusMetrics(registry))
    if logging:
        made.append(LoggingListener(level=log_level))
    if structlog:
        from .structlog import StructlogListener

        made.append(StructlogListener())
    if not made:
        raise ConfigurationError.invalid(
            "instrument",
            "adapters",
            None,
            "at least one of otel=True, traces=True, prometheus=True, logging=True, structlog=True",
        )
    for listener in made:
        add_listener(listener)
    return Instrumentation(tuple(made))
