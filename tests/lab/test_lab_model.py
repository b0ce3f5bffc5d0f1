"""The dependency model's cache flush, zone-to-zone delays and key popularity."""

from __future__ import annotations

import json
import math
import random
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from buttress._cli import main
from buttress.lab import ScenarioError, load_scenario, run_one
from buttress.lab.model import key_picker
from buttress.lab.scenario import LoadSpec, Scenario, ZoneDelays, parse_scenario

FLUSH: dict[str, Any] = {
    "scenario": {"name": "flush", "duration": 20.0, "seeds": 1, "window": 1.0},
    "dependency": {"workers": 1000, "service": 0.5},
    "load": {"rate": 100.0, "arrival": "constant"},
    "faults": [{"kind": "cache_flush", "start": 10.0, "duration": 5.0}],
    "pipelines": {
        "naive": {"baseline": "cachetools-ttl"},
        "single-flight": {"strategies": [{"cache_aside": {"ttl": 600.0, "key": "k:{key}"}}]},
    },
}


def _runs(sc: Scenario, seed: int = 0) -> dict[str, dict[str, Any]]:
    return {p.name: run_one(sc, p, seed) for p in sc.pipelines}


def test_cache_flush_makes_every_reader_load_without_single_flight() -> None:
    runs = _runs(parse_scenario(FLUSH))
    naive, mine = runs["naive"]["faults"][0], runs["single-flight"]["faults"][0]
    # 100 readers/s of one key, each load 0.5 s: the naive cache sends every reader that
    # arrives while the first load runs (~50); single-flight sends one load
    assert 50 <= naive["max_loads_per_key"] <= 51
    assert naive["loads_per_key"] == naive["max_loads_per_key"]
    assert mine["max_loads_per_key"] == 1
    assert mine["loads_per_key"] == 1.0
    assert mine["peak_load_during"] == 1
    assert naive["peak_load_during"] >= 50
    # the cache really was emptied: one load at the cold start and one after the flush
    assert runs["single-flight"]["server_requests"] == 2
    assert runs["single-flight"]["success_rate"] == 1.0


def test_cache_flush_without_a_cache_counts_every_request() -> None:
    data = {**FLUSH, "pipelines": {"plain": {"baseline": "no-retry"}}}
    (run,) = _runs(parse_scenario(data)).values()
    fault = run["faults"][0]
    assert fault["loads_per_key"] == fault["max_loads_per_key"] == 500  # 5 s x 100 rps
    assert fault["kind"] == "cache_flush"
    assert fault["start"] == 10.0 and fault["end"] == 15.0


def test_cache_flush_duration_defaults_to_a_ten_second_window() -> None:
    data = {**FLUSH, "faults": [{"kind": "cache_flush", "start": 5.0}]}
    assert parse_scenario(data).faults[0].end == 15.0


def test_other_faults_have_no_per_key_loads_but_a_peak() -> None:
    data = {**FLUSH, "faults": [{"kind": "latency", "factor": 2.0, "start": 5.0, "duration": 2.0}]}
    run = _runs(parse_scenario(data))["naive"]
    fault = run["faults"][0]
    assert fault["loads_per_key"] is None and fault["max_loads_per_key"] is None
    assert fault["peak_load_during"] == 0  # every read is a hit by then


ZONES: dict[str, Any] = {
    "scenario": {"name": "zones", "duration": 10.0, "seeds": 1, "window": 1.0},
    "dependency": {
        "replicas": 3,
        "zones": ["zone-a", "zone-b", "zone-c"],
        "workers": 100,
        "service": 0.01,
        "zone_delay": {"same": 0.0005, "cross": 0.005, "pairs": {"zone-a": {"zone-c": 0.01}}},
    },
    "load": {"rate": 300.0, "arrival": "constant"},
    "client": {"zone": "zone-a", "routing": "round_robin"},
    "pipelines": {"plain": {"baseline": "no-retry"}},
}


def test_zone_delays_apply_to_request_and_reply() -> None:
    run = _runs(parse_scenario(ZONES))["plain"]
    # round robin over one replica per zone: same zone 0.5 ms each way, zone-b 5 ms,
    # zone-c 10 ms (the pair, both directions); service 10 ms
    assert run["latency"]["p50"] == pytest.approx(0.02)
    assert run["latency"]["p999"] == pytest.approx(0.03)
    assert run["cross_zone_share"] == pytest.approx(2 / 3, abs=0.01)
    flat = {**ZONES, "dependency": {**ZONES["dependency"], "zone_delay": {"cross": 0.0}}}
    run = _runs(parse_scenario(flat))["plain"]
    assert run["latency"]["p999"] == pytest.approx(0.01)  # no delays: the service time alone
    assert run["cross_zone_share"] == pytest.approx(2 / 3, abs=0.01)


def test_zone_aware_balancing_avoids_the_cross_zone_cost() -> None:
    data = {
        **ZONES,
        "pipelines": {
            "anywhere": {"strategies": [{"load_balance": {"outlier": False}}]},
            "local": {"strategies": [{"load_balance": {"zone": "zone-a", "outlier": False}}]},
        },
    }
    runs = _runs(parse_scenario(data))
    assert runs["local"]["cross_zone_share"] == 0.0
    assert runs["local"]["latency"]["p99"] == pytest.approx(0.011)
    assert runs["anywhere"]["cross_zone_share"] > 0.3
    assert runs["anywhere"]["latency"]["p99"] >= 0.02


def test_zone_delays_pairs_are_symmetric_unless_both_directions_are_given() -> None:
    d = ZoneDelays(same=0.1, cross=1.0, pairs=(("a", "b", 2.0), ("b", "a", 3.0), ("a", "c", 4.0)))
    assert d.between("a", "a") == 0.1
    assert d.between("a", "b") == 2.0 and d.between("b", "a") == 3.0
    assert d.between("c", "a") == 4.0
    assert d.between("b", "c") == 1.0


def test_same_seed_gives_identical_results_with_flush_and_zones() -> None:
    data = {
        **ZONES,
        "load": {"rate": 200.0, "keys": 50, "key_popularity": "zipf"},
        "faults": [{"kind": "cache_flush", "start": 4.0}],
        "pipelines": FLUSH["pipelines"],
    }
    data["dependency"] = {
        **ZONES["dependency"],
        "network": {"distribution": "exponential", "mean": 0.001},
    }
    sc = parse_scenario(data)
    first = json.dumps(_runs(sc, 3), sort_keys=True)
    assert first == json.dumps(_runs(sc, 3), sort_keys=True)
    assert first != json.dumps(_runs(sc, 4), sort_keys=True)


def test_zipf_keys_follow_their_weights() -> None:
    pick = key_picker(LoadSpec(rate=1.0, keys=10, key_popularity="zipf"), random.Random(1))
    counts = Counter(pick() for _ in range(20_000))
    harmonic = sum(1.0 / k for k in range(1, 11))
    assert counts[0] / 20_000 == pytest.approx(1.0 / harmonic, abs=0.015)
    assert counts[9] / 20_000 == pytest.approx(0.1 / harmonic, abs=0.01)
    assert set(counts) == set(range(10))
    flat = key_picker(LoadSpec(rate=1.0, keys=4), random.Random(1))
    assert {flat() for _ in range(100)} == {0, 1, 2, 3}
    steep = key_picker(
        LoadSpec(rate=1.0, keys=4, key_popularity="zipf", zipf_exponent=0.0), random.Random(1)
    )
    assert max(Counter(steep() for _ in range(4000)).values()) < 1100  # exponent 0 = uniform
    assert math.isclose(LoadSpec().zipf_exponent, 1.0)


ZONE_TOML = """
[scenario]
name = "z"
duration = 10.0

[dependency]
replicas = 2
zones = ["zone-a", "zone-b"]

[dependency.zone_delay]
cross = 0.002

[load]
rate = 10.0

[client]
zone = "zone-a"

[pipelines.p]
baseline = "no-retry"
"""


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        (
            "cross = 0.002",
            "cross = -0.002",
            "dependency.zone_delay.cross",
            "expected a number >= 0",
        ),
        ("cross = 0.002", "crosss = 0.002", "dependency.zone_delay.crosss", "unknown key"),
        (
            "cross = 0.002",
            "pairs = { zone-x = { zone-a = 0.001 } }",
            "dependency.zone_delay.pairs.zone-x",
            "unknown zone 'zone-x'; expected one of dependency.zones: zone-a, zone-b",
        ),
        (
            "cross = 0.002",
            "pairs = { zone-a = { zone-q = 0.001 } }",
            "dependency.zone_delay.pairs.zone-a.zone-q",
            "unknown zone 'zone-q'",
        ),
        (
            "cross = 0.002",
            "pairs = { zone-a = { zone-b = -1 } }",
            "dependency.zone_delay.pairs.zone-a.zone-b",
            "expected a number >= 0",
        ),
        ("cross = 0.002", "pairs = 3", "dependency.zone_delay.pairs", "expected a table"),
        ('zone = "zone-a"', 'zone = "zone-z"', "client.zone", "unknown zone 'zone-z'"),
        ("replicas = 2", 'kind = "occ"', "dependency.zone_delay", "only for kind = 'service'"),
    ],
)
def test_bad_zone_settings_name_the_key_and_the_expectation(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    path = tmp_path / "z.toml"
    path.write_text(textwrap.dedent(ZONE_TOML.replace(old, new)), encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.key == key
    assert expected in info.value.message
    assert str(path) in str(info.value)


def test_cli_bad_zone_delay_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "z.toml"
    path.write_text(ZONE_TOML.replace("cross = 0.002", "cross = -1.0"), encoding="utf-8")
    assert main(["lab", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{path}: dependency.zone_delay.cross: expected a number >= 0" in err


def test_real_mode_refuses_cache_flush_and_zone_delays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("httpx")
    path = tmp_path / "z.toml"
    path.write_text(ZONE_TOML, encoding="utf-8")
    out = str(tmp_path / "out")
    assert main(["lab", "run", "--real", str(path), "--out", out]) == 2
    assert "dependency.zone_delay: zone delays are simulator-only" in capsys.readouterr().err
    flush = ZONE_TOML.replace("cross = 0.002", "cross = 0.0") + (
        '\n[[faults]]\nkind = "cache_flush"\nstart = 1.0\n'
    )
    path.write_text(flush, encoding="utf-8")
    assert main(["lab", "run", "--real", str(path), "--out", out]) == 2
    assert "faults[0].kind: 'cache_flush' is simulator-only" in capsys.readouterr().err


def test_cache_flush_is_refused_for_the_occ_dependency() -> None:
    data: dict[str, Any] = {
        "scenario": {"name": "o", "duration": 5.0},
        "dependency": {"kind": "occ"},
        "load": {"kind": "closed"},
        "faults": [{"kind": "cache_flush", "start": 1.0}],
        "pipelines": {"p": {"baseline": "no-retry"}},
    }
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    assert info.value.key == "faults[0].kind"
    assert "needs dependency.kind = 'service'" in info.value.message


def test_flush_results_reach_results_json_and_the_table(tmp_path: Path) -> None:
    from buttress.lab import run_scenario
    from buttress.lab.report import summary_rows

    sc = parse_scenario({**FLUSH, "client": {"zone": "zone-a"}})
    results = run_scenario(sc, seeds=2)
    naive, mine = results["pipelines"]
    assert mine["faults"][0]["max_loads_per_key"] == {"mean": 1.0, "p5": 1.0, "p95": 1.0}
    assert naive["faults"][0]["loads_per_key"]["mean"] >= 50
    assert naive["cross_zone_share"]["mean"] == 0.0
    header, rows = summary_rows(results, bands=False)
    assert header[-5:] == [
        "fault loads/key",
        "fault max/key",
        "fault peak/s",
        "fault recovered",
        "fault recover s",
    ]
    assert rows[1][-5:-2] == ["1.00", "1", "1"]
