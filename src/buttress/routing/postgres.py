"""PostgreSQL helpers for `ReplicaSet` (the ``postgres`` extra: psycopg 3).

`pg_probe` builds a health probe for endpoints whose ``address`` is a libpq connection
string: a primary answers ``True``; a hot standby answers its replication lag in seconds
(0 when everything received has been replayed, else the age of the last replayed
transaction), which `ReplicaSet(max_lag=...)` compares with its bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .endpoint import Endpoint

__all__ = ["LAG_SQL", "pg_probe"]

LAG_SQL = (
    "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)
"""One query answering ``(in_recovery, lag_seconds)``."""


def pg_probe(*, connect_timeout: int = 1) -> Callable[[Endpoint], Any]:
    """A sync probe: connect to ``endpoint.address`` (a DSN), run `LAG_SQL`, disconnect.

    Args:
        connect_timeout: Seconds libpq waits for the connection (int >= 1; default 1), so a
            dead server fails the probe quickly.

    Raises:
        ImportError: psycopg is not installed (``pip install 'buttress[postgres]'``).
    """
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("pg_probe needs psycopg: pip install 'buttress[postgres]'") from exc

    def probe(endpoint: Endpoint) -> bool | float:
        with psycopg.connect(
            endpoint.address, connect_timeout=connect_timeout, autocommit=True
        ) as conn:
            row = conn.execute(LAG_SQL).fetchone()
        if row is None:
            return False
        in_recovery, lag = row
        return float(lag) if in_recovery else True

    return probe
