"""Real uvicorn servers on 127.0.0.1 with ResilienceMiddleware, real httpx clients through
the resilient transports: Retry-After, two-hop deadlines, duplicate POSTs, 409/422, on the
memory, SQLite, Redis and PostgreSQL idempotency stores."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import httpx
import uvicorn

from buttress import Pipeline, Retry, Timeout, backoff, current_context
from buttress.integrations.asgi import DEADLINE_HEADER, ResilienceMiddleware
from buttress.integrations.httpx import AsyncResilientTransport, ResilientTransport, retryable

from .asgi_apps import read_body, send_json
from .stores import PG_CONNINFO, make_store

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A uvicorn server running ``app`` in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class App:
    """Routes: /flaky (503 + Retry-After once), /a -> /b (two hops), /charge (side effect)."""

    def __init__(self, count_db: Any, store: Any = None) -> None:
        self.count_db = count_db  # callable run in the app to record one side effect
        self.store = store
        self.flaky_calls = 0
        self.base = ""
        self.charging = threading.Event()  # set when /charge starts its side effect
        self.hold: threading.Event | None = None  # when set, /charge waits for it

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    close = getattr(self.store, "aclose", None)
                    if close is not None:
                        await close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        body = await read_body(receive)
        ctx = current_context()
        remaining = ctx.remaining() if ctx is not None else None
        if path == "/flaky":
            self.flaky_calls += 1
            if self.flaky_calls == 1:
                await send_json(send, 503, {"busy": True}, [(b"retry-after", b"1")])
            else:
                await send_json(send, 200, {"calls": self.flaky_calls})
        elif path == "/a":
            pipeline = Pipeline(Retry(on=retryable(), budget=None), name="hop2")
            async with httpx.AsyncClient(
                transport=AsyncResilientTransport(pipeline), base_url=self.base
            ) as c:
                await asyncio.sleep(0.05)  # some local work before the next hop
                b = await c.get("/b")
            await send_json(send, 200, {"a": remaining, "b": b.json()["b"], "hdr": b.json()["hdr"]})
        elif path == "/b":
            hdr = dict(scope["headers"]).get(DEADLINE_HEADER.lower().encode(), b"").decode()
            await send_json(send, 200, {"b": remaining, "hdr": hdr})
        elif path == "/charge":
            self.charging.set()
            hold = self.hold
            if hold is not None:
                await asyncio.get_running_loop().run_in_executor(None, hold.wait, 30)
            else:
                await asyncio.sleep(0.3)
            await self.count_db(body)
            await send_json(send, 201, {"charged": body.decode()})
        else:
            await send_json(send, 404, {})


def sqlite_counter(path: str) -> Any:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS effects (body TEXT)")

    async def record(body: bytes) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO effects VALUES (?)", (body.decode(),))

    def count() -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT count(*) FROM effects").fetchone()[0])

    record.count = count  # type: ignore[attr-defined]
    return record


def postgres_counter(table: str) -> Any:
    import psycopg

    with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (body TEXT)")

    async def record(body: bytes) -> None:
        async with await psycopg.AsyncConnection.connect(PG_CONNINFO, autocommit=True) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (%s)", (body.decode(),))

    def count() -> int:
        with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            n = int(row[0])
            conn.execute(f"DROP TABLE {table}")
            return n

    record.count = count  # type: ignore[attr-defined]
    return record


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def served(request: Any, tmp_path: Any) -> Iterator[tuple[Served, App, Any]]:
    stores = make_store(request.param, request, tmp_path)
    store = next(stores)
    if request.param == "postgres":
        from .stores import fresh_table

        counter = postgres_counter(fresh_table())
    else:
        counter = sqlite_counter(str(tmp_path / "effects.sqlite3"))
    app = App(counter, store)
    server = Served(ResilienceMiddleware(app, idempotency=store, timeout=20.0))
    app.base = server.url
    try:
        yield server, app, counter
    finally:
        server.stop()
        for _ in stores:
            pass


def test_100_concurrent_duplicates_have_one_side_effect(served: tuple[Served, App, Any]) -> None:
    server, _, counter = served

    async def main() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as c:
            h = {"Idempotency-Key": "charge-1"}
            responses = await asyncio.gather(
                *(c.post("/charge", content=b"10 EUR", headers=h) for _ in range(100))
            )
            # after completion: a repeat is replayed, a different body is refused
            responses.append(await c.post("/charge", content=b"10 EUR", headers=h))
            responses.append(await c.post("/charge", content=b"99 EUR", headers=h))
            return responses

    responses = asyncio.run(main())
    *duplicates, replay, mismatch = responses
    codes = [r.status_code for r in duplicates]
    assert set(codes) <= {201, 409}
    executed = [
        r for r in duplicates if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    assert len(executed) == 1
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == {"charged": "10 EUR"}
    assert mismatch.status_code == 422
    assert counter.count() == 1


def test_409_while_in_flight(served: tuple[Served, App, Any]) -> None:
    server, app, counter = served
    app.charging.clear()
    app.hold = threading.Event()  # keep the first request in flight until released

    async def main() -> tuple[int, int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            h = {"Idempotency-Key": "slow-1"}
            first = asyncio.ensure_future(c.post("/charge", content=b"1", headers=h))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, app.charging.wait, 30)
            second = await c.post("/charge", content=b"1", headers=h)
            assert app.hold is not None
            app.hold.set()
            return (await first).status_code, second.status_code

    assert asyncio.run(main()) == (201, 409)
    assert counter.count() == 1


@pytest.mark.realtime
def test_retry_after_honoured_over_real_http(served: tuple[Served, App, Any]) -> None:
    server, app, _ = served
    pipeline = Pipeline(Retry(on=retryable(), backoff=backoff.constant(0.01), budget=None))
    with httpx.Client(transport=ResilientTransport(pipeline), base_url=server.url) as c:
        start = time.monotonic()
        response = c.get("/flaky")
        elapsed = time.monotonic() - start
    assert response.status_code == 200
    assert app.flaky_calls == 2
    assert elapsed >= 1.0  # waited the server's Retry-After, not the 10 ms backoff


def test_deadline_propagates_across_two_hops(served: tuple[Served, App, Any]) -> None:
    server, _, _ = served
    pipeline = Pipeline(Timeout(3.0), Retry(on=retryable(), budget=None), name="hop1")
    with httpx.Client(transport=ResilientTransport(pipeline), base_url=server.url) as c:
        data = c.get("/a").json()
    # hop 1 got ~3 s (its own timeout is 20 s), hop 2 less: hop 1's local work came off
    assert 2.0 < data["a"] <= 3.0
    assert 0 < data["b"] < data["a"] - 0.04
    assert 0 < int(data["hdr"]) <= data["a"] * 1000
