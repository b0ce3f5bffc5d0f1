"""`buttress lab` command line and scenario validation: clear messages, exit code 2."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from buttress._cli import main
from buttress.lab import ScenarioError, load_scenario

GOOD = """
[scenario]
name = "tiny"
duration = 20.0
seeds = 1
window = 2.0

[dependency]
workers = 4
queue = 20
service = { distribution = "exponential", mean = 0.05 }

[load]
rate = 40.0

[client]
timeout = 0.5

[[faults]]
kind = "outage"
start = 5.0
duration = 5.0

[pipelines.none]
baseline = "no-retry"

[pipelines.mine]
strategies = [{ retry = { on = ["error"], attempts = 2, backoff = 0.1, budget = "none" } }]
"""


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _bad(tmp_path: Path, old: str, new: str) -> ScenarioError:
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value


def test_good_scenario_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    assert main(["lab", "validate", str(path)]) == 0
    assert "ok:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("queue = 20", "queue = 20\nqeueu = 3", "dependency.qeueu", "unknown key"),
        ("rate = 40.0", "rate = -5.0", "load.rate", "expected a number >= 0"),
        ("rate = 40.0", 'rate = "fast"', "load.rate", "a string"),
        ('kind = "outage"', 'kind = "meteor"', "faults[0].kind", "expected one of: outage"),
        ('baseline = "no-retry"', 'baseline = "tenacity-9"', "pipelines.none.baseline", "one of"),
        ("attempts = 2", "attempts = 0", "pipelines.mine.strategies[0].retry.attempts", ">= 1"),
        ("attempts = 2", "tries = 2", "pipelines.mine.strategies[0].retry.tries", "unknown option"),
        ("{ retry =", "{ retyr =", "pipelines.mine.strategies[0].retyr", "unknown strategy"),
        ("duration = 5.0", "duration = 0", "faults[0].duration", "> 0"),
        ("mean = 0.05 }", "mean = 0.05, p42 = 1 }", "dependency.service.p42", "unknown key"),
    ],
)
def test_bad_scenarios_name_the_key_and_the_expectation(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    err = _bad(tmp_path, old, new)
    assert err.key == key
    assert expected in err.message
    assert str(tmp_path / "s.toml") in str(err)


def test_cli_reports_bad_file_without_traceback_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GOOD.replace("rate = 40.0", "rate = -1.0"))
    assert main(["lab", "run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert f"{path}: load.rate: expected a number >= 0" in err


def test_cli_missing_file_and_invalid_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", "validate", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err
    bad = _write(tmp_path, "[scenario\nname=1")
    assert main(["lab", "validate", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_run_writes_results_json_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GOOD)
    out = tmp_path / "out"
    assert main(["lab", "run", str(path), "--out", str(out), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "results: " in text
    assert "report.html" in text
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == "buttress.lab.results"
    assert [p["name"] for p in data["pipelines"]] == ["none", "mine"]
    mine = data["pipelines"][1]
    # the fast-error outage: 2 attempts => about 2x load during the fault
    assert mine["faults"][0]["amplification_during"]["mean"] == pytest.approx(2.0, abs=0.05)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert (out / "report.png").read_bytes().startswith(b"\x89PNG")


def test_python_pipeline_is_rebuilt_on_the_lab_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mypipes.py").write_text(
        textwrap.dedent(
            """
            from buttress import Pipeline, Retry, backoff
            from buttress.lab import ServerError

            production = Pipeline(
                Retry(on=ServerError, attempts=4, backoff=backoff.none(), budget=None),
                name="production",
            )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _write(tmp_path, GOOD)
    out = tmp_path / "out"
    code = main(
        [
            "lab",
            "run",
            str(path),
            "--pipeline",
            "mypipes:production",
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-report",
        ]
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())
    prod = data["pipelines"][-1]
    assert prod["name"] == "production"
    assert prod["source"] == "python:mypipes:production"
    assert prod["faults"][0]["amplification_during"]["mean"] == pytest.approx(4.0, abs=0.1)


def test_unknown_python_pipeline_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GOOD)
    assert main(["lab", "run", str(path), "--pipeline", "no_such_module_x:p"]) == 2
    assert "no_such_module_x" in capsys.readouterr().err


def test_list_shows_the_bundled_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "list"]) == 0
    assert "demo-zone-outage" in capsys.readouterr().out


def test_every_shipped_scenario_validates() -> None:
    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "examples" / "scenarios").glob("*.toml"))
    files += sorted((root / "src" / "buttress" / "lab" / "scenarios").glob("*.toml"))
    assert len(files) >= 4
    for f in files:
        sc = load_scenario(f)
        assert sc.reproduces, f"{f} must say which published result it reproduces"
        assert "Reproduces" in f.read_text() or "reproduces" in f.read_text().lower()


REAL = """
[scenario]
name = "real-smoke"
duration = 4.0
seeds = 1
window = 1.0
recovery_hold = 1.0
recovery_bin = 1.0
recover_within = 2.0

[dependency]
workers = 4
queue = 50
service = { distribution = "constant", value = 0.01 }

[load]
rate = 30.0

[client]
timeout = 0.5

[[faults]]
kind = "outage"
mode = "fast"
start = 1.5
duration = 1.0

[pipelines.none]
baseline = "no-retry"

[pipelines.retry]
strategies = [{ retry = { on = ["error"], attempts = 2, backoff = "none", budget = "none" } }]
"""


@pytest.mark.realtime
def test_real_mode_runs_http_servers_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, REAL)
    out = tmp_path / "out"
    code = main(["lab", "run", "--real", str(path), "--out", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())
    assert data["real"]["rate_scale"] == 1.0
    none, retry = data["pipelines"]
    assert none["first_tries"]["mean"] > 60
    assert none["server_requests"]["mean"] > 0
    assert none["rejections"].get("client:ServerError", 0) > 0  # the outage was applied live
    # the retry pipeline resends the calls that failed during the outage (real HTTP
    # calls; exact rates depend on the machine's load, so only counts are checked)
    run_none, run_retry = none["runs"][0], retry["runs"][0]
    assert run_none["client_attempts"] == run_none["first_tries"]
    assert run_retry["client_attempts"] >= run_retry["first_tries"] + 10
    assert run_retry["server_requests"] > run_retry["first_tries"]


def test_real_mode_refuses_too_long_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the default output directory is relative
    path = _write(tmp_path, REAL.replace("duration = 4.0", "duration = 400.0"))
    assert main(["lab", "run", "--real", str(path)]) == 2
    assert "real mode would take" in capsys.readouterr().err
    # refused before the run starts: no empty lab-results/real-smoke/ left behind
    assert not (tmp_path / "lab-results").exists()
    out = tmp_path / "nested" / "out"
    assert main(["lab", "run", "--real", str(path), "--out", str(out)]) == 2
    assert not (tmp_path / "nested").exists()


def test_refused_simulated_runs_leave_no_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # a --pipeline named like a scenario pipeline: refused by the runner's validation
    (tmp_path / "dup_pipes.py").write_text("from buttress import Pipeline\nnone = Pipeline()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _write(tmp_path, GOOD)
    argv = ["lab", "run", str(path), "--pipeline", "dup_pipes:none", "--workers", "1"]
    assert main(argv) == 2
    assert "duplicate pipeline names" in capsys.readouterr().err
    # a bad scenario file
    path = _write(tmp_path, GOOD.replace("rate = 40.0", "rate = -1.0"))
    assert main(["lab", "run", str(path), "--workers", "1"]) == 2
    assert "load.rate" in capsys.readouterr().err
    assert not (tmp_path / "lab-results").exists()


def test_real_mode_refuses_duplicate_pipeline_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # as simulated runs do: two pipelines named "none" would be merged into one result
    pytest.importorskip("httpx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dup_real.py").write_text("from buttress import Pipeline\nnone = Pipeline()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _write(tmp_path, REAL)
    assert main(["lab", "run", "--real", str(path), "--pipeline", "dup_real:none"]) == 2
    assert "duplicate pipeline names" in capsys.readouterr().err
    assert not (tmp_path / "lab-results").exists()


def test_out_under_a_file_is_refused_before_simulating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GOOD)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    out = tmp_path / "file" / "out"
    assert main(["lab", "run", str(path), "--out", str(out), "--workers", "1"]) == 2
    captured = capsys.readouterr()
    assert "--out" in captured.err
    assert str(out) in captured.err
    assert "simulated" not in captured.out


def test_demo_reading_is_computed_from_the_results(tmp_path: Path) -> None:
    from buttress.lab.cli import demo_reading

    def pipeline(name: str, load: float, wasted: float, recovered: int) -> dict[str, Any]:
        return {
            "name": name,
            "amplification": {"mean": load},
            "wasted_fraction": {"mean": wasted},
            "faults": [{"recovered_seeds": recovered, "recovery_judged": True}],
            "runs": [{}, {}, {}],
        }

    results = tmp_path / "results.json"
    results.write_text(
        json.dumps(
            {"pipelines": [pipeline("calm", 0.93, 0.01, 3), pipeline("storm", 2.12, 0.671, 0)]}
        )
    )
    reading = demo_reading(results)
    assert "calm: load 0.93x, 1% of the dependency's work wasted, recovered in 3/3" in reading
    assert "storm: load 2.12x, 67% of the dependency's work wasted, recovered in 0/3" in reading
    assert demo_reading(tmp_path / "missing.json") == ""
    results.write_text("not json")
    assert demo_reading(results) == ""
