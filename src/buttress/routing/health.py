"""Active health checks: a probe per endpoint on an interval with jitter, and thresholds.

`HealthCheck` is configuration plus a pure verdict machine (`HealthCheck.record`); the
schedule (`ProbeSchedule`) is pure too. Running probes is the owner's business:
`LoadBalance.start_background()` (a sync daemon thread) or
`await LoadBalance.run_background()` (an asyncio / trio / lab task). Probes never run
inside a call, so they never block one.
"""

from __future__ import annotations

import inspect
import math
import random as _random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .._core.validate import check_count, check_duration, check_optional_duration, check_ratio
from .._exceptions import ConfigurationError
from .balancers import EndpointState
from .endpoint import Endpoint

__all__ = ["HealthCheck", "ProbeSchedule", "probe_verdict"]

Probe = Callable[[Endpoint], Any]


def probe_verdict(result: Any) -> tuple[bool, float | None]:
    """Interpret a probe's return value as ``(healthy, lag_seconds_or_None)``.

    ``True``/``False`` (or any truthy/falsy value, ``None`` being unhealthy) is the verdict;
    an int or float (not a bool) means "healthy, with this replication lag in seconds".
    """
    if isinstance(result, bool) or result is None:
        return bool(result), None
    if isinstance(result, (int, float)):
        lag = float(result)
        if math.isnan(lag):
            return False, None
        return True, max(0.0, lag)
    return bool(result), None


class HealthCheck:
    """Active health checking of each endpoint.

    Args:
        probe: ``probe(endpoint)`` (sync or async) returning ``True`` for healthy, ``False``
            or ``None`` for unhealthy, or a number: healthy with that replication lag in
            seconds. Raising an `Exception` counts as unhealthy.
        interval: Seconds between probes of one endpoint (float or `timedelta`, > 0;
            default 10.0).
        jitter: Extra random delay as a share of ``interval`` (0..1; default 0.1): each wait
            is ``interval * (1 + jitter * u)`` with ``u`` uniform in [0, 1) drawn from the
            pipeline's random source, and the first probe of each endpoint happens after
            ``interval * jitter * u`` so probes do not all fire together.
        timeout: Seconds after which an async probe is cancelled and counted as a failure
            (> 0; default ``None``: the interval). A sync probe cannot be interrupted: make it
            bound itself (e.g. a connect timeout).
        healthy_threshold: Consecutive successes that mark an unhealthy endpoint healthy
            (int >= 1; default 2).
        unhealthy_threshold: Consecutive failures that mark a healthy endpoint unhealthy
            (int >= 1; default 3).
        initially_healthy: Health assumed before the first verdict (default ``True``).

    A successful probe also ends an outlier ejection early (Envoy's
    ``successful_active_health_check_uneject_host``).

    Raises:
        ConfigurationError: ``probe`` not callable or a parameter out of range.
    """

    __slots__ = (
        "healthy_threshold",
        "initially_healthy",
        "interval",
        "is_async",
        "jitter",
        "probe",
        "timeout",
        "unhealthy_threshold",
    )

    def __init__(
        self,
        probe: Probe,
        *,
        interval: float | timedelta = 10.0,
        jitter: float = 0.1,
        timeout: float | timedelta | None = None,
        healthy_threshold: int = 2,
        unhealthy_threshold: int = 3,
        initially_healthy: bool = True,
    ) -> None:
        if not callable(probe):
            raise ConfigurationError.invalid("HealthCheck", "probe", probe, "a callable")
        self.probe = probe
        self.is_async = inspect.iscoroutinefunction(probe) or inspect.iscoroutinefunction(
            getattr(probe, "__call__", None)  # noqa: B004
        )
        self.interval = check_duration("HealthCheck", "interval", interval, strictly_positive=True)
        self.jitter = check_ratio("HealthCheck", "jitter", jitter)
        timeout_s = check_optional_duration(
            "HealthCheck", "timeout", timeout, strictly_positive=True
        )
        self.timeout = self.interval if timeout_s is None else timeout_s
        self.healthy_threshold = check_count("HealthCheck", "healthy_threshold", healthy_threshold)
        self.unhealthy_threshold = check_count(
            "HealthCheck", "unhealthy_threshold", unhealthy_threshold
        )
        self.initially_healthy = bool(initially_healthy)

    def __repr__(self) -> str:
        return (
            f"HealthCheck({self.probe!r}, interval={self.interval}, jitter={self.jitter}, "
            f"healthy_threshold={self.healthy_threshold}, "
            f"unhealthy_threshold={self.unhealthy_threshold})"
        )

    def record(self, state: EndpointState, ok: bool) -> bool:
        """Count one probe result; returns the endpoint's health verdict after it."""
        if ok:
            state._hc_fail = 0
            state._hc_ok += 1
            if not state.healthy and state._hc_ok >= self.healthy_threshold:
                return True
        else:
            state._hc_ok = 0
            state._hc_fail += 1
            if state.healthy and state._hc_fail >= self.unhealthy_threshold:
                return False
        return state.healthy


class ProbeSchedule:
    """When each endpoint is probed next (pure; ``now`` and ``rng`` passed in)."""

    __slots__ = ("check", "due")

    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self.due: dict[str, float] = {}

    def next_due(self, states: list[EndpointState], now: float, rng: _random.Random) -> float:
        """The earliest due time (seconds) among ``states``, scheduling new ones."""
        due = self.due
        check = self.check
        earliest = math.inf
        names = set()
        for s in states:
            names.add(s.name)
            when = due.get(s.name)
            if when is None:
                when = due[s.name] = now + check.interval * check.jitter * rng.random()
            earliest = min(earliest, when)
        for gone in [n for n in due if n not in names]:
            del due[gone]
        return earliest

    def take_due(
        self, states: list[EndpointState], now: float, rng: _random.Random
    ) -> list[EndpointState]:
        """The endpoints due at ``now``, rescheduled for their next probe."""
        self.next_due(states, now, rng)
        out = []
        check = self.check
        for s in states:
            if self.due[s.name] <= now:
                self.due[s.name] = now + check.interval * (1.0 + check.jitter * rng.random())
                out.append(s)
        return out
