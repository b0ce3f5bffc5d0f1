"""The same contract for every idempotency store, against the real backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from buttress import ConfigurationError
from buttress.integrations.idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    SQLiteIdempotencyStore,
    StoredResponse,
)

from .stores import make_store

KINDS = ["memory", "sqlite", "redis", "postgres"]
RESPONSE = StoredResponse(
    201, ((b"content-type", b"application/json"), (b"x-a", b"\xff")), b"\x00{}"
)


@pytest.fixture(params=KINDS)
def store(request: Any, tmp_path: Any) -> Iterator[Any]:
    yield from make_store(request.param, request, tmp_path)


async def _close(store: Any) -> None:
    close = getattr(store, "aclose", None)
    if close is not None:
        await close()


def test_contract(store: Any) -> None:
    assert isinstance(store, IdempotencyStore)

    async def main() -> None:
        try:
            first = await store.begin("k", "fp", 30.0)
            assert first.state == "started"
            assert first.token
            assert (await store.begin("k", "fp", 30.0)).state == "in_flight"
            assert (await store.begin("k", "other", 30.0)).state == "mismatch"
            assert not await store.complete("k", "not-the-token", RESPONSE, 60.0)
            assert await store.complete("k", first.token, RESPONSE, 60.0)
            done = await store.begin("k", "fp", 30.0)
            assert done.state == "done"
            assert done.response == RESPONSE
            assert (await store.begin("k", "other", 30.0)).state == "mismatch"
            # release by a stale token does nothing; by the owner frees the key
            second = await store.begin("k2", "fp", 30.0)
            assert second.token is not None
            await store.release("k2", "stale")
            assert (await store.begin("k2", "fp", 30.0)).state == "in_flight"
            await store.release("k2", second.token)
            assert (await store.begin("k2", "fp", 30.0)).state == "started"
        finally:
            await _close(store)

    asyncio.run(main())


@pytest.mark.realtime
def test_lease_expires_and_the_key_is_taken_over(store: Any) -> None:
    async def main() -> None:
        try:
            crashed = await store.begin("k", "fp", 0.2)
            assert crashed.state == "started"
            assert (await store.begin("k", "fp", 0.2)).state == "in_flight"
            await asyncio.sleep(0.35)
            again = await store.begin("k", "fp", 30.0)
            assert again.state == "started"
            assert again.token != crashed.token
            # the crashed owner can no longer complete: its lease was taken over
            assert crashed.token is not None
            assert not await store.complete("k", crashed.token, RESPONSE, 60.0)
            assert again.token is not None
            assert await store.complete("k", again.token, RESPONSE, 0.2)
            await asyncio.sleep(0.35)
            assert (await store.begin("k", "fp", 30.0)).state == "started"  # ttl passed
        finally:
            await _close(store)

    asyncio.run(main())


def test_concurrent_begins_have_one_winner(store: Any) -> None:
    async def main() -> list[str]:
        try:
            results = await asyncio.gather(*(store.begin("race", "fp", 30.0) for _ in range(50)))
            return [r.state for r in results]
        finally:
            await _close(store)

    states = asyncio.run(main())
    assert states.count("started") == 1
    assert states.count("in_flight") == 49


def test_sqlite_file_is_shared_between_store_objects(tmp_path: Any) -> None:
    path = str(tmp_path / "shared.sqlite3")
    a, b = SQLiteIdempotencyStore(path), SQLiteIdempotencyStore(path)

    async def main() -> None:
        claim = await a.begin("k", "fp", 30.0)
        assert (await b.begin("k", "fp", 30.0)).state == "in_flight"
        assert claim.token is not None
        await a.complete("k", claim.token, RESPONSE, 60.0)
        assert (await b.begin("k", "fp", 30.0)).response == RESPONSE

    asyncio.run(main())
    assert a.purge() == 0
    a.close()
    b.close()


def test_memory_store_is_bounded() -> None:
    t = [0.0]
    store = MemoryIdempotencyStore(now=lambda: t[0], max_records=3)

    async def main() -> None:
        for i in range(5):
            await store.begin(f"k{i}", "fp", 30.0)

    asyncio.run(main())
    assert len(store._records) <= 3


def test_invalid_store_configuration() -> None:
    with pytest.raises(ConfigurationError, match="max_records"):
        MemoryIdempotencyStore(max_records=0)
    with pytest.raises(ConfigurationError, match="path"):
        SQLiteIdempotencyStore("")
    with pytest.raises(ConfigurationError, match="timeout"):
        SQLiteIdempotencyStore("x.db", timeout=0)
    from buttress.integrations.idempotency import PostgresIdempotencyStore

    with pytest.raises(ConfigurationError, match="table"):
        PostgresIdempotencyStore("host=127.0.0.1", table="x; DROP TABLE y")
    assert time.time() > 0
