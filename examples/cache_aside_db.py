"""Cache-aside on Redis in front of PostgreSQL and SQLite: hits, misses, refreshes, outage.

    python examples/cache_aside_db.py [--redis redis://127.0.0.1:6379/0]
                                      [--postgres "host=127.0.0.1 port=5432 dbname=test"]

Needs ``pip install 'buttress[redis,postgres]'``, a Redis server and (for the PostgreSQL
part) a PostgreSQL server; without ``--postgres`` reachable, only SQLite runs.

What it shows, for each database:

1. a miss (the row is loaded from the database and stored in Redis with a TTL);
2. hits (from the local tier, then, in a second "process" with its own local tier, from
   Redis without touching the database);
3. a refresh after the TTL;
4. a database outage (connections refused): the stale row is served
   (``stale_if_error``) and the caller never sees the error;
5. an invalidation that reaches the other process.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buttress import CacheAside, Pipeline
from buttress.events import (
    CacheHit,
    CacheMiss,
    CacheRefreshed,
    CacheStaleServed,
    Event,
)
from buttress.stores import RedisStore

TTL = 1.0


def describe(event: Event) -> str | None:
    if isinstance(event, CacheHit):
        return f"hit ({event.tier}) {event.key}"
    if isinstance(event, CacheMiss):
        return f"miss {event.key}"
    if isinstance(event, CacheRefreshed):
        return f"refreshed {event.key} in {event.duration * 1000:.1f} ms"
    if isinstance(event, CacheStaleServed):
        return f"stale served ({event.reason}) {event.key}"
    return None


class SqliteProducts:
    """Rows from a SQLite file; ``down`` simulates an outage (the file is unreachable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.down = False
        self.queries = 0
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT)")
            db.execute("DELETE FROM products")
            db.executemany(
                "INSERT INTO products VALUES (?, ?)", [(1, "anvil"), (2, "rope"), (3, "rocket")]
            )
        # not closed by the context manager: close explicitly
        db.close()

    def get(self, product_id: int) -> dict[str, Any] | None:
        self.queries += 1
        target = self.path.with_suffix(".missing") if self.down else self.path
        db = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT id, name FROM products WHERE id = ?", (product_id,)).fetchone()
        finally:
            db.close()
        return None if row is None else {"id": row[0], "name": row[1]}


class PostgresProducts:
    """Rows from PostgreSQL; ``down`` points the loader at a closed port (refused)."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.dsn = dsn
        self.down = False
        self.queries = 0
        # one table per process: runs sharing the server (tests of two checkouts at once)
        # must not drop each other's table
        self.table = f"buttress_products_{os.getpid()}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (id INT PRIMARY KEY, name TEXT)")
            conn.execute(f"DELETE FROM {self.table}")
            conn.execute(
                f"INSERT INTO {self.table} VALUES (1, 'anvil'), (2, 'rope'), (3, 'rocket')"
            )

    def get(self, product_id: int) -> dict[str, Any] | None:
        self.queries += 1
        dsn = self.dsn + " port=1" if self.down else self.dsn
        with self.psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(
                f"SELECT id, name FROM {self.table} WHERE id = %s",
                (product_id,),
            ).fetchone()
        return None if row is None else {"id": row[0], "name": row[1]}

    def drop(self) -> None:
        with self.psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {self.table}")


def run(db: Any, label: str, redis_url: str, say: Callable[[str], None] = print) -> list[str]:
    """Run the scenario against ``db``; returns the event log (also printed)."""
    log: list[str] = []

    def listener(event: Event) -> None:
        text = describe(event)
        if text is not None:
            log.append(text)
            say(f"   [{label}] {text}")

    store_a, store_b = RedisStore(redis_url, timeout=1), RedisStore(redis_url, timeout=1)
    options: dict[str, Any] = {
        "key": f"{label}:product:{{product_id}}",
        "stale_if_error": 60,
        "negative_ttl": 0.2,
        "name": f"example-{label}",
    }
    process_a = CacheAside(TTL, store=store_a, **options)
    process_b = CacheAside(TTL, store=store_b, **options)
    a = Pipeline(process_a, listeners=[listener], name="process-a")
    b = Pipeline(process_b, listeners=[listener], name="process-b")

    def product(product_id: int) -> dict[str, Any] | None:
        return db.get(product_id)  # type: ignore[no-any-return]

    try:
        process_a.invalidate_prefix(f"{label}:")
        say(f"{label}: 1. first read is a miss, loaded from the database")
        say(f"   -> {a.call(product, 1)}")
        say(f"{label}: 2. hits: local tier, then another process reads it from Redis")
        a.call(product, 1)
        say(f"   -> {b.call(product, 1)} (database queries so far: {db.queries})")
        say(f"{label}: 3. after the TTL ({TTL} s) the next read refreshes it")
        time.sleep(TTL + 0.1)
        a.call(product, 1)
        say(f"{label}: 4. database outage: the stale row is served, no error")
        time.sleep(TTL + 0.1)
        db.down = True
        say(f"   -> {a.call(product, 1)}")
        db.down = False
        say(f"{label}: 5. invalidation in process A reaches process B")
        b.call(product, 2)
        sub = process_b._subscription
        if sub is not None and hasattr(sub, "ready"):
            sub.ready.wait(5)
        process_a.invalidate(f"{label}:product:2")
        deadline = time.monotonic() + 5
        while f"{label}:product:2" in process_b.local and time.monotonic() < deadline:
            time.sleep(0.01)
        b.call(product, 2)
        say(f"   database queries in total: {db.queries}")
    finally:
        process_a.close()
        process_b.close()
        store_a.close()
        store_b.close()
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="host=127.0.0.1 port=5432 dbname=test")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(SqliteProducts(Path(tmp) / "shop.db"), "sqlite", options.redis)
    try:
        pg = PostgresProducts(options.postgres)
    except Exception as exc:  # no server: SQLite only
        print(f"postgres: skipped ({type(exc).__name__}: {exc})")
        return
    try:
        run(pg, "postgres", options.redis)
    finally:
        pg.drop()


if __name__ == "__main__":
    main()
