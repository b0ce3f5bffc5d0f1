"""OutlierDetector: Envoy semantics, exact in time."""

from __future__ import annotations

import pytest

from buttress import ConfigurationError
from buttress.routing import Endpoint, EndpointState, OutlierDetector


def states(n: int) -> list[EndpointState]:
    return [EndpointState(Endpoint(f"e{i}")) for i in range(n)]


def test_consecutive_failures_eject_and_time_grows_with_repeats() -> None:
    d = OutlierDetector(consecutive_failures=3, base_ejection_time=30, max_ejection_time=75)
    s = states(4)
    assert d.record(s[0], True, 0.0, s) is None
    assert d.record(s[0], True, 0.0, s) is None
    d.record(s[0], False, 0.0, s)  # a success resets the streak
    assert d.record(s[0], True, 1.0, s) is None
    assert d.record(s[0], True, 1.0, s) is None
    ej = d.record(s[0], True, 1.0, s)
    assert ej == (s[0], "consecutive_failures", 30.0)
    assert s[0].ejected_until == 31.0
    assert d.readmit_due(s, 30.9) == []
    assert d.readmit_due(s, 31.0) == [s[0]]
    for _ in range(3):
        ej = d.record(s[0], True, 32.0, s)
    assert ej is not None
    assert ej[2] == 60.0
    d.readmit_due(s, 92.0)
    for _ in range(3):
        ej = d.record(s[0], True, 93.0, s)
    assert ej is not None
    assert ej[2] == 75.0


def test_multiplier_decays_per_healthy_interval() -> None:
    d = OutlierDetector(consecutive_failures=1, base_ejection_time=10, interval=10)
    s = states(4)
    d.record(s[0], True, 0.0, s)
    assert s[0].ejections == 1
    d.readmit_due(s, 10.0)
    d.analyze(s, 10.0)
    assert s[0].ejections == 0
    assert d.record(s[0], True, 11.0, s) == (s[0], "consecutive_failures", 10.0)


def test_max_ejection_ratio_caps_ejections_at_least_one() -> None:
    d = OutlierDetector(consecutive_failures=1, max_ejection_ratio=0.1)
    s = states(5)
    assert d.record(s[0], True, 0.0, s) is not None
    assert d.record(s[1], True, 0.0, s) is None  # 10 % of 5 -> at least one, already used
    d2 = OutlierDetector(consecutive_failures=1, max_ejection_ratio=0.5)
    s2 = states(4)
    assert [d2.record(x, True, 0.0, s2) is not None for x in s2] == [True, True, False, False]


def test_success_rate_outlier() -> None:
    d = OutlierDetector(consecutive_failures=None, failure_ratio_threshold=None)
    s = states(6)
    for x in s:
        x.successes = 200
    s[0].successes, s[0].failures = 120, 80  # 60 % vs 100 %
    out = d.analyze(s, 10.0)
    assert [(e[0].name, e[1]) for e in out] == [("e0", "success_rate")]
    assert all(x.successes == 0 and x.failures == 0 for x in s)


def test_success_rate_needs_minimum_hosts_and_volume() -> None:
    d = OutlierDetector(consecutive_failures=None, failure_ratio_threshold=None)
    s = states(4)  # fewer than 5 hosts
    for x in s:
        x.successes = 200
    s[0].successes, s[0].failures = 0, 200
    assert d.analyze(s, 10.0) == []
    s = states(6)
    for x in s:
        x.successes = 99  # below volume 100
    s[0].failures = 99
    assert d.analyze(s, 10.0) == []


def test_failure_ratio_outlier() -> None:
    d = OutlierDetector(consecutive_failures=None, success_rate_minimum_hosts=None)
    s = states(5)
    for x in s:
        x.successes = 50
    s[2].successes, s[2].failures = 5, 45  # 90 % failures >= 85 %
    out = d.analyze(s, 10.0)
    assert [(e[0].name, e[1]) for e in out] == [("e2", "failure_percentage")]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"interval": 0}, "interval"),
        ({"base_ejection_time": -1}, "base_ejection_time"),
        ({"base_ejection_time": 30, "max_ejection_time": 10}, "max_ejection_time"),
        ({"max_ejection_ratio": 1.5}, "max_ejection_ratio"),
        ({"success_rate_stdev_factor": 0}, "success_rate_stdev_factor"),
        ({"failure_ratio_threshold": 0}, "failure_ratio_threshold"),
        ({"failure_ratio_threshold": 2}, "failure_ratio_threshold"),
        ({"success_rate_request_volume": 0}, "success_rate_request_volume"),
    ],
)
def test_bad_config(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        OutlierDetector(**kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == param
