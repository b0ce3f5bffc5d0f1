"""Regression tests for problems found by the adversarial review (new-user paths).

Each test reproduces one finding: a traceback where the CLI promises one clear line and
exit code 2, or a constructor that accepted an invalid setting and failed later.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from buttress import CacheAside, ConfigurationError, Fallback, Pipeline, Retry, Timeout
from buttress._cli import main
from buttress.lab import ScenarioError, load_scenario

SCENARIO = """
[scenario]
name = "tiny"
duration = 5.0
seeds = 1
window = 1.0

[load]
rate = 5.0

[pipelines.none]
baseline = "no-retry"
"""


def _scenario(tmp_path: Path, text: str = SCENARIO) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _one_clean_line(err: str) -> None:
    assert "Traceback" not in err
    assert err.count("\n") == 1


# -- CLI ---------------------------------------------------------------------------------


def test_lab_validate_non_utf8_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe[scenario]\n")
    assert main(["lab", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    _one_clean_line(err)
    assert str(path) in err
    assert "UTF-8" in err


def test_lab_run_out_is_an_existing_file_exits_2_before_simulating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _scenario(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("not a directory", encoding="utf-8")
    assert main(["lab", "run", str(path), "--out", str(taken), "--workers", "1"]) == 2
    captured = capsys.readouterr()
    _one_clean_line(captured.err)
    assert "--out" in captured.err
    assert str(taken) in captured.err
    assert "simulated" not in captured.out  # refused before any work


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", "", "a\\b"])
def test_scenario_name_must_be_a_plain_directory_name(tmp_path: Path, name: str) -> None:
    # the name becomes lab-results/NAME: a path would write outside lab-results/
    path = _scenario(tmp_path, SCENARIO.replace('name = "tiny"', f"name = {name!r}"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "scenario.name" in str(info.value)


@pytest.mark.parametrize("command", ["export-rules", "export-dashboard"])
def test_telemetry_export_to_unwritable_path_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    target = tmp_path / "missing-dir" / "out.txt"
    assert main(["telemetry", command, "-o", str(target)]) == 2
    err = capsys.readouterr().err
    _one_clean_line(err)
    assert str(target) in err


# -- constructors ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", 3, None])
def test_timeout_name_is_validated(name: object) -> None:
    with pytest.raises(ConfigurationError, match=r"Timeout\(name="):
        Timeout(1.0, name=name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", 3, None])
def test_fallback_name_is_validated(name: object) -> None:
    with pytest.raises(ConfigurationError, match=r"Fallback\(name="):
        Fallback(on=ValueError, value=1, name=name)  # type: ignore[arg-type]


def test_pipeline_refuses_a_strategy_class_with_a_hint() -> None:
    # Pipeline(Retry) used to be accepted and fail on the first call with
    # "TypeError: Retry.build_sync() missing 1 required positional argument: 'env'"
    with pytest.raises(ConfigurationError, match=r"Retry\(\.\.\.\)"):
        Pipeline(Retry)


@pytest.mark.parametrize("value", ["no", 0, None])
def test_cache_aside_fail_open_must_be_a_bool(value: object) -> None:
    # bool("no") is True: a string used to enable fail-open silently
    with pytest.raises(ConfigurationError, match=r"CacheAside\(fail_open="):
        CacheAside(1.0, fail_open=value)  # type: ignore[arg-type]


def test_lab_run_reports_cpu_including_worker_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "0.2s CPU in this process" hid the workers' CPU (most of it with --workers 2)
    path = _scenario(tmp_path)
    out = tmp_path / "out"
    assert main(["lab", "run", str(path), "--out", str(out), "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "CPU, worker processes included" in text
    assert "in this process" not in text


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_lab_run_rejects_workers_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    path = _scenario(tmp_path)
    assert main(["lab", "run", str(path), "--out", str(tmp_path / "o"), "--workers", workers]) == 2
    err = capsys.readouterr().err
    _one_clean_line(err)
    assert "--workers" in err


def test_lab_pipeline_factory_that_raises_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # an exception while importing the module was already one line; one raised by the
    # factory itself printed a traceback and exited 1
    (tmp_path / "review_factory_mod.py").write_text(
        "def make(clock=None, random=None):\n    raise ValueError('factory failed')\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _scenario(tmp_path)
    args = ["lab", "run", str(path), "--out", str(tmp_path / "o"), "--workers", "1"]
    assert main([*args, "--pipeline", "review_factory_mod:make"]) == 2
    err = capsys.readouterr().err
    _one_clean_line(err)
    assert "review_factory_mod:make" in err
    assert "ValueError: factory failed" in err


def test_scenario_duration_is_bounded(tmp_path: Path) -> None:
    # the lab keeps per-second counters: duration = 1e12 validated "ok" and then died
    # with MemoryError (or got the process OOM-killed) when run
    path = _scenario(tmp_path, SCENARIO.replace("duration = 5.0", "duration = 1e12"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "scenario.duration" in str(info.value)
    assert "<= 86400" in str(info.value)
    ok = _scenario(tmp_path, SCENARIO.replace("duration = 5.0", "duration = 86400.0"))
    assert load_scenario(ok).duration == 86400.0


def test_scenario_error_survives_pickling() -> None:
    # raised in a --workers process, it must cross back to the parent unchanged (its
    # three-argument __init__ made unpickling fail with a TypeError)
    import pickle

    err = pickle.loads(pickle.dumps(ScenarioError("f.toml", "load.rate", "expected a number")))
    assert isinstance(err, ScenarioError)
    assert (err.file, err.key, err.message) == ("f.toml", "load.rate", "expected a number")
    assert str(err) == "f.toml: load.rate: expected a number"
