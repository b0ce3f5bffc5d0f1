"""`Router`: the pure routing decision (membership, health, outliers, tiers, zones, balancer).

Given ``now`` and a `random.Random`, `Router.pick` chooses an `EndpointState`:

1. Ejections that have ended are re-admitted; at each outlier ``interval`` the statistical
   detectors run (see `OutlierDetector`).
2. **Priority tier**: traffic goes to the lowest-numbered tier whose healthy share (available
   endpoints / endpoints in the tier) is at least ``failover_threshold``. It moves back to a
   better tier only once that tier's healthy share has been at least ``failback_threshold``
   (>= ``failover_threshold``) for ``failback_delay`` seconds: two thresholds and a delay,
   so a tier hovering around one threshold does not make traffic flap. If no tier
   qualifies, the tier with the highest healthy share is used.
3. **Panic**: when the chosen tier's healthy share is below ``panic_threshold``, health is
   ignored in it and calls spread over all its endpoints (Envoy's panic mode: a few healthy
   hosts would collapse under the whole load, and the "unhealthy" verdict may be wrong).
4. **Zones**: with a local ``zone``, calls stay in it while the local zone's healthy share is
   at least ``zone_threshold``. Below it, the local zone keeps the share of traffic its
   healthy endpoints can carry, ``(local_healthy / all_healthy) / (local_total / all_total)``
   (Envoy's zone-aware formula with callers spread like endpoints), and the rest spills to
   the other zones' healthy endpoints, in proportion to their number.
5. **Retry avoidance**: endpoints listed in ``avoid`` (tried by earlier attempts) are
   skipped; when every candidate was tried, any other available endpoint in any tier or zone
   is used, and only when none is left an already tried one.
6. The `Balancer` chooses among the candidates.

The router is single-threaded by design (the lab drives it directly); `LoadBalance` holds
its ``lock`` around every call into it. Decisions that change state (ejections, health,
tier moves, refresh failures) are queued on ``pending`` as ``(event_class, fields)``; the
owner turns them into events and clears the list.
"""

from __future__ import annotations

import math
import random as _random
import threading
from collections.abc import Collection, Iterable, Sequence
from datetime import timedelta
from typing import Any

from .._core.validate import check_duration, check_ratio
from .._exceptions import ConfigurationError, RejectedError
from ..events import (
    EndpointEjected,
    EndpointHealthChanged,
    EndpointReadmitted,
    Event,
    PriorityChanged,
)
from .balancers import Balancer, EndpointState, make_balancer
from .endpoint import Endpoint, coerce_endpoints
from .outlier import OutlierDetector

__all__ = ["NoEndpointAvailableError", "Router"]

_INF = math.inf


class NoEndpointAvailableError(RejectedError):
    """No endpoint can take the call (every one is unhealthy or ejected and panic mode is
    off, or the group is still empty)."""


class Router:
    """Pure routing state over a list of endpoints.

    Args:
        endpoints: The initial endpoints (`Endpoint` or bare addresses), non-empty with
            unique names.
        balancer: A name (``"peak_ewma"`` (default), ``"least_request"``/``"p2c"``,
            ``"round_robin"``, ``"random"``) or a `Balancer` instance.
        outlier: An `OutlierDetector`, or ``None`` to disable passive ejection (default: an
            `OutlierDetector()` with Envoy's defaults, see there).
        zone: The caller's zone, or ``None`` (no zone preference; default).
        zone_threshold: Healthy share (0..1) of the local zone under which traffic spills to
            other zones (default 0.7, about Envoy's 1 / 1.4 over-provisioning factor).
        panic_threshold: Healthy share (0..1) of the active tier under which health is
            ignored (default 0.5, Envoy's ``healthy_panic_threshold``); 0 disables panic.
        failover_threshold: Healthy share (0..1] a tier needs to keep traffic (default 0.5).
        failback_threshold: Healthy share (0..1] a better tier needs before traffic moves
            back to it (>= ``failover_threshold``; default 0.7).
        failback_delay: Seconds the better tier must stay at ``failback_threshold`` before
            traffic moves back (float or `timedelta`, >= 0; default 10.0).
        name: Name used in error messages (default ``"router"``).

    Raises:
        ConfigurationError: An invalid parameter, an empty endpoint list or duplicate names.
    """

    def __init__(
        self,
        endpoints: Iterable[Any] = (),
        *,
        balancer: str | Balancer = "peak_ewma",
        outlier: OutlierDetector | None = OutlierDetector(),  # noqa: B008 - immutable config
        zone: str | None = None,
        zone_threshold: float = 0.7,
        panic_threshold: float = 0.5,
        failover_threshold: float = 0.5,
        failback_threshold: float = 0.7,
        failback_delay: float | timedelta = 10.0,
        name: str = "router",
        allow_empty: bool = False,
    ) -> None:
        o = "LoadBalance" if name != "router" else "Router"
        self.balancer = make_balancer(o, balancer)
        if outlier is not None and not isinstance(outlier, OutlierDetector):
            raise ConfigurationError.invalid(
                o, "outlier", outlier, "a buttress.routing.OutlierDetector or None"
            )
        self.outlier = outlier
        if zone is not None and not isinstance(zone, str):
            raise ConfigurationError.invalid(o, "zone", zone, "a str or None")
        self.zone = zone
        self.zone_threshold = check_ratio(o, "zone_threshold", zone_threshold)
        self.panic_threshold = check_ratio(o, "panic_threshold", panic_threshold)
        self.failover_threshold = check_ratio(
            o, "failover_threshold", failover_threshold, low_open=True
        )
        self.failback_threshold = check_ratio(
            o, "failback_threshold", failback_threshold, low_open=True
        )
        if self.failback_threshold < self.failover_threshold:
            raise ConfigurationError.invalid(
                o,
                "failback_threshold",
                failback_threshold,
                f"a ratio in [failover_threshold ({self.failover_threshold:g}), 1]",
            )
        self.failback_delay = check_duration(o, "failback_delay", failback_delay)
        self.name = name
        self.lock = threading.Lock()
        self.pending: list[tuple[type[Event], dict[str, Any]]] = []
        """Decisions not yet reported: ``(event class, fields without pipeline/strategy)``."""
        self.picks = 0
        """Calls routed."""
        self.cross_zone_picks = 0
        """Calls routed outside the caller's zone (0 when ``zone`` is ``None``)."""
        self.states: list[EndpointState] = []
        self._by_name: dict[str, EndpointState] = {}
        self._tiers: list[list[EndpointState]] = []
        self.tier = 0
        """Index (into the sorted distinct priorities) of the tier taking traffic."""
        self.priorities: list[int] = []
        self._failback_since: float | None = None
        self._dirty = True
        self._next_check = -_INF
        self._next_analysis: float | None = None
        self.panic = False
        """``True`` while the active tier is in panic mode."""
        self._local: list[EndpointState] = []
        self._remote: list[EndpointState] = []
        self._p_local = 1.0
        self._available: list[EndpointState] = []
        items = list(endpoints)
        if items or not allow_empty:
            self.set_endpoints(coerce_endpoints(o, items))

    # -- membership and health -------------------------------------------------------------

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Adopt a new membership; statistics of endpoints kept (same name) are preserved."""
        old = self._by_name
        states = []
        for e in endpoints:
            s = old.get(e.name)
            if s is None or s.zone != e.zone or s.priority != e.priority:
                s = EndpointState(e)
            else:
                s.endpoint = e
            states.append(s)
        self.states = states
        self._by_name = {s.name: s for s in states}
        self.priorities = sorted({s.priority for s in states})
        self._tiers = [[s for s in states if s.priority == p] for p in self.priorities]
        if self.tier >= len(self._tiers):
            self.tier = 0
        self._dirty = True

    def state(self, endpoint: Endpoint | str) -> EndpointState:
        """The state of ``endpoint`` (an `Endpoint` or its name).

        Raises:
            KeyError: Not a current member.
        """
        return self._by_name[endpoint if isinstance(endpoint, str) else endpoint.name]

    def set_health(self, state: EndpointState, healthy: bool, now: float) -> None:
        """Record an active health verdict (emits `EndpointHealthChanged` on a change)."""
        if state.healthy != healthy:
            state.healthy = healthy
            self._dirty = True
            self.pending.append(
                (EndpointHealthChanged, {"time": now, "endpoint": state.name, "healthy": healthy})
            )

    def readmit(self, state: EndpointState, now: float) -> None:
        """End ``state``'s ejection now (emits `EndpointReadmitted`)."""
        if state.ejected_until is not None:
            state.ejected_until = None
            state.consecutive_failures = 0
            self._dirty = True
            self.pending.append((EndpointReadmitted, {"time": now, "endpoint": state.name}))

    def set_lag(self, state: EndpointState, lag: float | None, max_lag: float | None) -> None:
        """Record a replication lag sample; beyond ``max_lag`` the endpoint is unavailable."""
        state.lag = lag
        ok = max_lag is None or (lag is not None and lag <= max_lag)
        if ok != state.lag_ok:
            state.lag_ok = ok
            self._dirty = True

    # -- the per-call path -----------------------------------------------------------------

    def pick(
        self,
        now: float,
        rng: _random.Random,
        avoid: Collection[EndpointState] | None = None,
    ) -> EndpointState:
        """Choose the endpoint for one call at ``now`` (seconds).

        Args:
            now: Clock reading in seconds.
            rng: Random source for the balancer and the zone spill.
            avoid: Endpoints already tried by this logical call (skipped when possible).

        Raises:
            NoEndpointAvailableError: No endpoint can be used.
        """
        if self._dirty or now >= self._next_check:
            self._plan(now)
        cands = self._local
        p = self._p_local
        if p < 1.0 and (p <= 0.0 or rng.random() >= p):
            cands = self._remote
        if avoid:
            cands = [s for s in cands if s not in avoid]
            if not cands:
                cands = [s for s in self._available if s not in avoid]
                if not cands:
                    cands = self._local if self._local else self._remote
        if not cands:
            raise NoEndpointAvailableError(
                f"{self.name}: no endpoint available "
                f"({len(self.states)} members, none healthy and admitted)",
                strategy=self.name,
            )
        s = self.balancer.pick(cands, now, rng)
        self.picks += 1
        s.picks += 1
        if s.zone != self.zone and self.zone is not None:
            self.cross_zone_picks += 1
        return s

    def start(self, state: EndpointState, now: float) -> None:
        """A call was sent to ``state``."""
        self.balancer.on_start(state, now)

    def finish(self, state: EndpointState, now: float, latency: float, failed: bool) -> None:
        """A call to ``state`` ended: feed the balancer and the outlier detector."""
        self.balancer.on_finish(state, now, latency, failed)
        outlier = self.outlier
        if outlier is not None:
            if not failed:  # OutlierDetector.record's success path, inlined
                state.successes += 1
                state.consecutive_failures = 0
                return
            ejection = outlier.record(state, failed, now, self.states)
            if ejection is not None:
                self._ejected(ejection, now)

    def cancel(self, state: EndpointState, now: float, latency: float) -> None:
        """A call to ``state`` was cancelled: release it (not counted as a failure)."""
        self.balancer.on_cancel(state, now, latency)

    @property
    def cross_zone_share(self) -> float:
        """Share (0..1) of routed calls sent outside the caller's zone (0.0 before any)."""
        return self.cross_zone_picks / self.picks if self.picks else 0.0

    def available(self) -> list[EndpointState]:
        """Endpoints currently available (healthy, admitted, within the lag bound)."""
        return [s for s in self.states if s.available]

    # -- planning (slow path: only when something changed or a timer fell due) ----------------

    def _ejected(self, ejection: tuple[EndpointState, str, float], now: float) -> None:
        state, reason, duration = ejection
        self._dirty = True
        self.pending.append(
            (
                EndpointEjected,
                {"time": now, "endpoint": state.name, "reason": reason, "duration": duration},
            )
        )

    def tick(self, now: float) -> None:
        """Apply every time-driven change due at ``now`` (also done lazily by `pick`)."""
        self._plan(now)

    def _plan(self, now: float) -> None:
        outlier = self.outlier
        if outlier is not None:
            for s in outlier.readmit_due(self.states, now):
                self._dirty = True
                self.pending.append((EndpointReadmitted, {"time": now, "endpoint": s.name}))
            if self._next_analysis is None:
                self._next_analysis = now + outlier.interval
            elif now >= self._next_analysis:
                for e in outlier.analyze(self.states, now):
                    self._ejected(e, now)
                # intervals are aligned to the first call; skip idle ones
                missed = math.floor((now - self._next_analysis) / outlier.interval) + 1
                self._next_analysis += missed * outlier.interval
        self._dirty = False
        tiers = self._tiers
        next_check = self._next_analysis if self._next_analysis is not None else _INF
        for s in self.states:
            until = s.ejected_until
            if until is not None and until < next_check:
                next_check = until
        if not tiers:
            self._local, self._remote, self._p_local, self._available = [], [], 1.0, []
            self._next_check = next_check
            return
        shares = [sum(1 for s in t if s.available) / len(t) for t in tiers]
        current = self.tier
        target = current
        if shares[current] < self.failover_threshold:
            for i, share in enumerate(shares):
                if share >= self.failover_threshold:
                    target = i
                    break
            else:
                best = max(shares)
                target = current if shares[current] == best else shares.index(best)
            self._failback_since = None
        else:
            better = next((i for i in range(current) if shares[i] >= self.failback_threshold), None)
            if better is None:
                self._failback_since = None
            else:
                since = self._failback_since
                if since is None:
                    since = self._failback_since = now
                due = since + self.failback_delay
                if now >= due:
                    target = better
                    self._failback_since = None
                elif due < next_check:
                    next_check = due
        if target != current:
            self.pending.append(
                (
                    PriorityChanged,
                    {
                        "time": now,
                        "from_priority": self.priorities[current],
                        "to_priority": self.priorities[target],
                        "healthy_share": shares[current],
                    },
                )
            )
            self.tier = target
        tier = tiers[self.tier]
        self.panic = shares[self.tier] < self.panic_threshold
        avail = list(tier) if self.panic else [s for s in tier if s.available]
        self._available = [s for s in self.states if s.available] or avail
        zone = self.zone
        local = [s for s in avail if s.zone == zone] if zone is not None else avail
        if zone is None or (not local and not any(s.zone == zone for s in tier)):
            self._local, self._remote, self._p_local = avail, [], 1.0
        else:
            remote = [s for s in avail if s.zone != zone]
            local_total = sum(1 for s in tier if s.zone == zone)
            share = len(local) / local_total
            if share >= self.zone_threshold or not remote:
                p_local = 1.0
            elif not local:
                p_local = 0.0
            else:
                p_local = min(1.0, (len(local) / len(avail)) / (local_total / len(tier)))
            self._local, self._remote, self._p_local = local, remote, p_local
        self._next_check = next_check
