"""ReplicaSet against a real PostgreSQL primary and streaming replica (own servers)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from buttress import Pipeline, Retry
from buttress.routing import Endpoint, HealthCheck, PrimaryUnavailableError, ReplicaSet
from buttress.routing.postgres import pg_probe
from pg_fixture import PgCluster, pg_cluster  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.realtime]

MAX_LAG = 5.0


def q(endpoint: Endpoint, sql: str, params: tuple[Any, ...] = ()) -> tuple[str, Any]:
    with psycopg.connect(endpoint.address, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        row = cur.fetchone() if cur.description else None
    return endpoint.name, row


def maintain_until(rs: ReplicaSet, cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, rs.stats()
        rs.maintain()
        time.sleep(0.05)


def test_replica_set_on_postgres(pg_cluster: PgCluster) -> None:  # noqa: F811
    pg = pg_cluster
    rs = ReplicaSet(
        Endpoint(pg.dsn("primary"), name="primary"),
        [Endpoint(pg.dsn("replica"), name="replica")],
        health=HealthCheck(
            pg_probe(), interval=0.05, jitter=0, healthy_threshold=1, unhealthy_threshold=1
        ),
        max_lag=MAX_LAG,
        on=psycopg.OperationalError,
    )
    reads = Pipeline(Retry(on=psycopg.OperationalError, attempts=2, backoff=0), rs.reads)
    rs.maintain()

    # 1. reads are served by the replica
    assert rs.read(q, "SELECT pg_is_in_recovery()") == ("replica", (True,))

    # 2. a write on the primary is visible on the replica within the lag bound
    assert rs.write(q, "SELECT pg_is_in_recovery()") == ("primary", (False,))
    rs.write(q, "CREATE TABLE IF NOT EXISTS items (id int primary key, v text)")
    rs.write(q, "INSERT INTO items VALUES (%s, %s)", (1, "one"))
    start = time.monotonic()
    while True:
        try:
            name, row = rs.read(q, "SELECT v FROM items WHERE id = 1")
        except psycopg.errors.UndefinedTable:  # not a failure of the replica (on=)
            name, row = "replica", None
        if row == ("one",):
            assert name == "replica"
            break
        assert time.monotonic() - start < MAX_LAG, "write not replicated within max_lag"
        time.sleep(0.02)

    # 3. replica stopped: reads move to the primary (a retry first, then health checks)
    pg.stop("replica")
    assert reads.call(q, "SELECT pg_is_in_recovery()") == ("primary", (False,))
    maintain_until(rs, lambda: not rs.stats()["endpoints"]["replica"]["healthy"])
    assert rs.read(q, "SELECT v FROM items WHERE id = 1") == ("primary", ("one",))

    # the replica comes back: reads return to it
    pg.start("replica")
    maintain_until(rs, lambda: rs.stats()["endpoints"]["replica"]["healthy"])
    assert rs.read(q, "SELECT pg_is_in_recovery()") == ("replica", (True,))

    # 4. primary stopped: writes fail fast, reads continue from the replica
    pg.stop("primary")
    maintain_until(rs, lambda: not rs.primary_available)
    attempted: list[Endpoint] = []
    with pytest.raises(PrimaryUnavailableError):
        rs.write(lambda e: attempted.append(e))
    assert attempted == []
    assert rs.read(q, "SELECT v FROM items WHERE id = 1") == ("replica", ("one",))
    assert rs.read(q, "SELECT pg_is_in_recovery()") == ("replica", (True,))
    pg.start("primary")
