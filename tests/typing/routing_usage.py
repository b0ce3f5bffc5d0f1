"""Type-checked use of the routing API (checked by mypy --strict)."""

from __future__ import annotations

import random

from buttress import LoadBalance, Pipeline, Retry, Timeout
from buttress.routing import (
    Endpoint,
    EndpointGroup,
    EndpointState,
    HealthCheck,
    LeastRequest,
    OutlierDetector,
    PeakEwma,
    ReplicaSet,
    Router,
    call_routed,
    current_endpoint,
)

lb = LoadBalance(
    EndpointGroup([Endpoint(("10.0.0.1", 80), zone="a"), Endpoint(("10.0.0.2", 80), zone="b")]),
    balancer=PeakEwma(decay=10.0),
    outlier=OutlierDetector(consecutive_failures=5),
    health=HealthCheck(lambda e: True, interval=5.0),
    zone="a",
)
api = Pipeline(Retry(on=OSError), lb, Timeout(1.0))


def fetch(endpoint: Endpoint, path: str) -> str:
    host, port = endpoint.address
    return f"http://{host}:{port}{path}"


url: str = call_routed(api, fetch, "/x")
here: Endpoint | None = current_endpoint()

router = Router(["a", "b"], balancer=LeastRequest(), zone=None)
state: EndpointState = router.pick(0.0, random.Random(1))
router.start(state, 0.0)
router.finish(state, 0.1, 0.1, False)
share: float = router.cross_zone_share

db = ReplicaSet("dsn-primary", ["dsn-replica"], max_lag=5.0)
count: int = db.read(lambda e: 1)
