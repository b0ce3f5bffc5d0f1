"""Idempotency stores for tests: memory, SQLite, Redis (own server), PostgreSQL (127.0.0.1)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

PG_CONNINFO = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


def postgres_available() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(PG_CONNINFO) as conn:
            conn.execute("SELECT 1")
    except Exception:
        return False
    return True


def require_postgres() -> None:
    if not postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL on 127.0.0.1:5432 (database test) is required under CI=true")
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432")


def fresh_table() -> str:
    return f"buttress_idem_{uuid.uuid4().hex[:12]}"


def drop_table(table: str) -> None:
    import psycopg

    with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def make_store(kind: str, request: Any, tmp_path: Any) -> Iterator[Any]:
    from buttress.integrations.idempotency import (
        MemoryIdempotencyStore,
        PostgresIdempotencyStore,
        RedisIdempotencyStore,
        SQLiteIdempotencyStore,
    )

    if kind == "memory":
        yield MemoryIdempotencyStore()
    elif kind == "sqlite":
        store = SQLiteIdempotencyStore(str(tmp_path / "idem.sqlite3"))
        yield store
        store.close()
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
        yield RedisIdempotencyStore(url)
    else:
        require_postgres()
        table = fresh_table()
        yield PostgresIdempotencyStore(PG_CONNINFO, table=table)
        drop_table(table)
