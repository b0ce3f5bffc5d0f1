"""Passive outlier detection with Envoy's semantics, as a pure object (time passed in).

Three detectors, all optional:

* **consecutive failures**: the N-th failure in a row ejects the endpoint at once;
* **success rate** (statistical outlier): at the end of each ``interval``, among endpoints
  with at least ``success_rate_request_volume`` calls in the interval, and only when at
  least ``success_rate_minimum_hosts`` qualify, eject those whose success rate is below
  ``mean - success_rate_stdev_factor * stdev``;
* **failure ratio** (Envoy's "failure percentage"): at the end of each interval, among
  endpoints with at least ``failure_ratio_request_volume`` calls, when at least
  ``failure_ratio_minimum_hosts`` qualify, eject those whose failure ratio is at or above
  ``failure_ratio_threshold``.

An ejection lasts ``base_ejection_time * multiplier`` (capped at ``max_ejection_time``); the
multiplier grows by one per ejection and shrinks by one at each interval end the endpoint
spends admitted, so a host that keeps failing stays out longer and longer. At most
``max_ejection_ratio`` of the endpoints (at least one) are ejected at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .._core.validate import check_count, check_duration, check_ratio
from .._exceptions import ConfigurationError
from .balancers import EndpointState

__all__ = ["Ejection", "OutlierDetector"]

Ejection = tuple[EndpointState, str, float]
"""``(state, reason, duration_seconds)``; reason is ``"consecutive_failures"``,
``"success_rate"`` or ``"failure_percentage"`` (the event vocabulary's names)."""


def _optional_count(owner: str, name: str, value: Any) -> int | None:
    return None if value is None else check_count(owner, name, value)


class OutlierDetector:
    """Envoy-style passive outlier ejection (pure: every method takes ``now``).

    Args:
        consecutive_failures: Failures in a row that eject an endpoint (int >= 1; default 5,
            Envoy's ``consecutive_5xx``); ``None`` disables this detector.
        interval: Seconds between analyses of the statistical detectors and of multiplier
            decay (float or `timedelta`, > 0; default 10.0).
        base_ejection_time: Seconds of the first ejection (> 0; default 30.0).
        max_ejection_time: Upper bound in seconds of an ejection (>= ``base_ejection_time``;
            default 300.0).
        max_ejection_ratio: Largest share of the endpoints ejected at once, 0..1 (default
            0.5; at least one endpoint can always be ejected). Envoy's
            ``max_ejection_percent`` is 100 times this; its default is 10 %, which is meant
            for large proxied clusters: a client with 3 to 12 endpoints needs more to
            survive a zone failure. Above ``1 - panic_threshold`` the router's panic mode
            takes over anyway.
        success_rate_minimum_hosts: Endpoints with enough volume needed for the success-rate
            detector to run (int >= 1; default 5); ``None`` disables it.
        success_rate_request_volume: Calls in the interval for an endpoint to count (int >=
            1; default 100).
        success_rate_stdev_factor: Ejection threshold in standard deviations below the mean
            (> 0; default 1.9, Envoy's 1900 / 1000).
        failure_ratio_threshold: Failure ratio (0..1) at or above which an endpoint is
            ejected (default 0.85); ``None`` disables the failure-ratio detector.
        failure_ratio_minimum_hosts: Endpoints with enough volume for it to run (default 5).
        failure_ratio_request_volume: Calls in the interval for an endpoint to count
            (default 50).

    Raises:
        ConfigurationError: A parameter is out of range.
    """

    __slots__ = (
        "base_ejection_time",
        "consecutive_failures",
        "failure_ratio_minimum_hosts",
        "failure_ratio_request_volume",
        "failure_ratio_threshold",
        "interval",
        "max_ejection_ratio",
        "max_ejection_time",
        "success_rate_minimum_hosts",
        "success_rate_request_volume",
        "success_rate_stdev_factor",
    )

    def __init__(
        self,
        *,
        consecutive_failures: int | None = 5,
        interval: float | timedelta = 10.0,
        base_ejection_time: float | timedelta = 30.0,
        max_ejection_time: float | timedelta = 300.0,
        max_ejection_ratio: float = 0.5,
        success_rate_minimum_hosts: int | None = 5,
        success_rate_request_volume: int = 100,
        success_rate_stdev_factor: float = 1.9,
        failure_ratio_threshold: float | None = 0.85,
        failure_ratio_minimum_hosts: int = 5,
        failure_ratio_request_volume: int = 50,
    ) -> None:
        o = "OutlierDetector"
        self.consecutive_failures = _optional_count(o, "consecutive_failures", consecutive_failures)
        self.interval = check_duration(o, "interval", interval, strictly_positive=True)
        self.base_ejection_time = check_duration(
            o, "base_ejection_time", base_ejection_time, strictly_positive=True
        )
        self.max_ejection_time = check_duration(o, "max_ejection_time", max_ejection_time)
        if self.max_ejection_time < self.base_ejection_time:
            raise ConfigurationError.invalid(
                o,
                "max_ejection_time",
                max_ejection_time,
                f"a duration >= base_ejection_time ({self.base_ejection_time:g}s)",
            )
        self.max_ejection_ratio = check_ratio(o, "max_ejection_ratio", max_ejection_ratio)
        self.success_rate_minimum_hosts = _optional_count(
            o, "success_rate_minimum_hosts", success_rate_minimum_hosts
        )
        self.success_rate_request_volume = check_count(
            o, "success_rate_request_volume", success_rate_request_volume
        )
        if (
            isinstance(success_rate_stdev_factor, bool)
            or not isinstance(success_rate_stdev_factor, (int, float))
            or not success_rate_stdev_factor > 0
            or math.isinf(success_rate_stdev_factor)
        ):
            raise ConfigurationError.invalid(
                o, "success_rate_stdev_factor", success_rate_stdev_factor, "a finite number > 0"
            )
        self.success_rate_stdev_factor = float(success_rate_stdev_factor)
        self.failure_ratio_threshold = (
            None
            if failure_ratio_threshold is None
            else check_ratio(o, "failure_ratio_threshold", failure_ratio_threshold, low_open=True)
        )
        self.failure_ratio_minimum_hosts = check_count(
            o, "failure_ratio_minimum_hosts", failure_ratio_minimum_hosts
        )
        self.failure_ratio_request_volume = check_count(
            o, "failure_ratio_request_volume", failure_ratio_request_volume
        )

    def __repr__(self) -> str:
        return (
            f"OutlierDetector(consecutive_failures={self.consecutive_failures}, "
            f"interval={self.interval}, base_ejection_time={self.base_ejection_time}, "
            f"max_ejection_ratio={self.max_ejection_ratio})"
        )

    # -- decisions -------------------------------------------------------------------------

    def ejection_time(self, multiplier: int) -> float:
        """Seconds an ejection lasts for the given multiplier (>= 1)."""
        return min(self.base_ejection_time * max(1, multiplier), self.max_ejection_time)

    def can_eject(self, states: Sequence[EndpointState]) -> bool:
        """``True`` when one more ejection stays within ``max_ejection_ratio``."""
        ejected = sum(1 for s in states if s.ejected_until is not None)
        limit = max(1, int(self.max_ejection_ratio * len(states) + 1e-9))
        return ejected < limit

    def eject(self, state: EndpointState, now: float) -> float:
        """Eject ``state`` at ``now`` (no checks); returns the duration in seconds."""
        state.ejections += 1
        duration = self.ejection_time(state.ejections)
        state.ejected_until = now + duration
        state.consecutive_failures = 0
        return duration

    def record(
        self, state: EndpointState, failed: bool, now: float, states: Sequence[EndpointState]
    ) -> Ejection | None:
        """Count one call's outcome; returns an ejection when it triggers one.

        Args:
            state: The endpoint the call went to.
            failed: Whether the call failed.
            now: Clock reading in seconds.
            states: Every endpoint of the group (for the ejection cap).
        """
        if not failed:
            state.successes += 1
            state.consecutive_failures = 0
            return None
        state.failures += 1
        state.consecutive_failures += 1
        limit = self.consecutive_failures
        if (
            limit is not None
            and state.consecutive_failures >= limit
            and state.ejected_until is None
            and self.can_eject(states)
        ):
            return (state, "consecutive_failures", self.eject(state, now))
        return None

    def readmit_due(self, states: Sequence[EndpointState], now: float) -> list[EndpointState]:
        """Re-admit every endpoint whose ejection has ended by ``now``; returns them."""
        back = []
        for s in states:
            until = s.ejected_until
            if until is not None and until <= now:
                s.ejected_until = None
                s.consecutive_failures = 0
                back.append(s)
        return back

    def analyze(self, states: Sequence[EndpointState], now: float) -> list[Ejection]:
        """End an interval at ``now``: run the statistical detectors, decay multipliers,
        reset the interval counters. Returns the ejections made."""
        out: list[Ejection] = []
        admitted = [s for s in states if s.ejected_until is None]
        minimum = self.success_rate_minimum_hosts
        if minimum is not None:
            volume = self.success_rate_request_volume
            qualified = [s for s in admitted if s.successes + s.failures >= volume]
            if len(qualified) >= minimum:
                rates = [s.successes / (s.successes + s.failures) for s in qualified]
                mean = sum(rates) / len(rates)
                var = sum((r - mean) ** 2 for r in rates) / len(rates)
                floor = mean - self.success_rate_stdev_factor * math.sqrt(var)
                for s, rate in sorted(zip(qualified, rates, strict=True), key=lambda x: x[1]):
                    if rate < floor and s.ejected_until is None and self.can_eject(states):
                        out.append((s, "success_rate", self.eject(s, now)))
        threshold = self.failure_ratio_threshold
        if threshold is not None:
            volume = self.failure_ratio_request_volume
            qualified = [
                s
                for s in admitted
                if s.ejected_until is None and s.successes + s.failures >= volume
            ]
            if len(qualified) >= self.failure_ratio_minimum_hosts:
                for s in qualified:
                    ratio = s.failures / (s.successes + s.failures)
                    if ratio >= threshold and self.can_eject(states):
                        out.append((s, "failure_percentage", self.eject(s, now)))
        ejected_now = {id(e[0]) for e in out}
        for s in states:
            if s.ejected_until is None and s.ejections > 0 and id(s) not in ejected_now:
                s.ejections -= 1
            s.successes = 0
            s.failures = 0
        return out
