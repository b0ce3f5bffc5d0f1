"""Shipped alert rules and dashboard: parse, reference only emitted metrics, promtool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

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
