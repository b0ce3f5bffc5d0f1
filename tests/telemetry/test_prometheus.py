"""Prometheus adapter, read back by parsing the registry's text exposition."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from buttress import Pipeline, Retry, backoff
from buttress.events import (
    CacheHit,
    CacheMiss,
    CallRejected,
    CircuitStateChanged,
    FallbackUsed,
    HedgeStarted,
)
from buttress.telemetry import instrument
from buttress.telemetry.names import METRICS
from buttress.telemetry.prometheus import PrometheusMetrics
from buttress.testing import ManualClock


def _samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(registry).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_retried_call_exposes_prometheus_names(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    pipeline = Pipeline(
        Retry(on=ConnectionError, backoff=backoff.constant(2.0), budget=None),
        name="inv",
        clock=clock,
        listeners=[PrometheusMetrics(registry)],
    )
    state = {"n": 0}

    def fn() -> int:
        state["n"] += 1
        if state["n"] == 1:
            raise ConnectionError
        return 1

    pipeline.call(fn)
    s = _samples(registry)
    assert s["buttress_pipeline_calls_total"] == [
        ({"pipeline": "inv", "outcome": "success", "error_type": ""}, 1.0)
    ]
    assert ({"pipeline": "inv", "outcome": "success"}, 1.0) in s[
        "buttress_pipeline_duration_seconds_count"
    ]
    attempts = {
        (labels["outcome"], labels["error_type"]): v
        for labels, v in s["buttress_retry_attempts_total"]
    }
    assert attempts == {("handled", "ConnectionError"): 1.0, ("success", ""): 1.0}
    assert s["buttress_retry_delay_seconds_sum"] == [
        ({"pipeline": "inv", "strategy": "retry"}, 2.0)
    ]
    bucket_2_5 = [
        v for labels, v in s["buttress_retry_delay_seconds_bucket"] if labels["le"] == "2.5"
    ]
    assert bucket_2_5 == [1.0]


def test_strategy_events_and_gauges(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    listener = PrometheusMetrics(registry)
    for event in (
        CallRejected(pipeline="p", strategy="bh", time=0, reason="bulkhead_full"),
        CircuitStateChanged(
            pipeline="p", strategy="cb", time=0, from_state="closed", to_state="open"
        ),
        FallbackUsed(pipeline="p", strategy="fb", time=0, error_type="KeyError"),
        HedgeStarted(pipeline="p", strategy="h", time=0, hedge=1, delay=0.1),
        CacheHit(pipeline="p", strategy="c", time=0, key="k"),
        CacheMiss(pipeline="p", strategy="c", time=0, key="k"),
        CacheMiss(pipeline="p", strategy="c", time=0, key="j"),
    ):
        listener(event)
    # keep a reference: gauges are weakly registered and must not vanish before the scrape
    pipeline = Pipeline(Retry(on=ValueError, name="x"), name="prom-gauge", clock=clock)
    pipeline.call(lambda: 1)
    s = _samples(registry)
    assert s["buttress_rejections_total"] == [
        ({"pipeline": "p", "strategy": "bh", "reason": "bulkhead_full"}, 1.0)
    ]
    assert s["buttress_circuit_transitions_total"][0][0]["state"] == "open"
    assert s["buttress_fallback_used_total"][0] == (
        {"pipeline": "p", "strategy": "fb", "error_type": "KeyError"},
        1.0,
    )
    assert s["buttress_hedge_started_total"][0][1] == 1.0
    assert s["buttress_cache_hits_total"][0][0]["tier"] == "local"
    assert s["buttress_cache_misses_total"][0][1] == 2.0
    levels = [
        v for labels, v in s["buttress_retry_budget_level"] if labels["pipeline"] == "prom-gauge"
    ]
    assert levels == [pytest.approx(100.1)]
    del pipeline


def test_same_registry_twice_shares_metrics(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    a, b = PrometheusMetrics(registry), PrometheusMetrics(registry)
    Pipeline(name="twice", clock=clock, listeners=[a, b]).call(lambda: 1)
    assert _samples(registry)["buttress_pipeline_calls_total"][0][1] == 2.0


def test_every_table_metric_is_exposed_under_its_prometheus_name(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    text = generate_latest(registry).decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for spec in METRICS:
        if spec.kind == "gauge":
            assert families.get(spec.prometheus) == "gauge", spec.name
        elif spec.kind == "counter":
            assert families.get(spec.prometheus.removesuffix("_total")) == "counter", spec.name
        else:
            assert spec.prometheus.endswith("_seconds"), spec.name
            assert families.get(spec.prometheus) == "histogram", spec.name


def test_instrument_prometheus_one_line(clock: ManualClock) -> None:
    registry = CollectorRegistry()
    pipeline = Pipeline(name="one-line", clock=clock)
    with instrument(prometheus=True, registry=registry):
        pipeline.call(lambda: 1)
    pipeline.call(lambda: 1)
    assert _samples(registry)["buttress_pipeline_calls_total"][0][1] == 1.0


def test_bulkhead_gauges_in_exposition(clock: ManualClock) -> None:
    import asyncio

    from buttress import Bulkhead

    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    bulkhead = Bulkhead(2, max_queued=3, name="db")
    pipeline = Pipeline(bulkhead, name="bh-gauge", clock=clock)
    seen: list[tuple[float, float]] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def hold() -> None:
            await gate.wait()

        tasks = [asyncio.ensure_future(pipeline.acall(hold)) for _ in range(4)]
        await asyncio.sleep(0.01)
        s = _samples(registry)
        in_use = [
            v for labels, v in s["buttress_bulkhead_in_use"] if labels["pipeline"] == "bh-gauge"
        ]
        queued = [
            v for labels, v in s["buttress_bulkhead_queued"] if labels["pipeline"] == "bh-gauge"
        ]
        seen.append((in_use[0], queued[0]))
        gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert seen == [(2.0, 2.0)]
    after = _samples(registry)["buttress_bulkhead_in_use"]
    assert [v for labels, v in after if labels["pipeline"] == "bh-gauge"] == [0.0]
