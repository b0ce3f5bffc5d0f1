"""ResilienceMiddleware in-process (httpx.ASGITransport): deadlines, keys, shedding."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("httpx")

import httpx

from buttress import (
    BulkheadFullError,
    ConfigurationError,
    Pipeline,
    RateLimitedError,
    add_listener,
    remove_listener,
)
from buttress.events import CallRejected
from buttress.integrations.asgi import (
    DEADLINE_HEADER,
    REQUEST,
    RequestInfo,
    ResilienceMiddleware,
    by_client,
    by_route,
    by_tenant,
    request_fingerprint,
)
from buttress.integrations.idempotency import MemoryIdempotencyStore
from buttress.testing import RecordingListener

from .asgi_apps import Recorder


class FakeNow:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_first_response_is_stored_and_replayed() -> None:
    app = Recorder()
    mw = ResilienceMiddleware(app, idempotency=MemoryIdempotencyStore())

    async def main() -> list[httpx.Response]:
        async with client(mw) as c:
            h = {"Idempotency-Key": "k1"}
            return [await c.post("/pay", content=b"A", headers=h) for _ in range(3)]

    first, second, third = run(main())
    assert len(app.runs) == 1
    assert first.status_code == second.status_code == third.status_code == 201
    assert second.json() == first.json() == {"run": 1, "body": "A"}
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["content-type"] == "application/json"


def test_same_key_different_body_gets_422() -> None:
    app = Recorder()
    mw = ResilienceMiddleware(app, idempotency=MemoryIdempotencyStore())

    async def main() -> tuple[int, int, int]:
        async with client(mw) as c:
            h = {"Idempotency-Key": "k1"}
            a = await c.post("/pay", content=b"A", headers=h)
            b = await c.post("/pay", content=b"B", headers=h)
            d = await c.post("/pay?x=1", content=b"A", headers=h)
            return a.status_code, b.status_code, d.status_code

    assert run(main()) == (201, 422, 422)
    assert len(app.runs) == 1


def test_repeat_while_in_flight_gets_409() -> None:
    gate = asyncio.Event()
    app = Recorder(gate=gate)
    mw = ResilienceMiddleware(app, idempotency=MemoryIdempotencyStore())

    async def main() -> tuple[int, int, str | None]:
        async with client(mw) as c:
            h = {"Idempotency-Key": "k1"}
            first = asyncio.ensure_future(c.post("/pay", content=b"A", headers=h))
            assert app.started is not None
            await app.started.wait()
            second = await c.post("/pay", content=b"A", headers=h)
            gate.set()
            return (await first).status_code, second.status_code, second.headers.get("retry-after")

    assert run(main()) == (201, 409, "1")
    assert len(app.runs) == 1


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("", 400),
        ("x" * 256, 400),
        ("bad\x01key", 400),
        ("é", 400),
        ('"quoted-ok"', 201),
        ("x" * 255, 201),
    ],
)
def test_key_validation(key: str, status: int) -> None:
    app = Recorder()
    mw = ResilienceMiddleware(app, idempotency=MemoryIdempotencyStore())

    async def main() -> int:
        async with client(mw) as c:
            r = await c.post("/p", content=b"", headers={"Idempotency-Key": key.encode("utf-8")})
            return r.status_code

    assert run(main()) == status
    assert len(app.runs) == (1 if status == 201 else 0)


def test_5xx_and_crash_release_the_key() -> None:
    app = Recorder(status=[503, 201], fail=0)
    mw = ResilienceMiddleware(app, idempotency=MemoryIdempotencyStore())

    async def main() -> list[int]:
        async with client(mw) as c:
            h = {"Idempotency-Key": "k"}
            codes = [(await c.post("/p", headers=h)).status_code for _ in range(3)]
            app.fail = 1
            with pytest.raises(RuntimeError):
                await c.post("/p", headers={"Idempotency-Key": "boom"})
            codes.append((await c.post("/p", headers={"Idempotency-Key": "boom"})).status_code)
            return codes

    assert run(main()) == [503, 201, 201, 201]
    assert len(app.runs) == 4  # 503 ran, retry ran, replay did not; crash ran, retry ran


def test_crashed_process_lease_expires_then_request_runs_once_more() -> None:
    now = FakeNow()
    store = MemoryIdempotencyStore(now=now)
    app = Recorder()
    mw = ResilienceMiddleware(app, idempotency=store, lease=30.0, ttl=3600.0)

    async def main() -> list[int]:
        # a previous process claimed the key and died before completing
        claim = await store.begin("k", request_fingerprint("POST", "/p", b"", b""), 30.0)
        assert claim.state == "started"
        async with client(mw) as c:
            h = {"Idempotency-Key": "k"}
            codes = [(await c.post("/p", headers=h)).status_code]
            now.t += 31.0
            codes.append((await c.post("/p", headers=h)).status_code)
            codes.append((await c.post("/p", headers=h)).status_code)  # replayed
            now.t += 3601.0
            codes.append((await c.post("/p", headers=h)).status_code)  # record expired
            return codes

    assert run(main()) == [409, 201, 201, 201]
    assert len(app.runs) == 2


def test_body_too_large_gets_413() -> None:
    app = Recorder()
    mw = ResilienceMiddleware(app, idempotency=MemoryIdempotencyStore(), max_body=10)

    async def main() -> int:
        async with client(mw) as c:
            return (
                await c.post("/p", content=b"x" * 11, headers={"Idempotency-Key": "k"})
            ).status_code

    assert run(main()) == 413
    assert app.runs == []


def test_methods_without_idempotency_pass_through() -> None:
    app = Recorder(status=200)
    mw = ResilienceMiddleware(app, idempotency=MemoryIdempotencyStore())

    async def main() -> None:
        async with client(mw) as c:
            for _ in range(2):
                await c.put("/p", content=b"x", headers={"Idempotency-Key": "k"})
                await c.post("/p", content=b"x")  # no key

    run(main())
    assert len(app.runs) == 4


def test_incoming_deadline_reaches_the_app_and_expired_is_rejected() -> None:
    app = Recorder(status=200)
    events = RecordingListener()
    mw = ResilienceMiddleware(app, timeout=30.0, pipeline=Pipeline(name="srv", listeners=[events]))

    async def main() -> list[int]:
        async with client(mw) as c:
            return [
                (await c.get("/", headers={DEADLINE_HEADER: "1500"})).status_code,
                (await c.get("/", headers={DEADLINE_HEADER: "0"})).status_code,
                (await c.get("/", headers={DEADLINE_HEADER: "-20"})).status_code,
                (await c.get("/", headers={DEADLINE_HEADER: "soon"})).status_code,
                (await c.get("/")).status_code,
            ]

    assert run(main()) == [200, 504, 504, 200, 200]
    first, malformed, plain = app.remaining
    assert first is not None and 1.3 < first <= 1.5
    assert malformed is not None and 29.0 < malformed <= 30.0  # header ignored: own timeout
    assert plain is not None and 29.0 < plain <= 30.0
    assert [e.reason for e in events.of_type(CallRejected)] == ["deadline", "deadline"]


def test_no_deadline_no_context_deadline() -> None:
    app = Recorder(status=200)
    mw = ResilienceMiddleware(app, honour_deadline_header=False)

    async def main() -> None:
        async with client(mw) as c:
            await c.get("/", headers={DEADLINE_HEADER: "10"})

    run(main())
    assert app.remaining == [None]


@pytest.mark.realtime
def test_deadline_cancels_the_app_and_answers_503() -> None:
    app = Recorder(status=200, delay=5.0)
    mw = ResilienceMiddleware(app)

    async def main() -> httpx.Response:
        async with client(mw) as c:
            return await c.get("/", headers={DEADLINE_HEADER: "50"})

    response = run(main())
    assert response.status_code == 503
    assert "deadline" in response.text


class Reject:
    """A strategy that rejects every call with a given error (stands in for a limiter)."""

    name = "reject"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def build_sync(self, next_step: Any, env: Any) -> Any:  # pragma: no cover - async only
        raise NotImplementedError

    def build_async(self, next_step: Any, env: Any) -> Any:
        async def step(fn: Any, args: Any, kwargs: Any) -> Any:
            raise self.error

        return step


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (RateLimitedError("slow down", strategy="rl", retry_after=1.2), 429, "2"),
        (BulkheadFullError("full", strategy="bh", retry_after=0.01), 503, "1"),
        (BulkheadFullError("full", strategy="bh"), 503, None),
    ],
)
def test_rejections_become_429_or_503_with_retry_after(
    error: Exception, status: int, retry_after: str | None
) -> None:
    app = Recorder()
    store = MemoryIdempotencyStore()
    mw = ResilienceMiddleware(app, pipeline=Pipeline(Reject(error)), idempotency=store)

    async def main() -> list[httpx.Response]:
        async with client(mw) as c:
            return [
                await c.get("/"),
                await c.post("/", headers={"Idempotency-Key": "k"}),
            ]

    plain, keyed = run(main())
    for response in (plain, keyed):
        assert response.status_code == status
        assert response.headers.get("retry-after") == retry_after
    assert app.runs == []
    # the rejected keyed request released its key: a later attempt may run
    assert run(store.begin("k", "other", 1.0)).state == "started"


def test_bulkhead_per_tenant_sheds_only_the_busy_tenant() -> None:
    from buttress import Bulkhead

    gate = asyncio.Event()
    app = Recorder(status=200, gate=gate)
    mw = ResilienceMiddleware(app, pipeline=Pipeline(Bulkhead(1, key=by_tenant("X-Tenant"))))

    async def main() -> list[int]:
        async with client(mw) as c:
            first = asyncio.ensure_future(c.get("/", headers={"X-Tenant": "a"}))
            assert app.started is not None
            await app.started.wait()
            same = asyncio.ensure_future(c.get("/", headers={"X-Tenant": "a"}))
            other = asyncio.ensure_future(c.get("/", headers={"X-Tenant": "b"}))
            await asyncio.sleep(0.05)
            gate.set()
            return [(await f).status_code for f in (first, same, other)]

    assert run(main()) == [200, 503, 200]


def test_key_functions_read_request_info() -> None:
    from buttress import Context, scope

    info = RequestInfo("GET", "/items", "10.0.0.7", {"x-tenant-id": "acme"})
    with scope(properties={REQUEST: info}) as ctx:
        assert isinstance(ctx, Context)
        assert by_client(ctx) == "10.0.0.7"
        assert by_route(ctx) == "GET /items"
        assert by_tenant()(ctx) == "acme"
        assert by_tenant("x-other", default="none")(ctx) == "none"
    with scope() as bare:
        assert by_client(bare) == ""


def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    mw = ResilienceMiddleware(app, timeout=1.0)
    run(mw({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]


def test_global_listener_sees_rejections() -> None:
    events = RecordingListener()
    add_listener(events)
    try:
        mw = ResilienceMiddleware(Recorder())

        async def main() -> int:
            async with client(mw) as c:
                return (await c.get("/", headers={DEADLINE_HEADER: "0"})).status_code

        assert run(main()) == 504
    finally:
        remove_listener(events)
    assert [e.strategy for e in events.of_type(CallRejected)] == ["asgi"]


def test_invalid_configuration() -> None:
    app = Recorder()
    for kwargs, name in [
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"pipeline": object()}, "pipeline"),
        ({"idempotency": object()}, "idempotency"),
        ({"max_key_length": 0}, "max_key_length"),
        ({"ttl": -1}, "ttl"),
        ({"lease": 0}, "lease"),
        ({"max_body": -1}, "max_body"),
        ({"deadline_header": ""}, "deadline_header"),
    ]:
        with pytest.raises(ConfigurationError, match=name):
            ResilienceMiddleware(app, **kwargs)
    with pytest.raises(ConfigurationError, match="app"):
        ResilienceMiddleware(None)  # type: ignore[arg-type]
    from buttress import Hedge, Retry

    for strategy in (Retry(on=Exception), Hedge(delay=0.1)):
        with pytest.raises(ConfigurationError, match="twice"):
            ResilienceMiddleware(app, pipeline=Pipeline(strategy))
    assert json.loads("{}") == {}


def test_real_rate_limiter_per_client_answers_429_with_retry_after() -> None:
    from buttress import RateLimiter
    from buttress.testing import ManualClock

    clock = ManualClock()
    app = Recorder(status=200)
    limiter = RateLimiter(0.5, 2, key=by_client)  # one request per 2 s, burst 2
    mw = ResilienceMiddleware(app, pipeline=Pipeline(limiter, clock=clock))

    async def main() -> list[httpx.Response]:
        a = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=mw, client=("10.0.0.1", 1)), base_url="http://x"
        )
        b = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=mw, client=("10.0.0.2", 1)), base_url="http://x"
        )
        async with a, b:
            out = [await a.get("/") for _ in range(3)]
            out.append(await b.get("/"))  # another client has its own bucket
            clock.advance(2.0)
            out.append(await a.get("/"))
            return out

    responses = run(main())
    assert [r.status_code for r in responses] == [200, 200, 429, 200, 200]
    assert responses[2].headers["retry-after"] == "2"
    assert len(app.runs) == 4
