"""ResilientTransport / AsyncResilientTransport on httpx.MockTransport with a ManualClock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("httpx")

import httpx

from buttress import (
    ConfigurationError,
    Pipeline,
    Retry,
    Timeout,
    TimeoutRejectedError,
    backoff,
    scope,
)
from buttress.events import RetryScheduled
from buttress.integrations.httpx import (
    DEADLINE_HEADER,
    AsyncResilientTransport,
    RequestNotRetryableError,
    ResilientTransport,
    parse_retry_after,
    retryable,
)
from buttress.testing import ManualClock, RecordingListener

Handler = Callable[[Any], Any]


class Server:
    """A scripted MockTransport: each request pops the next reply (a response or an error)."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.requests: list[Any] = []
        self.closed = 0

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        request.read()
        reply = self.replies.pop(0) if self.replies else httpx.Response(200, text="ok")
        if isinstance(reply, Exception):
            raise reply
        return reply


def client(
    server: Server,
    clock: ManualClock,
    *strategies: Any,
    events: RecordingListener | None = None,
    **kwargs: Any,
) -> Any:
    if not strategies:
        strategies = (
            Retry(on=retryable(), attempts=3, backoff=backoff.constant(0.5), budget=None),
        )
    pipeline = Pipeline(
        *strategies, name="http", clock=clock, listeners=[events] if events is not None else []
    )
    transport = ResilientTransport(pipeline, transport=httpx.MockTransport(server), **kwargs)
    return httpx.Client(transport=transport, base_url="http://test")


def test_503_then_200_is_retried_and_first_response_closed(clock: ManualClock) -> None:
    first = httpx.Response(503, text="busy")
    server = Server(first, httpx.Response(200, text="ok"))
    with client(server, clock) as c:
        response = c.get("/x")
    assert response.status_code == 200
    assert response.text == "ok"
    assert len(server.requests) == 2
    assert first.is_closed
    assert clock.now() == pytest.approx(0.5)


def test_retry_after_seconds_is_a_minimum_delay(
    clock: ManualClock, events: RecordingListener
) -> None:
    server = Server(httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200))
    with client(server, clock, events=events) as c:
        assert c.get("/").status_code == 200
    (scheduled,) = events.of_type(RetryScheduled)
    assert scheduled.server_delay == 7.0
    assert scheduled.delay == 7.0
    assert clock.now() == pytest.approx(7.0)


def test_retry_after_http_date(clock: ManualClock) -> None:
    fixed = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    date = format_datetime(fixed + timedelta(seconds=12), usegmt=True)
    server = Server(httpx.Response(503, headers={"Retry-After": date}), httpx.Response(200))
    retry = Retry(on=retryable(now=lambda: fixed), backoff=backoff.constant(0.1), budget=None)
    with client(server, clock, retry) as c:
        assert c.get("/").status_code == 200
    assert clock.now() == pytest.approx(12.0)


@pytest.mark.parametrize("value", ["soon", "-5", "1.5e3", "Wed, 99 Foo 2026", "", "12 seconds"])
def test_malformed_retry_after_falls_back_to_backoff(clock: ManualClock, value: str) -> None:
    server = Server(httpx.Response(503, headers={"Retry-After": value}), httpx.Response(200))
    with client(server, clock) as c:
        assert c.get("/").status_code == 200
    assert clock.now() == pytest.approx(0.5)


def test_retry_after_above_limit_makes_the_response_final(clock: ManualClock) -> None:
    server = Server(httpx.Response(503, headers={"Retry-After": "3600"}))
    with client(server, clock) as c:
        assert c.get("/").status_code == 503
    assert len(server.requests) == 1
    assert clock.now() == 0.0


def test_non_retryable_status_is_returned(clock: ManualClock) -> None:
    server = Server(httpx.Response(500))
    with client(server, clock) as c:
        assert c.get("/").status_code == 500
    assert len(server.requests) == 1


def test_post_without_key_is_not_retried(clock: ManualClock) -> None:
    server = Server(httpx.Response(503), httpx.Response(200))
    with client(server, clock) as c:
        assert c.post("/pay", content=b"{}").status_code == 503
    assert len(server.requests) == 1


def test_post_with_key_is_retried_with_same_key(clock: ManualClock) -> None:
    server = Server(httpx.Response(503), httpx.Response(200))
    with client(server, clock) as c:
        r = c.post("/pay", content=b"{}", headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 200
    assert [q.headers["idempotency-key"] for q in server.requests] == ["k-1", "k-1"]


def test_added_key_is_the_context_key_on_every_attempt(clock: ManualClock) -> None:
    server = Server(httpx.Response(502), httpx.Response(504), httpx.Response(201))
    with client(server, clock, add_idempotency_key=True) as c:
        with scope(idempotency_key="order-42"):
            assert c.patch("/o", content=b"a").status_code == 201
        assert c.post("/o", content=b"b").status_code == 200
    keys = [q.headers["idempotency-key"] for q in server.requests]
    assert keys[:3] == ["order-42"] * 3
    assert len(keys[3]) == 32
    assert keys[3] != "order-42"


def test_post_connect_error_is_retried_but_read_timeout_is_not(clock: ManualClock) -> None:
    server = Server(httpx.ConnectError("refused"), httpx.Response(200))
    with client(server, clock) as c:
        assert c.post("/p", content=b"x").status_code == 200
        server.replies = [httpx.ReadTimeout("slow"), httpx.Response(200)]
        with pytest.raises(httpx.ReadTimeout) as info:
            c.post("/p", content=b"x")
    assert len(server.requests) == 3
    assert any("Idempotency-Key" in note for note in info.value.__notes__)


def test_get_read_timeout_is_retried(clock: ManualClock) -> None:
    server = Server(httpx.ReadTimeout("slow"), httpx.Response(200))
    with client(server, clock) as c:
        assert c.get("/").status_code == 200


def _stream() -> Iterator[bytes]:
    yield b"chunk"


def test_streaming_body_is_not_retried(clock: ManualClock) -> None:
    server = Server(httpx.ReadTimeout("slow"))
    with client(server, clock) as c:
        with pytest.raises(httpx.ReadTimeout) as info:
            c.put("/upload", content=_stream())
    assert len(server.requests) == 1
    assert any("stream" in note for note in info.value.__notes__)


def test_naive_retry_cannot_resend_a_stream(clock: ManualClock) -> None:
    server = Server(httpx.ReadTimeout("slow"), httpx.Response(200))
    naive = Retry(on=httpx.ReadTimeout, backoff=backoff.constant(0.1), budget=None)
    with client(server, clock, naive) as c:
        with pytest.raises(RequestNotRetryableError, match="stream") as info:
            c.put("/upload", content=_stream())
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert len(server.requests) == 1


def test_timeouts_shrink_to_remaining_deadline_and_header_is_sent(clock: ManualClock) -> None:
    seen: list[tuple[float, str]] = []

    def handler(request: Any) -> Any:
        seen.append((request.extensions["timeout"]["read"], request.headers[DEADLINE_HEADER]))
        clock.advance(1.5)
        return httpx.Response(503 if len(seen) == 1 else 200)

    pipeline = Pipeline(
        Timeout(4.0),
        Retry(on=retryable(), backoff=backoff.constant(0.5), budget=None),
        clock=clock,
    )
    transport = ResilientTransport(pipeline, transport=httpx.MockTransport(handler))
    with httpx.Client(transport=transport, timeout=10.0) as c:
        assert c.get("http://t/").status_code == 200
    assert seen == [(4.0, "4000"), (2.0, "2000")]


def test_deadline_passed_means_no_request(clock: ManualClock) -> None:
    server = Server()
    with client(server, clock, Timeout(1.0)) as c:
        # a nested scope whose deadline already passed: the transport refuses to send
        with scope(timeout=0.001, clock=clock):
            clock.advance(0.01)
            with pytest.raises(TimeoutRejectedError, match="deadline passed"):
                c.get("/")
    assert server.requests == []


def test_no_deadline_no_header(clock: ManualClock) -> None:
    server = Server()
    with client(server, clock) as c:
        c.get("/")
    assert DEADLINE_HEADER.lower() not in server.requests[0].headers
    assert server.requests[0].extensions["timeout"]["read"] == 5.0


def test_default_pipeline_retries(clock: ManualClock) -> None:
    server = Server(httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(200))
    transport = ResilientTransport(transport=httpx.MockTransport(server))
    with httpx.Client(transport=transport) as c:
        assert c.get("http://t/").status_code == 200
    assert transport.pipeline.name == "httpx"


def test_async_transport(clock: ManualClock) -> None:
    calls: list[Any] = []

    async def handler(request: Any) -> Any:
        calls.append(request)
        await request.aread()
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "3"})
        if len(calls) == 2:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, text="async ok")

    pipeline = Pipeline(
        Retry(on=retryable(), attempts=4, backoff=backoff.constant(0.25), budget=None),
        clock=clock,
    )
    transport = AsyncResilientTransport(
        pipeline, transport=httpx.MockTransport(handler), add_idempotency_key=True
    )

    async def main() -> Any:
        async with httpx.AsyncClient(transport=transport) as c:
            return await c.post("http://t/", content=b"x")

    response = asyncio.run(main())
    assert response.text == "async ok"
    assert clock.now() == pytest.approx(3.25)
    assert len({r.headers["idempotency-key"] for r in calls}) == 1


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Sun, 01 Mar 2026 00:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sat, 28 Feb 2026 00:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("Sun, 01 Mar 2026 00:00:30", now=now) is None  # no zone
    assert parse_retry_after("-1") is None


@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert result is None or result >= 0.0


def test_invalid_configuration() -> None:
    with pytest.raises(ConfigurationError, match="statuses"):
        retryable(statuses=[700])
    with pytest.raises(ConfigurationError, match="max_retry_after"):
        retryable(max_retry_after=-1)
    with pytest.raises(ConfigurationError, match="exceptions"):
        retryable(exceptions=[ValueError])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="pipeline"):
        ResilientTransport("nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="transport"):
        ResilientTransport(transport=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="deadline_header"):
        AsyncResilientTransport(deadline_header="")


def test_async_transport_under_trio(clock: ManualClock) -> None:
    trio = pytest.importorskip("trio")
    calls: list[Any] = []

    async def handler(request: Any) -> Any:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "2"})
        return httpx.Response(200, text="trio ok")

    pipeline = Pipeline(
        Retry(on=retryable(), backoff=backoff.constant(0.25), budget=None), clock=clock
    )
    transport = AsyncResilientTransport(pipeline, transport=httpx.MockTransport(handler))

    async def main() -> Any:
        async with httpx.AsyncClient(transport=transport) as c:
            return await c.get("http://t/")

    response = trio.run(main)
    assert response.text == "trio ok"
    assert clock.now() == pytest.approx(2.0)
