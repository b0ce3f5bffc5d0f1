"""Gauge registry: how stateful strategies expose snapshots of their state to telemetry.

Events describe *changes*; a gauge describes *state now* (breaker state, bulkhead permits
in use, retry-budget level). Strategies never import telemetry (layering), so they register
a **reader** here when a pipeline builds them, and telemetry adapters pull readings when a
metrics backend collects (an OpenTelemetry observable gauge callback, a Prometheus scrape).
Nothing runs per call: registration happens at chain build time, reading at collection.

A reader is ``read(owner, now) -> iterable of (metric, value, attributes)`` where ``metric``
is a name from the telemetry table (e.g. ``"buttress.circuit.state"``), ``value`` a float
and ``attributes`` a mapping of str to str (``strategy`` at least). The registry adds the
``pipeline`` attribute. Owners are held weakly: a garbage-collected strategy disappears from
the readings. Registering the same owner for the same pipeline twice is a no-op.

Example (in a strategy's ``build_sync``/``build_async``)::

    register_gauge(self, env.name, env.clock, _read_bulkhead)

    def _read_bulkhead(bulkhead, now):
        yield ("buttress.bulkhead.in_use", bulkhead.in_use, {"strategy": bulkhead.name})
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["GaugeReader", "Reading", "gauge_readings", "register_gauge", "unregister_gauge"]

Reading = tuple[str, float, dict[str, str]]
"""One gauge value: (metric name, value, attributes including ``pipeline``)."""

GaugeReader = Callable[[Any, float], Iterable[tuple[str, float, Mapping[str, str]]]]
"""``read(owner, now)`` yielding ``(metric, value, attributes)``."""

_log = logging.getLogger("buttress")
_lock = threading.Lock()
# owner -> {(pipeline, reader): clock}
_sources: weakref.WeakKeyDictionary[Any, dict[tuple[str, GaugeReader], Any]] = (
    weakref.WeakKeyDictionary()
)


def register_gauge(owner: Any, pipeline: str, clock: Any, read: GaugeReader) -> None:
    """Expose ``owner``'s state as gauges under pipeline ``pipeline``.

    Args:
        owner: The stateful object (held weakly; must support weak references).
        pipeline: Pipeline name added as the ``pipeline`` attribute.
        clock: Object with ``now()`` (seconds) passed to ``read`` at collection time.
        read: ``read(owner, now)`` yielding ``(metric, value, attributes)``.
    """
    with _lock:
        entries = _sources.get(owner)
        if entries is None:
            entries = _sources[owner] = {}
        entries[(pipeline, read)] = clock


def unregister_gauge(owner: Any) -> None:
    """Stop exposing ``owner`` (no error if it was never registered)."""
    with _lock:
        _sources.pop(owner, None)


def gauge_readings() -> list[Reading]:
    """Read every registered gauge now. A reader that raises is logged and skipped."""
    with _lock:
        items = [(owner, dict(entries)) for owner, entries in _sources.items()]
    out: list[Reading] = []
    for owner, entries in items:
        for (pipeline, read), clock in entries.items():
            try:
                for metric, value, attributes in read(owner, float(clock.now())):
                    attrs = {"pipeline": pipeline, **attributes}
                    out.append((metric, float(value), attrs))
            except Exception:
                _log.exception("buttress gauge reader %r for %r raised; skipped", read, owner)
    return out
