"""End to end: rows from SQLite and PostgreSQL through cache-aside on a real Redis.

Runs ``examples/cache_aside_db.py`` (the runnable example) against the session's
redis-server, SQLite, and the PostgreSQL server on 127.0.0.1:5432 (database ``test``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.realtime]

_PATH = Path(__file__).resolve().parent.parent / "examples" / "cache_aside_db.py"
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


def example() -> Any:
    spec = importlib.util.spec_from_file_location("cache_aside_db", _PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cache_aside_db"] = module
    spec.loader.exec_module(module)
    return module


def check(log: list[str], label: str, queries: int) -> None:
    k1 = f"{label}:product:1"
    k2 = f"{label}:product:2"
    assert log[:4] == [f"miss {k1}", log[1], f"hit (local) {k1}", f"hit (remote) {k1}"]
    assert log[1].startswith(f"refreshed {k1}")
    assert f"stale served (error) {k1}" in log
    # after the TTL the row was loaded again (a second refresh of key 1)
    assert sum(line.startswith(f"refreshed {k1}") for line in log) == 2
    # product 2 loaded twice: once, then again after the invalidation reached process B
    assert sum(line.startswith(f"refreshed {k2}") for line in log) == 2
    # 1 + refresh + failed load during the outage + 2 for product 2
    assert queries == 5


def test_sqlite_through_redis(redis_url: str, tmp_path: Path) -> None:
    ex = example()
    db = ex.SqliteProducts(tmp_path / "shop.db")
    log = ex.run(db, "sqlite", redis_url, say=lambda _: None)
    check(log, "sqlite", db.queries)


def test_postgres_through_redis(redis_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_DSN).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    ex = example()
    db = ex.PostgresProducts(PG_DSN)
    try:
        log = ex.run(db, "postgres", redis_url, say=lambda _: None)
    finally:
        db.drop()
    check(log, "postgres", db.queries)
