"""Defects found in review of the lab: livelocks, Ctrl-C, load window and validation gaps."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from buttress._cli import main
from buttress.lab import ScenarioError, load_scenario
from buttress.lab.sim import Scheduler, SimulationStalled, sleep

CLOSED = """
[scenario]
name = "c"
duration = 20.0
seeds = 1
[dependency]
workers = 4
service = 0.01
[load]
kind = "closed"
clients = 2
[[faults]]
kind = "outage"
start = 5.0
duration = 3.0
[pipelines.nr]
baseline = "no-retry"
"""

OPEN = """
[scenario]
name = "o"
duration = 20.0
seeds = 1
[dependency]
workers = 4
service = 0.01
[load]
rate = 50.0
[[faults]]
kind = "outage"
start = 5.0
duration = 3.0
[pipelines.nr]
baseline = "no-retry"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _bad(tmp_path: Path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(_write(tmp_path, text))
    assert str(tmp_path / "s.toml") in str(info.value)
    return info.value


# -- 1. livelocks and Ctrl-C ------------------------------------------------------------------


def test_scheduler_stops_a_task_that_reschedules_itself_at_the_same_instant() -> None:
    sched = Scheduler()

    async def spin() -> None:
        while True:
            await sleep(0.0)

    sched.spawn(spin())
    with pytest.raises(SimulationStalled) as info:
        sched.run(until=10.0)
    assert "virtual clock" in str(info.value)
    assert sched.now == 0.0
    sched.close()


def test_scheduler_guard_does_not_trip_on_many_events_that_advance_time() -> None:
    sched = Scheduler()
    count = 0

    async def tick() -> None:
        nonlocal count
        for _ in range(50_000):
            await sleep(0.0)  # a zero sleep, then time moves on: progress
            await sleep(1e-6)
            count += 1

    sched.spawn(tick())
    sched.run()
    assert count == 50_000


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("", ""),  # outage (fast), rejection_cost 0
        (
            # the outage costs time, but the open breaker then refuses calls instantly
            'service = 0.01\n[load]\nkind = "closed"',
            'service = 0.01\nrejection_cost = 0.001\n[load]\nkind = "closed"',
        ),
    ],
)
def test_closed_loop_failing_in_zero_time_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str
) -> None:
    text = CLOSED.replace(old, new) if old else CLOSED
    if old:
        text = text.replace(
            'baseline = "no-retry"',
            "strategies = [{ circuit_breaker = "
            "{ consecutive_failures = 5, break_duration = 30.0 } }]",
        )
    path = _write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["lab", "run", str(path), "--workers", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert f"{path}: load.think_time:" in err
    assert "think_time > 0" in err and "rejection_cost > 0" in err
    assert not out.exists()  # created for the run, empty, removed


def test_closed_loop_with_think_time_or_rejection_cost_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for old, new in [
        ("clients = 2", "clients = 2\nthink_time = 0.01"),
        ("service = 0.01", "service = 0.01\nrejection_cost = 0.001"),
    ]:
        path = _write(tmp_path, CLOSED.replace(old, new))
        out = tmp_path / "out"
        argv = ["lab", "run", str(path), "--workers", "1", "--out", str(out), "--no-report"]
        assert main(argv) == 0
        assert (out / "results.json").exists()
    capsys.readouterr()


def test_ctrl_c_prints_one_line_exits_130_and_removes_the_empty_out_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import buttress.lab.runner as runner

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        kwargs["on_start"]()
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_scenario", interrupted)
    path = _write(tmp_path, OPEN)
    out = tmp_path / "a" / "out"
    assert main(["lab", "run", str(path), "--workers", "1", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err
    assert "Traceback" not in err
    assert not out.exists()
    # an existing directory the user named is never removed
    out.mkdir(parents=True)
    assert main(["lab", "run", str(path), "--workers", "1", "--out", str(out)]) == 130
    assert out.is_dir()


# -- 2. the load window ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ("start = 15.0\nstop = 5.0", "> load.start (15)"),
        ("start = 5.0\nstop = 5.0", "> load.start (5)"),
        ("stop = 25.0", "<= scenario.duration (20)"),
        ("start = 20.0", "< scenario.duration (20)"),
    ],
)
def test_load_window_must_be_inside_the_run(tmp_path: Path, new: str, expected: str) -> None:
    err = _bad(tmp_path, OPEN.replace("rate = 50.0", f"rate = 50.0\n{new}"))
    assert err.key in ("load.stop", "load.start")
    assert expected in err.message
    if "stop" in new:
        assert err.key == "load.stop"


# -- 3. validation gaps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "old", "new", "key", "expected"),
    [
        (OPEN, "start = 5.0", "start = 20.0", "faults[0].start", "< scenario.duration (20)"),
        (OPEN, "start = 5.0", "start = 25.0", "faults[0].start", "< scenario.duration"),
        (
            OPEN,
            "service = 0.01",
            'service = { distribution = "exponential", mean = 0.1, sd = 3 }',
            "dependency.service.sd",
            "unknown key for distribution 'exponential'; expected one of: distribution, mean",
        ),
        (
            OPEN,
            "service = 0.01",
            'network = { distribution = "constant", value = 0.001, mean = 2 }',
            "dependency.network.mean",
            "unknown key",
        ),
        (CLOSED, "clients = 2", "clients = 2\nrate = 5.0", "load.rate", "only for kind = 'open'"),
        (OPEN, "rate = 50.0", "rate = 50.0\nzipf_exponent = 1.2", "load.zipf_exponent", "zipf"),
        (
            OPEN,
            "workers = 4",
            'workers = 4\nzones = ["a", "b", "a"]',
            "dependency.zones[2]",
            "duplicate zone 'a'",
        ),
        (
            OPEN,
            'baseline = "no-retry"',
            'python = "nosuchmod_lab_review:x"',
            "pipelines.nr.python",
            "cannot find module",
        ),
    ],
)
def test_validation_gaps(
    tmp_path: Path, text: str, old: str, new: str, key: str, expected: str
) -> None:
    assert old in text
    err = _bad(tmp_path, text.replace(old, new))
    assert err.key == key
    assert expected in err.message


def test_unknown_strategy_lists_only_usable_strategies(tmp_path: Path) -> None:
    import buttress
    from buttress.lab.pipelines import STRATEGY_NAMES

    err = _bad(tmp_path, OPEN.replace('baseline = "no-retry"', "strategies = [{ retyr = {} }]"))
    assert err.key == "pipelines.nr.strategies[0].retyr"
    listed = err.message.split("expected one of: ")[1].split(", ")
    assert "retry" in listed and "load_balance" in listed and "inject_latency" in listed
    for name in listed:
        assert hasattr(buttress, STRATEGY_NAMES[name]), name
    if not hasattr(buttress, "AdaptiveConcurrency"):
        assert "adaptive_concurrency" not in listed
        err = _bad(
            tmp_path,
            OPEN.replace('baseline = "no-retry"', "strategies = [{ adaptive_concurrency = {} }]"),
        )
        assert "not available" in err.message


# -- 4. recovery that cannot be judged --------------------------------------------------------


def test_recovery_not_judgeable_is_reported_as_na(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from buttress.lab.report import summary_rows
    from buttress.lab.runner import run_scenario

    # the fault ends at 15 s; recovery_hold 20 s cannot fit in the 20 s run
    sc = load_scenario(
        _write(
            tmp_path, OPEN.replace("start = 5.0\nduration = 3.0", "start = 5.0\nduration = 10.0")
        )
    )
    res = run_scenario(sc, workers=1)
    f = res["pipelines"][0]["faults"][0]
    assert f["recovery_judged"] is False
    header, rows = summary_rows(res, bands=False)
    cell = rows[0][header.index("fault recovered")]
    assert cell.startswith("n/a")
    # a judgeable one still says k/n
    sc = load_scenario(
        _write(tmp_path, OPEN.replace("seeds = 1", "seeds = 1\nrecovery_hold = 4.0"))
    )
    res = run_scenario(sc, workers=1)
    assert res["pipelines"][0]["faults"][0]["recovery_judged"] is True
    header, rows = summary_rows(res, bands=False)
    assert rows[0][header.index("fault recovered")] == "1/1"
