"""Client-side redundancy: endpoints, load balancing, health, outlier ejection, zones,
priority failover and read replicas.

The pipeline strategy is `LoadBalance` (also exported as ``buttress.LoadBalance``)::

    from buttress import Pipeline, Retry, Timeout
    from buttress.routing import Endpoint, LoadBalance

    lb = LoadBalance([Endpoint("http://10.0.0.1"), Endpoint("http://10.0.0.2")])
    pipeline = Pipeline(Retry(on=OSError), lb, Timeout(1.0))
    pipeline.call(lambda endpoint, path: http_get(endpoint.address + path), "/items")

The decision objects are pure (time and randomness passed in) so the lab's simulator and
the benchmarks drive the shipped logic: `Router`, the balancers (`PeakEwma`,
`LeastRequest`, `RoundRobin`, `RandomChoice`), `OutlierDetector` and `HealthCheck`.
`ReplicaSet` routes database reads to replicas and writes to the primary.
See ``docs/routing.md``.
"""

from __future__ import annotations

from .balancers import (
    BALANCERS,
    Balancer,
    EndpointState,
    LeastRequest,
    PeakEwma,
    RandomChoice,
    RoundRobin,
)
from .endpoint import Endpoint, EndpointGroup, MembershipError
from .health import HealthCheck
from .outlier import OutlierDetector
from .replica import PrimaryUnavailableError, ReplicaSet
from .router import NoEndpointAvailableError, Router
from .strategy import ENDPOINT, LoadBalance, acall_routed, call_routed, current_endpoint

__all__ = [
    "BALANCERS",
    "ENDPOINT",
    "Balancer",
    "Endpoint",
    "EndpointGroup",
    "EndpointState",
    "HealthCheck",
    "LeastRequest",
    "LoadBalance",
    "MembershipError",
    "NoEndpointAvailableError",
    "OutlierDetector",
    "PeakEwma",
    "PrimaryUnavailableError",
    "RandomChoice",
    "ReplicaSet",
    "RoundRobin",
    "Router",
    "acall_routed",
    "call_routed",
    "current_endpoint",
]
