"""ReplicaSet with fake clients: roles, failover, fail-fast writes, lag, read-your-writes."""

from __future__ import annotations

import asyncio

import pytest

from buttress import ConfigurationError, Pipeline, Retry, scope
from buttress.events import EndpointHealthChanged
from buttress.routing import (
    Endpoint,
    HealthCheck,
    NoEndpointAvailableError,
    PrimaryUnavailableError,
    ReplicaSet,
)
from buttress.testing import ManualClock, RecordingListener


class FakeDb:
    def __init__(self) -> None:
        self.up = {"primary": True, "r1": True, "r2": True}
        self.lag = {"r1": 0.0, "r2": 0.0}

    def query(self, e: Endpoint) -> str:
        if not self.up[e.name]:
            raise ConnectionError(e.name)
        return e.name

    def probe(self, e: Endpoint) -> bool | float:
        if not self.up[e.name]:
            return False
        return self.lag.get(e.name, True)


def make(db: FakeDb, clock: ManualClock, **kw: object) -> ReplicaSet:
    return ReplicaSet(
        "primary",
        ["r1", "r2"],
        health=HealthCheck(
            db.probe, interval=1, jitter=0, unhealthy_threshold=1, healthy_threshold=1
        ),
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def test_reads_to_replicas_writes_to_primary(clock: ManualClock) -> None:
    db = FakeDb()
    rs = make(db, clock)
    assert {rs.read(db.query) for _ in range(20)} == {"r1", "r2"}
    assert rs.write(db.query) == "primary"


def test_reads_fail_over_to_primary_and_back(clock: ManualClock) -> None:
    db = FakeDb()
    rs = make(db, clock)
    db.up["r1"] = db.up["r2"] = False
    rs.maintain()
    assert {rs.read(db.query) for _ in range(5)} == {"primary"}
    db.up["r2"] = True
    clock.advance(1.0)
    rs.maintain()
    assert {rs.read(db.query) for _ in range(5)} == {"r2"}


def test_passive_failover_with_retry(clock: ManualClock) -> None:
    db = FakeDb()
    rs = make(db, clock)
    reads = Pipeline(Retry(on=ConnectionError, attempts=3, backoff=0, budget=None), rs.reads)
    db.up["r1"] = db.up["r2"] = False
    # without any health check: each call tries a replica, then the other, then the primary
    assert {reads.call(db.query) for _ in range(6)} == {"primary"}
    # after 3 failures each replica is ejected: reads go straight to the primary
    assert all(s.ejected_until is not None for s in rs._lb.router.states[:2])


def test_writes_fail_fast_while_primary_down(clock: ManualClock) -> None:
    db = FakeDb()
    events = RecordingListener()
    rs = make(db, clock, listeners=[events])
    db.up["primary"] = False
    rs.maintain()
    assert ("primary", False) in [
        (e.endpoint, e.healthy) for e in events.of_type(EndpointHealthChanged)
    ]
    called = []
    with pytest.raises(PrimaryUnavailableError, match="write not attempted") as info:
        rs.write(lambda e: called.append(e))
    assert called == []
    assert isinstance(info.value, NoEndpointAvailableError)
    assert {rs.read(db.query) for _ in range(10)} == {"r1", "r2"}  # reads continue
    db.up["primary"] = True
    clock.advance(1.0)
    rs.maintain()
    assert rs.write(db.query) == "primary"


def test_passive_primary_ejection_gives_retry_after(clock: ManualClock) -> None:
    db = FakeDb()
    rs = make(db, clock)
    db.up["primary"] = False
    for _ in range(3):
        with pytest.raises(ConnectionError):
            rs.write(db.query)
    with pytest.raises(PrimaryUnavailableError) as info:
        rs.write(db.query)
    assert info.value.retry_after == 10.0
    clock.advance(10.0)
    db.up["primary"] = True
    assert rs.write(db.query) == "primary"  # re-admitted after the ejection


def test_lag_bound(clock: ManualClock) -> None:
    db = FakeDb()
    rs = make(db, clock, max_lag=2.0)
    db.lag["r1"] = 5.0
    rs.maintain()
    assert {rs.read(db.query) for _ in range(10)} == {"r2"}
    db.lag["r2"] = 3.0
    clock.advance(1.0)
    rs.maintain()
    assert {rs.read(db.query) for _ in range(5)} == {"primary"}
    assert rs.stats()["endpoints"]["r1"]["lag"] == 5.0


def test_read_your_writes_within_scope(clock: ManualClock) -> None:
    db = FakeDb()
    rs = make(db, clock, read_your_writes=5.0)
    with scope():
        assert rs.read(db.query) != "primary"
        rs.write(db.query)
        assert rs.read(db.query) == "primary"
        clock.advance(5.0)
        assert rs.read(db.query) != "primary"
    with scope():  # another session is not affected
        rs.write(db.query)
    with scope():
        assert rs.read(db.query) != "primary"


def test_async_roles() -> None:
    db = FakeDb()
    rs = ReplicaSet("primary", ["r1", "r2"])

    async def q(e: Endpoint) -> str:
        await asyncio.sleep(0)
        return db.query(e)

    async def main() -> tuple[str, str]:
        return await rs.aread(q), await rs.awrite(q)

    r, w = asyncio.run(main())
    assert r in {"r1", "r2"}
    assert w == "primary"


def test_bad_config() -> None:
    with pytest.raises(ConfigurationError):
        ReplicaSet("p", [])
    with pytest.raises(ConfigurationError):
        ReplicaSet("p", ["p"])  # duplicate names
    with pytest.raises(ConfigurationError):
        ReplicaSet("p", "r")
    with pytest.raises(ConfigurationError):
        ReplicaSet("p", ["r"], read_your_writes=-1)
    with pytest.raises(ConfigurationError):
        ReplicaSet("p", ["r"], max_lag=float("nan"))
