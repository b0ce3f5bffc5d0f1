"""OpenTelemetry adapters, read back through the SDK's in-memory reader and exporter."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from buttress import Pipeline, Retry, backoff
from buttress.events import CallRejected, CircuitStateChanged
from buttress.telemetry import instrument
from buttress.telemetry.otel import OpenTelemetryMetrics, OpenTelemetryTracing
from buttress.testing import ManualClock


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(
                    (m.unit, dict(p.attributes), p) for p in m.data.data_points
                )
    return out


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


def _flaky(clock: ManualClock, failures: int) -> Any:
    state = {"n": 0}

    def fn() -> str:
        clock.advance(0.01)
        state["n"] += 1
        if state["n"] <= failures:
            raise ConnectionError("down")
        return "ok"

    return fn


def test_metrics_from_a_retried_call(clock: ManualClock, reader: InMemoryMetricReader) -> None:
    listener = OpenTelemetryMetrics(MeterProvider(metric_readers=[reader]))
    pipeline = Pipeline(
        Retry(on=ConnectionError, attempts=3, backoff=backoff.constant(0.5), budget=None),
        name="inv",
        clock=clock,
        listeners=[listener],
    )
    assert pipeline.call(_flaky(clock, 2)) == "ok"
    points = _points(reader)

    calls = points["buttress.pipeline.calls"]
    assert [(u, a, p.value) for u, a, p in calls] == [
        ("{call}", {"pipeline": "inv", "outcome": "success"}, 1)
    ]
    (unit, _attrs, duration) = points["buttress.pipeline.duration"][0]
    assert unit == "s"
    assert duration.count == 1
    assert duration.sum == pytest.approx(0.03 + 1.0)

    attempts = {
        (a["outcome"], a.get("error.type")): p.value
        for _, a, p in points["buttress.retry.attempts"]
    }
    assert attempts == {("handled", "ConnectionError"): 2, ("success", None): 1}
    delays = points["buttress.retry.delay"][0][2]
    assert (delays.count, delays.sum) == (2, pytest.approx(1.0))
    # advisory bucket boundaries are in seconds, not milliseconds
    assert 0.5 in delays.explicit_bounds
    assert points["buttress.retry.attempt.duration"][0][0] == "s"


def test_rejections_transitions_and_gauges(
    clock: ManualClock, reader: InMemoryMetricReader
) -> None:
    listener = OpenTelemetryMetrics(MeterProvider(metric_readers=[reader]))
    listener(
        CallRejected(pipeline="p", strategy="cb", time=0.0, reason="circuit_open", retry_after=1.0)
    )
    listener(CallRejected(pipeline="p", strategy="cb", time=0.0, reason="circuit_open"))
    listener(
        CircuitStateChanged(
            pipeline="p", strategy="cb", time=0.0, from_state="closed", to_state="open"
        )
    )
    pipeline = Pipeline(Retry(on=ValueError, name="rt"), name="gauge-otel", clock=clock)
    pipeline.call(lambda: None)
    points = _points(reader)
    assert [(a, p.value) for _, a, p in points["buttress.rejections"]] == [
        ({"pipeline": "p", "strategy": "cb", "reason": "circuit_open"}, 2)
    ]
    assert [(a, p.value) for _, a, p in points["buttress.circuit.transitions"]] == [
        ({"pipeline": "p", "strategy": "cb", "from_state": "closed", "state": "open"}, 1)
    ]
    levels = [
        p.value
        for _, a, p in points["buttress.retry.budget.level"]
        if a["pipeline"] == "gauge-otel"
    ]
    assert levels == [pytest.approx(100.1)]


def _tracing(
    mode: str = "span",
) -> tuple[InMemorySpanExporter, TracerProvider, OpenTelemetryTracing]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider, OpenTelemetryTracing(provider, mode=mode)  # type: ignore[arg-type]


def test_span_per_call_with_attempt_events_and_children(clock: ManualClock) -> None:
    exporter, provider, listener = _tracing()
    tracer = provider.get_tracer("test")
    seen_trace_ids = []

    def work(state: dict[str, int] = {"n": 0}) -> str:  # noqa: B006
        with tracer.start_as_current_span("downstream") as span:
            seen_trace_ids.append(span.get_span_context().trace_id)
        state["n"] += 1
        if state["n"] == 1:
            raise ConnectionError("first fails")
        return "ok"

    pipeline = Pipeline(
        Retry(on=ConnectionError, backoff=backoff.constant(0.2), budget=None),
        name="traced",
        clock=clock,
        listeners=[listener],
    )
    with tracer.start_as_current_span("request") as root:
        assert pipeline.call(work) == "ok"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call = spans["buttress traced"]
    assert call.parent is not None
    assert call.parent.span_id == root.get_span_context().span_id
    downstream = [s for s in exporter.get_finished_spans() if s.name == "downstream"]
    assert len(downstream) == 2
    assert all(
        s.parent is not None and s.parent.span_id == call.context.span_id for s in downstream
    )
    assert len(set(seen_trace_ids)) == 1  # trace context kept across retries
    names = [e.name for e in call.events]
    assert names == [
        "buttress.retry.attempt",
        "buttress.retry.scheduled",
        "buttress.retry.attempt",
    ]
    first, scheduled = call.events[0], call.events[1]
    assert first.attributes is not None
    assert scheduled.attributes is not None
    assert first.attributes["buttress.attempt"] == 1
    assert first.attributes["error.type"] == "ConnectionError"
    assert scheduled.attributes["buttress.delay"] == pytest.approx(0.2)
    assert call.attributes is not None
    assert call.attributes["buttress.outcome"] == "success"
    assert trace.get_current_span() is trace.INVALID_SPAN  # context detached


def test_failed_call_span_has_error_status(clock: ManualClock) -> None:
    exporter, _, listener = _tracing()
    pipeline = Pipeline(name="bad", clock=clock, listeners=[listener])
    with pytest.raises(ValueError):
        pipeline.call(lambda: int("x"))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"


def test_events_mode_adds_events_to_current_span(clock: ManualClock) -> None:
    exporter, provider, listener = _tracing("events")
    pipeline = Pipeline(name="ev", clock=clock, listeners=[listener])
    with provider.get_tracer("t").start_as_current_span("outer"):
        pipeline.call(lambda: 1)
    (span,) = exporter.get_finished_spans()
    assert [e.name for e in span.events] == ["buttress.pipeline.completed"]


def test_async_hedge_like_tasks_keep_the_trace(clock: ManualClock) -> None:
    exporter, provider, listener = _tracing()
    tracer = provider.get_tracer("t")
    pipeline = Pipeline(name="hedged", clock=clock, listeners=[listener])

    async def attempt() -> int:
        with tracer.start_as_current_span("attempt"):
            await asyncio.sleep(0)
        return 1

    async def fan_out() -> list[int]:
        return await asyncio.gather(attempt(), attempt())

    asyncio.run(pipeline.acall(fan_out))
    spans = exporter.get_finished_spans()
    call = next(s for s in spans if s.name == "buttress hedged")
    children = [s for s in spans if s.name == "attempt"]
    assert len(children) == 2
    assert {s.context.trace_id for s in children} == {call.context.trace_id}
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in children)


def test_instrument_installs_globally_and_close_removes(
    clock: ManualClock, reader: InMemoryMetricReader
) -> None:
    exporter, provider, _ = _tracing()
    pipeline = Pipeline(name="global-otel", clock=clock)
    with instrument(
        otel=True, meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=provider
    ):
        pipeline.call(lambda: 1)
    pipeline.call(lambda: 1)
    calls = _points(reader)["buttress.pipeline.calls"]
    assert [p.value for _, a, p in calls if a["pipeline"] == "global-otel"] == [1]
    assert [s.name for s in exporter.get_finished_spans()] == ["buttress global-otel"]


@pytest.mark.realtime
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_real_hedge_attempts_share_the_call_span(mode: str) -> None:
    import threading
    import time

    from buttress import Hedge

    exporter, provider, listener = _tracing()
    tracer = provider.get_tracer("t")
    pipeline = Pipeline(Hedge(delay=0.02), name="hedged-real", listeners=[listener])
    lock = threading.Lock()
    calls = {"n": 0}

    def slow_first() -> int:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        with tracer.start_as_current_span(f"attempt-{n}"):
            time.sleep(0.3 if n == 1 else 0.0)
        return n

    async def aslow_first() -> int:
        calls["n"] += 1
        n = calls["n"]
        with tracer.start_as_current_span(f"attempt-{n}"):
            await asyncio.sleep(0.3 if n == 1 else 0.0)
        return n

    if mode == "sync":
        winner = pipeline.call(slow_first)
    else:
        winner = asyncio.run(pipeline.acall(aslow_first))
    assert winner == 2
    if mode == "sync":
        time.sleep(0.35)  # the abandoned primary thread finishes its span
    spans = exporter.get_finished_spans()
    call = next(s for s in spans if s.name == "buttress hedged-real")
    attempts = [s for s in spans if s.name.startswith("attempt-")]
    assert {s.name for s in attempts} >= {"attempt-2"}
    for span in attempts:
        assert span.context.trace_id == call.context.trace_id
        assert span.parent is not None
        assert span.parent.span_id == call.context.span_id
    assert "buttress.hedge.started" in [e.name for e in call.events]


def test_listener_removed_mid_call_still_ends_its_span(clock: ManualClock) -> None:
    from buttress import add_listener, remove_listener

    exporter, _, listener = _tracing()
    pipeline = Pipeline(name="mid", clock=clock)
    add_listener(listener)

    def work() -> int:
        remove_listener(listener)  # telemetry switched off while this call runs
        return 1

    try:
        assert pipeline.call(work) == 1
    finally:
        remove_listener(listener)
    assert [s.name for s in exporter.get_finished_spans()] == ["buttress mid"]
    assert trace.get_current_span() is trace.INVALID_SPAN
