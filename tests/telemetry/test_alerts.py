"""Shipped alert rules and dashboard: parse, reference only emitted metrics, promtool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from buttress import ConfigurationError
from buttress._cli import main
from buttress.telemetry.alerts import (
    alert_rules,
    dashboard,
    metric_names_in,
    shipped_dashboard,
    shipped_rules,
)
from buttress.telemetry.names import METRICS

EMITTED = {spec.prometheus for spec in METRICS}


def test_shipped_files_equal_the_rendered_defaults() -> None:
    assert shipped_rules() == alert_rules()
    assert shipped_dashboard() == dashboard()


def test_rules_parse_and_name_only_emitted_metrics() -> None:
    doc = yaml.safe_load(shipped_rules())
    rules = doc["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "ButtressCircuitOpen",
        "ButtressRetryBudgetExhausted",
        "ButtressRejectionRateHigh",
        "ButtressErrorBudgetBurnFast",
        "ButtressErrorBudgetBurnSlow",
    }
    named: set[str] = set()
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        refs = metric_names_in(rule["expr"])
        assert refs, rule["alert"]
        named |= refs
    assert named <= EMITTED, named - EMITTED
    by_name = {r["alert"]: r for r in rules}
    assert by_name["ButtressCircuitOpen"]["for"] == "5m"
    assert "0.001" in by_name["ButtressErrorBudgetBurnFast"]["expr"]


def test_dashboard_parses_and_names_only_emitted_metrics() -> None:
    board = json.loads(shipped_dashboard())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    named = set().union(*(metric_names_in(e) for e in exprs))
    assert named <= EMITTED, named - EMITTED
    # every metric of the table appears somewhere in the dashboard
    assert EMITTED - named == set()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_metric_names_in_strips_histogram_suffixes() -> None:
    assert metric_names_in("rate(buttress_retry_delay_seconds_bucket[5m]) + buttress_x_total") == {
        "buttress_retry_delay_seconds",
        "buttress_x_total",
    }


def test_thresholds_are_configurable_and_validated() -> None:
    text = alert_rules(breaker_open_for="10m", slo=0.99, rejection_ratio=0.2)
    rules = {r["alert"]: r for r in yaml.safe_load(text)["groups"][0]["rules"]}
    assert rules["ButtressCircuitOpen"]["for"] == "10m"
    assert "(14.4 * 0.01)" in rules["ButtressErrorBudgetBurnFast"]["expr"]
    assert "> 0.2" in rules["ButtressRejectionRateHigh"]["expr"]
    with pytest.raises(ConfigurationError, match="breaker_open_for"):
        alert_rules(breaker_open_for="5 minutes")
    with pytest.raises(ConfigurationError, match="slo"):
        alert_rules(slo=1.0)


def test_cli_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["telemetry", "export-rules"]) == 0
    assert capsys.readouterr().out == shipped_rules()
    out = tmp_path / "board.json"
    assert main(["telemetry", "export-dashboard", "-o", str(out)]) == 0
    assert out.read_text() == shipped_dashboard()
    assert main(["telemetry", "export-rules", "--breaker-open-for", "bad"]) == 2
    assert "breaker_open_for" in capsys.readouterr().err


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true" and os.environ.get("BUTTRESS_REQUIRE_PROMTOOL"):
            pytest.fail("promtool required but missing")
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    path = tmp_path / "alerts.yml"
    path.write_text(shipped_rules())
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_real_open_breaker_matches_the_alert_selector(clock: Any) -> None:
    """A real CircuitBreaker, scraped: the series the ButtressCircuitOpen rule selects is 1."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from buttress import CircuitBreaker, CircuitOpenError, Pipeline
    from buttress.telemetry.prometheus import PrometheusMetrics

    registry = CollectorRegistry()
    breaker = CircuitBreaker(on=ConnectionError, consecutive_failures=2, name="db")
    pipeline = Pipeline(
        breaker, name="alerting", clock=clock, listeners=[PrometheusMetrics(registry)]
    )

    def fail() -> None:
        raise ConnectionError

    for _ in range(2):
        with pytest.raises(ConnectionError):
            pipeline.call(fail)
    with pytest.raises(CircuitOpenError):
        pipeline.call(fail)
    text = generate_latest(registry).decode()
    states = {
        s.labels["state"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "buttress_circuit_state" and s.labels["pipeline"] == "alerting"
    }
    assert states["open"] == 1.0
    assert states["closed"] == 0.0
    rejected = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "buttress_rejections_total"
    ]
    assert [(s.labels["reason"], s.value) for s in rejected] == [("circuit_open", 1.0)]
    transitions = [
        s.labels["state"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "buttress_circuit_transitions_total"
    ]
    assert transitions == ["open"]


PROMTOOL_TESTS = """
rule_files:
  - alerts.yml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'buttress_circuit_state{pipeline="p", strategy="db", state="open"}'
        values: '0 1x10'
      - series: 'buttress_pipeline_calls_total{pipeline="p", outcome="success"}'
        values: '0+90x120'
      - series: 'buttress_pipeline_calls_total{pipeline="p", outcome="error"}'
        values: '0+10x120'
    alert_rule_test:
      - eval_time: 4m
        alertname: ButtressCircuitOpen
        exp_alerts: []
      - eval_time: 7m
        alertname: ButtressCircuitOpen
        exp_alerts:
          - exp_labels: {severity: warning, pipeline: p, strategy: db}
            exp_annotations:
              summary: "Circuit db of pipeline p open for over 5m"
              description: "The breaker keeps failing its half-open probes: the dependency is still down or the break duration is too short."
      - eval_time: 70m
        alertname: ButtressErrorBudgetBurnFast
        exp_alerts:
          - exp_labels: {severity: critical, pipeline: p}
            exp_annotations:
              summary: "Pipeline p burns its 0.999 SLO error budget 14.4x too fast"
              description: "At this rate 2% of a 30-day error budget is spent per hour."
"""  # noqa: E501


def test_promtool_unit_tests_fire_the_alerts(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus')")
    (tmp_path / "alerts.yml").write_text(shipped_rules())
    (tmp_path / "tests.yml").write_text(PROMTOOL_TESTS)
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
