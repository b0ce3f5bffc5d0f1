"""Prometheus adapter (``prometheus-client``): the metric table under Prometheus naming.

Counters end in ``_total``, second-valued histograms in ``_seconds``; gauges from the gauge
registry are produced at scrape time by a custom collector. Labels are the table's
attributes with ``error.type`` spelled ``error_type``; an attribute an event does not carry
is exported as the empty string (Prometheus treats it as absent).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .._core.gauges import gauge_readings
from ..events import Event
from ._lazy import require
from ._measure import measurements
from .names import METRICS, MetricSpec
from .otel import DEFAULT_BUCKETS

__all__ = ["PrometheusMetrics"]

_lock = threading.Lock()
_per_registry: weakref.WeakKeyDictionary[Any, dict[str, tuple[MetricSpec, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _build(
    prom: Any, registry: Any, buckets: tuple[float, ...]
) -> dict[str, tuple[MetricSpec, Any]]:
    made: dict[str, tuple[MetricSpec, Any]] = {}
    for spec in METRICS:
        if spec.kind == "counter":
            made[spec.name] = (
                spec,
                prom.Counter(spec.prometheus, spec.description, spec.labels, registry=registry),
            )
        elif spec.kind == "histogram":
            made[spec.name] = (
                spec,
                prom.Histogram(
                    spec.prometheus,
                    spec.description,
                    spec.labels,
                    registry=registry,
                    buckets=buckets,
                ),
            )
    registry.register(_GaugeCollector(prom))
    return made


class _GaugeCollector:
    """Produces the table's gauges from the gauge registry at scrape time."""

    def __init__(self, prom: Any) -> None:
        self._family = require("prometheus_client.core", "prometheus").GaugeMetricFamily
        self._specs = [s for s in METRICS if s.kind == "gauge"]

    def describe(self) -> list[Any]:
        return [self._family(s.prometheus, s.description, labels=s.labels) for s in self._specs]

    def collect(self) -> list[Any]:
        readings = gauge_readings()
        out = []
        for spec in self._specs:
            family = self._family(spec.prometheus, spec.description, labels=spec.labels)
            for metric, value, attrs in readings:
                if metric == spec.name:
                    family.add_metric([attrs.get(a, "") for a in spec.attributes], value)
            out.append(family)
        return out


class PrometheusMetrics:
    """Record buttress events as Prometheus metrics.

    Creating several `PrometheusMetrics` on the same registry shares one set of metric
    objects (no "duplicated timeseries" error).

    Args:
        registry: A ``prometheus_client.CollectorRegistry`` (default the global ``REGISTRY``,
            served by ``prometheus_client.start_http_server``).
        buckets: Histogram bucket upper bounds in seconds (default
            `buttress.telemetry.otel.DEFAULT_BUCKETS`); used only by the first instance on a
            registry.

    Raises:
        ImportError: ``prometheus-client`` is not installed.
    """

    def __init__(
        self, registry: Any = None, *, buckets: tuple[float, ...] = DEFAULT_BUCKETS
    ) -> None:
        prom = require("prometheus_client", "prometheus", "prometheus-client")
        registry = registry if registry is not None else prom.REGISTRY
        self.registry = registry
        with _lock:
            made = _per_registry.get(registry)
            if made is None:
                made = _per_registry[registry] = _build(prom, registry, tuple(buckets))
        self._metrics = made

    def __call__(self, event: Event) -> None:
        metrics = self._metrics
        for name, value, attributes in measurements(event):
            spec, metric = metrics[name]
            child = metric.labels(*[attributes.get(a, "") for a in spec.attributes])
            if spec.kind == "counter":
                child.inc(value)
            else:
                child.observe(value)
