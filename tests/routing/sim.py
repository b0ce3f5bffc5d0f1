"""A small deterministic discrete-event simulation of S10 (SCENARIOS.md) over the real
`Router` and balancers, in virtual time.

Model (Linkerd's "Beyond Round Robin" set-up): open-loop Poisson arrivals at ``rps``;
backends with no queueing whose latency is normal(0.167 s, 0.005 s) (the replayed
production distribution's median and sd); a client timeout of 1 s placed *inside* the load
balancer, so a timed-out call ends at 1 s and counts as a failure of its endpoint (the
server's work is not cancelled, and it does not matter here: no queueing). Zones add a
round trip of 0.5 ms in-zone and 2 ms across zones. Used by ``tests/routing/test_outcomes.py``
and ``bench/routing_outcomes.py``; the lab will replace it with real scenarios.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from buttress.routing import Endpoint, EndpointState, OutlierDetector, Router

MEDIAN = 0.167
SD = 0.005
TIMEOUT = 1.0

# fault(endpoint_name, zone, now) -> None (healthy), ("slow", seconds) or ("error", seconds)
Fault = Callable[[str, "str | None", float], "tuple[str, float] | None"]


@dataclass
class Result:
    requests: int = 0
    failures: int = 0
    same_zone: int = 0
    zoned: int = 0
    #: (time, failed, cross_zone) of every request, for windowed measures
    log: list[tuple[float, bool, bool]] = field(default_factory=list)
    ejections: list[tuple[float, str]] = field(default_factory=list)

    @property
    def success(self) -> float:
        return 1.0 - self.failures / self.requests

    def success_between(self, start: float, end: float) -> float:
        window = [f for t, f, _ in self.log if start <= t < end]
        return 1.0 - sum(window) / len(window)

    def cross_zone_share_between(self, start: float, end: float) -> float:
        window = [c for t, _, c in self.log if start <= t < end]
        return sum(window) / len(window)


def run(
    make_router: Callable[[list[Endpoint], str | None], Router],
    endpoints: list[Endpoint],
    fault: Fault,
    *,
    client_zones: list[str | None] | None = None,
    rps: float = 1000.0,
    duration: float = 60.0,
    seed: int = 1,
    timeout: float = TIMEOUT,
) -> Result:
    """Simulate ``duration`` seconds; one router per client zone, arrivals spread evenly."""
    rng = random.Random(seed)
    zones = client_zones or [None]
    routers = [make_router(endpoints, z) for z in zones]
    res = Result()
    heap: list[tuple[float, int, int, Any]] = []
    seq = 0
    t = 0.0
    # pre-generate arrivals lazily: one pending arrival at a time
    heapq.heappush(heap, (rng.expovariate(rps), seq, 0, None))
    while heap:
        now, _, kind, data = heapq.heappop(heap)
        if kind == 0:  # arrival
            if now >= duration:
                continue
            i = int(rng.random() * len(routers))
            router = routers[i]
            czone = zones[i]
            state = router.pick(now, rng)
            router.start(state, now)
            for cls, fields in router.pending:
                if cls.__name__ == "EndpointEjected":
                    res.ejections.append((now, fields["endpoint"]))
            router.pending.clear()
            rtt = 0.0
            if czone is not None:
                rtt = 0.0005 if state.zone == czone else 0.002
            f = fault(state.name, state.zone, now)
            if f is None:
                latency = max(0.0, rng.gauss(MEDIAN, SD)) + rtt
                failed = latency > timeout
            elif f[0] == "slow":
                latency = f[1] + rtt
                failed = latency > timeout
            else:  # error
                latency = f[1] + rtt
                failed = True
            end = now + min(latency, timeout)
            seq += 1
            heapq.heappush(heap, (end, seq, 1, (router, state, now, failed)))
            cross = czone is not None and state.zone != czone
            res.requests += 1
            res.failures += failed
            res.log.append((now, failed, cross))
            if czone is not None:
                res.zoned += 1
                res.same_zone += not cross
            seq += 1
            heapq.heappush(heap, (now + rng.expovariate(rps), seq, 0, None))
        else:
            router, state, start, failed = data
            router.finish(state, now, now - start, failed)
            for cls, fields in router.pending:
                if cls.__name__ == "EndpointEjected":
                    res.ejections.append((now, fields["endpoint"]))
            router.pending.clear()
        t = now
    assert t >= 0
    return res


def s10_endpoints() -> list[Endpoint]:
    return [Endpoint(f"b{i}") for i in range(11)]


def zone_endpoints() -> list[Endpoint]:
    return [Endpoint(f"{z}{i}", zone=z) for z in "abc" for i in range(4)]


def slow_b0(name: str, zone: str | None, now: float) -> tuple[str, float] | None:
    """S10 base case: b0 pinned at 2 s from t=15 s for 30 s."""
    return ("slow", 2.0) if name == "b0" and 15.0 <= now < 45.0 else None


def failing_b0(name: str, zone: str | None, now: float) -> tuple[str, float] | None:
    """Black hole that looks fast: b0 answers every call with an error in 1 ms."""
    return ("error", 0.001) if name == "b0" and 15.0 <= now < 45.0 else None


def zone_c_down(name: str, zone: str | None, now: float) -> tuple[str, float] | None:
    """Zone c fails (connection errors in 1 ms) from t=10 s for 60 s."""
    return ("error", 0.001) if zone == "c" and 10.0 <= now < 70.0 else None


def router_factory(balancer: str, outlier: OutlierDetector | None = None, **kw: Any) -> Any:
    def make(endpoints: list[Endpoint], zone: str | None) -> Router:
        return Router(endpoints, balancer=balancer, outlier=outlier, zone=zone, **kw)

    return make


def default_factory(endpoints: list[Endpoint], zone: str | None) -> Router:
    """`LoadBalance`'s defaults: PeakEwma + OutlierDetector()."""
    return Router(endpoints, zone=zone)


__all__ = [
    "EndpointState",
    "Result",
    "default_factory",
    "failing_b0",
    "router_factory",
    "run",
    "s10_endpoints",
    "slow_b0",
    "zone_c_down",
    "zone_endpoints",
]
