"""Idempotency-key records for the ASGI middleware: protocol and four stores.

A record moves through two states:

* ``running``: a request with this key is being processed; it holds a **lease** (an
  expiry time and a random token). A repeat while the lease is live gets 409. If the
  process dies mid-request, nobody completes the record; when the lease expires, the next
  repeat takes it over and runs the request again (at least once, never "never").
* ``done``: the first response (status, headers, body) is stored until ``ttl`` seconds
  after completion; repeats get it replayed. Afterwards the key is forgotten.

A request that outlives its lease may still complete while nobody has taken the key over
(memory, SQLite and PostgreSQL keep the record until then; in Redis the record has expired
and the late response is not stored). After a takeover, the old owner's `complete` and
`release` are refused (their token no longer matches).

Each record also keeps the request **fingerprint** (a hash of method, path, query and
body); a repeat with the same key and a different fingerprint gets 422.

Stores (all implement `IdempotencyStore`, async methods):

* `MemoryIdempotencyStore`: a dict, one process (tests, single-worker servers);
* `SQLiteIdempotencyStore`: an embedded file database, the default for one machine (several
  worker processes may share the file); calls are short synchronous transactions;
* `RedisIdempotencyStore`: ``redis.asyncio``, one Lua script per operation, expiry by Redis;
* `PostgresIdempotencyStore`: ``psycopg`` (async), one table, the database's ``now()``.

Timestamps are wall-clock seconds (`time.time`) for the embedded stores (several processes
must agree), the server's clock for Redis (``PX`` expiry) and PostgreSQL (``now()``).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from .._exceptions import ConfigurationError

__all__ = [
    "Begin",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "PostgresIdempotencyStore",
    "RedisIdempotencyStore",
    "SQLiteIdempotencyStore",
    "StoredResponse",
]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A complete HTTP response kept for replay.

    Attributes:
        status: HTTP status code.
        headers: Header pairs as raw bytes (ASGI form).
        body: The full body.
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def encode(self) -> str:
        """JSON text (headers and body base64-encoded)."""
        return json.dumps(
            {
                "status": self.status,
                "headers": [
                    [base64.b64encode(k).decode(), base64.b64encode(v).decode()]
                    for k, v in self.headers
                ],
                "body": base64.b64encode(self.body).decode(),
            }
        )

    @classmethod
    def decode(cls, text: str | bytes) -> StoredResponse:
        """Inverse of `encode`."""
        data = json.loads(text)
        return cls(
            int(data["status"]),
            tuple((base64.b64decode(k), base64.b64decode(v)) for k, v in data["headers"]),
            base64.b64decode(data["body"]),
        )


@dataclass(frozen=True, slots=True)
class Begin:
    """What `IdempotencyStore.begin` decided.

    Attributes:
        state: ``"started"`` (the caller owns the lease and must `complete` or `release`),
            ``"in_flight"`` (another request holds a live lease: 409), ``"mismatch"`` (the
            key was used with a different fingerprint: 422) or ``"done"`` (replay
            ``response``).
        token: The lease token when ``state == "started"``.
        response: The stored response when ``state == "done"``.
    """

    state: Literal["started", "in_flight", "mismatch", "done"]
    token: str | None = None
    response: StoredResponse | None = None


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where idempotency records live (see the module docs for the state machine)."""

    async def begin(self, key: str, fingerprint: str, lease: float) -> Begin:
        """Claim ``key`` for a new request, or report why not.

        Args:
            key: The Idempotency-Key value (already validated).
            fingerprint: Hash of the request.
            lease: Seconds the claim lasts if never completed (crash recovery).
        """
        ...

    async def complete(self, key: str, token: str, response: StoredResponse, ttl: float) -> bool:
        """Store ``response`` for ``ttl`` seconds if ``token`` still owns the lease."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Forget the record if ``token`` still owns it (the request did not complete)."""
        ...


def _check_positive(owner: str, name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ConfigurationError.invalid(owner, name, value, "seconds > 0")
    return float(value)


# -- memory --------------------------------------------------------------------------------


class MemoryIdempotencyStore:
    """Records in a dict (one process). Expired records are purged on access.

    Args:
        now: Wall-clock source in seconds (default `time.time`); tests pass a fake clock.
        max_records: Most records kept (default 100,000); when full, expired records are
            purged and then the oldest records dropped.

    Raises:
        ConfigurationError: ``max_records`` < 1 or ``now`` not callable.
    """

    def __init__(self, *, now: Any = None, max_records: int = 100_000) -> None:
        if now is not None and not callable(now):
            raise ConfigurationError.invalid("MemoryIdempotencyStore", "now", now, "a callable")
        if not isinstance(max_records, int) or max_records < 1:
            raise ConfigurationError.invalid(
                "MemoryIdempotencyStore", "max_records", max_records, "an int >= 1"
            )
        self._now = now if now is not None else time.time
        self._max = max_records
        # key -> [state, fingerprint, token, expires_at, response | None]
        self._records: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        expired = [k for k, r in self._records.items() if r[3] <= now]
        for k in expired:
            del self._records[k]
        while len(self._records) >= self._max:
            del self._records[next(iter(self._records))]

    async def begin(self, key: str, fingerprint: str, lease: float) -> Begin:
        now = float(self._now())
        with self._lock:
            record = self._records.get(key)
            if record is not None and record[3] <= now:
                record = None
            if record is None:
                if len(self._records) >= self._max:
                    self._purge(now)
                token = uuid.uuid4().hex
                self._records[key] = ["running", fingerprint, token, now + lease, None]
                return Begin("started", token)
            if record[1] != fingerprint:
                return Begin("mismatch")
            if record[0] == "running":
                return Begin("in_flight")
            return Begin("done", response=record[4])

    async def complete(self, key: str, token: str, response: StoredResponse, ttl: float) -> bool:
        now = float(self._now())
        with self._lock:
            record = self._records.get(key)
            if record is None or record[2] != token:
                return False
            record[0], record[3], record[4] = "done", now + ttl, response
            return True

    async def release(self, key: str, token: str) -> None:
        with self._lock:
            record = self._records.get(key)
            if record is not None and record[2] == token:
                del self._records[key]


# -- SQLite --------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS buttress_idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL,
    response TEXT
)
"""


class SQLiteIdempotencyStore:
    """Records in an SQLite file: the embedded default for one machine.

    Several worker processes may share one file: each operation is one short
    ``BEGIN IMMEDIATE`` transaction (SQLite serialises writers). The calls are synchronous
    (typically tens of microseconds on a local disk), so they briefly block the event loop.

    Args:
        path: Database file (default ``"buttress-idempotency.sqlite3"``); ``":memory:"``
            keeps it in this process only.
        now: Wall-clock source in seconds (default `time.time`).
        timeout: Seconds to wait for another process's write lock (default 5).

    Raises:
        ConfigurationError: Invalid ``path``, ``now`` or ``timeout``.
    """

    def __init__(
        self,
        path: str = "buttress-idempotency.sqlite3",
        *,
        now: Any = None,
        timeout: float = 5.0,
    ) -> None:
        if not isinstance(path, str) or not path:
            raise ConfigurationError.invalid("SQLiteIdempotencyStore", "path", path, "a file path")
        if now is not None and not callable(now):
            raise ConfigurationError.invalid("SQLiteIdempotencyStore", "now", now, "a callable")
        self.path = path
        self._now = now if now is not None else time.time
        self._timeout = _check_positive("SQLiteIdempotencyStore", "timeout", timeout)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SQLITE_SCHEMA)
            self._conn = conn
        return conn

    def close(self) -> None:
        """Close the database connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _begin(self, key: str, fingerprint: str, lease: float) -> Begin:
        now = float(self._now())
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT fingerprint, state, expires_at, response FROM buttress_idempotency "
                    "WHERE key = ?",
                    (key,),
                ).fetchone()
                if row is None or row[2] <= now:
                    token = uuid.uuid4().hex
                    conn.execute(
                        "INSERT OR REPLACE INTO buttress_idempotency "
                        "(key, fingerprint, state, token, expires_at, response) "
                        "VALUES (?, ?, 'running', ?, ?, NULL)",
                        (key, fingerprint, token, now + lease),
                    )
                    result = Begin("started", token)
                elif row[0] != fingerprint:
                    result = Begin("mismatch")
                elif row[1] == "running":
                    result = Begin("in_flight")
                else:
                    result = Begin("done", response=StoredResponse.decode(row[3]))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

    async def begin(self, key: str, fingerprint: str, lease: float) -> Begin:
        return self._begin(key, fingerprint, lease)

    async def complete(self, key: str, token: str, response: StoredResponse, ttl: float) -> bool:
        now = float(self._now())
        with self._lock:
            cur = self._connection().execute(
                "UPDATE buttress_idempotency SET state = 'done', expires_at = ?, response = ? "
                "WHERE key = ? AND token = ?",
                (now + ttl, response.encode(), key, token),
            )
            return cur.rowcount == 1

    async def release(self, key: str, token: str) -> None:
        with self._lock:
            self._connection().execute(
                "DELETE FROM buttress_idempotency WHERE key = ? AND token = ?", (key, token)
            )

    def purge(self) -> int:
        """Delete expired records now; returns how many (call it from a periodic job)."""
        with self._lock:
            cur = self._connection().execute(
                "DELETE FROM buttress_idempotency WHERE expires_at <= ?", (float(self._now()),)
            )
            return cur.rowcount


# -- Redis ---------------------------------------------------------------------------------

_REDIS_BEGIN = """
local rec = redis.call('HMGET', KEYS[1], 'state', 'fp', 'response')
if not rec[1] then
  redis.call('HSET', KEYS[1], 'state', 'running', 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'started'}
end
if rec[2] ~= ARGV[1] then return {'mismatch'} end
if rec[1] == 'running' then return {'in_flight'} end
return {'done', rec[3]}
"""

_REDIS_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'response', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_REDIS_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisIdempotencyStore:
    """Records in Redis (shared by every process and host), one hash per key.

    Leases and record lifetimes are Redis expirations (``PEXPIRE``), so the Redis server's
    clock decides, not the hosts'. Each operation is one Lua script (atomic).

    Args:
        client: A ``redis.asyncio.Redis`` client, or a URL (``"redis://127.0.0.1:6379/0"``)
            to create one.
        prefix: Key prefix (default ``"buttress:idem:"``).

    Raises:
        ImportError: redis-py is not installed (``pip install 'buttress[redis]'``).
        ConfigurationError: ``prefix`` is not a str.
    """

    def __init__(self, client: Any, *, prefix: str = "buttress:idem:") -> None:
        if isinstance(client, str):
            try:
                import redis.asyncio as aioredis
            except ImportError as exc:  # pragma: no cover - needs the extra missing
                raise ImportError(
                    "RedisIdempotencyStore needs redis-py: pip install 'buttress[redis]'"
                ) from exc
            client = aioredis.Redis.from_url(client)
        if not isinstance(prefix, str):
            raise ConfigurationError.invalid("RedisIdempotencyStore", "prefix", prefix, "a str")
        self.client = client
        self.prefix = prefix
        self._begin = client.register_script(_REDIS_BEGIN)
        self._complete = client.register_script(_REDIS_COMPLETE)
        self._release = client.register_script(_REDIS_RELEASE)

    async def begin(self, key: str, fingerprint: str, lease: float) -> Begin:
        token = uuid.uuid4().hex
        reply = await self._begin(
            keys=[self.prefix + key], args=[fingerprint, token, max(1, int(lease * 1000))]
        )
        state = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if state == "started":
            return Begin("started", token)
        if state == "done":
            return Begin("done", response=StoredResponse.decode(reply[1]))
        return Begin("mismatch" if state == "mismatch" else "in_flight")

    async def complete(self, key: str, token: str, response: StoredResponse, ttl: float) -> bool:
        done = await self._complete(
            keys=[self.prefix + key], args=[token, response.encode(), max(1, int(ttl * 1000))]
        )
        return bool(done)

    async def release(self, key: str, token: str) -> None:
        await self._release(keys=[self.prefix + key], args=[token])

    async def aclose(self) -> None:
        """Close the Redis client."""
        await self.client.aclose()


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    response TEXT
)
"""


class PostgresIdempotencyStore:
    """Records in a PostgreSQL table (shared by every process and host).

    Expiry uses the database's ``now()``. Claims are one ``INSERT ... ON CONFLICT DO UPDATE
    ... WHERE expired`` statement, so exactly one of many concurrent requests wins.
    Operations share one ``psycopg.AsyncConnection`` (autocommit), serialised by a lock;
    asyncio only.

    Args:
        conninfo: A libpq connection string (``"host=127.0.0.1 dbname=test user=postgres"``).
        table: Table name (default ``"buttress_idempotency"``; created if missing); letters,
            digits and underscores only.

    Raises:
        ImportError: psycopg is not installed (``pip install 'buttress[postgres]'``).
        ConfigurationError: Invalid ``table``.
    """

    def __init__(self, conninfo: str, *, table: str = "buttress_idempotency") -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - needs the extra missing
            raise ImportError(
                "PostgresIdempotencyStore needs psycopg: pip install 'buttress[postgres]'"
            ) from exc
        if not isinstance(table, str) or not table.replace("_", "").isalnum():
            raise ConfigurationError.invalid(
                "PostgresIdempotencyStore", "table", table, "letters, digits and underscores"
            )
        import asyncio

        self._psycopg = psycopg
        self.conninfo = conninfo
        self.table = table
        self._conn: Any = None
        self._lock = asyncio.Lock()  # binds to the running loop on first use

    async def _connection(self) -> Any:
        """The connection (opened on first use); call with ``self._lock`` held."""
        if self._conn is None or self._conn.closed:
            self._conn = await self._psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            await self._conn.execute(_PG_SCHEMA.format(table=self.table))
        return self._conn

    async def begin(self, key: str, fingerprint: str, lease: float) -> Begin:
        t = self.table
        token = uuid.uuid4().hex
        async with self._lock:
            conn = await self._connection()
            for _ in range(3):  # the record may expire or vanish between the two statements
                cur = await conn.execute(
                    f"INSERT INTO {t} AS r (key, fingerprint, state, token, expires_at, response) "
                    "VALUES (%s, %s, 'running', %s, now() + make_interval(secs => %s), NULL) "
                    "ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
                    "state = 'running', token = EXCLUDED.token, "
                    "expires_at = EXCLUDED.expires_at, response = NULL "
                    "WHERE r.expires_at <= now() RETURNING token",
                    (key, fingerprint, token, lease),
                )
                if await cur.fetchone() is not None:
                    return Begin("started", token)
                cur = await conn.execute(
                    f"SELECT fingerprint, state, response FROM {t} "
                    "WHERE key = %s AND expires_at > now()",
                    (key,),
                )
                row = await cur.fetchone()
                if row is None:
                    continue
                if row[0] != fingerprint:
                    return Begin("mismatch")
                if row[1] == "running":
                    return Begin("in_flight")
                return Begin("done", response=StoredResponse.decode(row[2]))
        return Begin("in_flight")

    async def complete(self, key: str, token: str, response: StoredResponse, ttl: float) -> bool:
        async with self._lock:
            conn = await self._connection()
            cur = await conn.execute(
                f"UPDATE {self.table} SET state = 'done', response = %s, "
                "expires_at = now() + make_interval(secs => %s) WHERE key = %s AND token = %s",
                (response.encode(), ttl, key, token),
            )
            return bool(cur.rowcount == 1)

    async def release(self, key: str, token: str) -> None:
        async with self._lock:
            conn = await self._connection()
            await conn.execute(
                f"DELETE FROM {self.table} WHERE key = %s AND token = %s", (key, token)
            )

    async def aclose(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
