"""`ResilienceMiddleware`: server-side resilience for any ASGI application.

Wrap an app (Starlette, FastAPI, Django's ASGI handler, a bare ASGI callable)::

    from buttress import Bulkhead, Pipeline
    from buttress.integrations.asgi import ResilienceMiddleware, by_client
    from buttress.integrations.idempotency import SQLiteIdempotencyStore

    app = ResilienceMiddleware(
        app,
        pipeline=Pipeline(Bulkhead(64, max_queued=128), name="api"),
        timeout=10.0,
        idempotency=SQLiteIdempotencyStore("idempotency.sqlite3"),
    )

Per HTTP request (other ASGI scopes such as websockets and lifespan pass through):

1. **Deadline**: the incoming ``X-Buttress-Deadline-Ms`` header (see
   `buttress.integrations.httpx.DEADLINE_HEADER`) and the ``timeout`` option give the
   request's deadline (the earlier one). A request whose deadline already passed is answered
   ``504`` without running the app. The app runs inside ``buttress.scope(timeout=...)``, so
   nested calls through the httpx transport shrink their timeouts to it and forward the
   remaining time; when the deadline passes, the app is cancelled and ``503`` is sent (if
   the response has not started).
2. **Idempotency keys** (with an ``idempotency`` store, for ``idempotency_methods``): see
   `buttress.integrations.idempotency`. Replays carry ``Idempotent-Replayed: true``.
   ``400`` for an empty, oversized or malformed key; ``409`` while the first request with the
   key still runs; ``422`` when the key is reused with a different request; ``413`` when the
   body exceeds ``max_body`` (the body must be read to fingerprint it). Responses with status
   below 500 are stored for ``ttl`` seconds; a 5xx response, an exception or a rejection
   releases the key, so the client's retry runs the request again.
3. **Load shedding**: the app runs through ``pipeline`` (e.g. `Bulkhead`, `RateLimiter`,
   `CircuitBreaker`). A rejection becomes ``429`` (`RateLimitedError`) or ``503`` (any other
   `RejectedError`, including timeouts) with ``Retry-After`` = the rejection's
   ``retry_after`` rounded up to whole seconds, when known.

Per-key limits read the request from the context: `by_client`, `by_route`, `by_tenant`
are ready-made ``key=`` functions for `Bulkhead`/`RateLimiter`, and `REQUEST` is the
context key holding the `RequestInfo`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.context import Context, Key, scope
from .._core.env import Env
from .._core.pipeline import Pipeline
from .._exceptions import ConfigurationError, RateLimitedError, RejectedError, TimeoutRejectedError
from ..events import CallRejected
from .idempotency import IdempotencyStore, StoredResponse

__all__ = [
    "DEADLINE_HEADER",
    "REQUEST",
    "RequestInfo",
    "ResilienceMiddleware",
    "by_client",
    "by_route",
    "by_tenant",
    "request_fingerprint",
]

DEADLINE_HEADER = "X-Buttress-Deadline-Ms"
"""Incoming header with the caller's remaining milliseconds (same as the httpx transport)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The request as seen by key functions (``current_context().get(REQUEST)``).

    Attributes:
        method: HTTP method, upper case.
        path: URL path.
        client: Client host (``scope["client"][0]``), or ``""`` when unknown.
        headers: Header names (lower case) to their first value (latin-1 decoded).
    """

    method: str
    path: str
    client: str
    headers: dict[str, str] = field(default_factory=dict)


REQUEST: Key[RequestInfo] = Key("buttress.asgi.request")
"""Context key of the current request's `RequestInfo`."""


def _info(ctx: Context) -> RequestInfo:
    info = ctx.get(REQUEST, None)
    return info if info is not None else RequestInfo("", "", "")


def by_client(ctx: Context) -> str:
    """``key=`` function: one partition per client host."""
    return _info(ctx).client


def by_route(ctx: Context) -> str:
    """``key=`` function: one partition per method and path (``"GET /items"``)."""
    info = _info(ctx)
    return f"{info.method} {info.path}"


def by_tenant(header: str = "x-tenant-id", default: str = "") -> Callable[[Context], str]:
    """A ``key=`` function: one partition per value of ``header`` (``default`` if absent)."""
    name = header.lower()

    def key(ctx: Context) -> str:
        return _info(ctx).headers.get(name, default)

    return key


def request_fingerprint(method: str, path: str, query_string: bytes, body: bytes) -> str:
    """The fingerprint stored with an idempotency key: SHA-256 (hex) of method, path, raw
    query string and body. Headers are not part of it."""
    digest = hashlib.sha256()
    digest.update(method.upper().encode("ascii", "replace") + b"\0")
    digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(bytes(query_string) + b"\0")
    digest.update(body)
    return digest.hexdigest()


def _valid_key(raw: str, max_length: int) -> str | None:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]  # RFC 8941 sf-string form, as in the IETF draft's examples
    if not 1 <= len(value) <= max_length:
        return None
    if any(not (0x20 <= ord(ch) <= 0x7E) or ch in '"\\' for ch in value):
        return None
    return value


def _parse_ms(raw: str) -> float | None:
    value = raw.strip()
    if value.startswith("-") and value[1:].isdigit():
        return -float(value[1:]) / 1000.0
    if not value.isdigit():
        return None
    return float(value) / 1000.0


class _BodyTooLarge(Exception):
    pass


class ResilienceMiddleware:
    """ASGI middleware: deadlines, idempotency keys and load shedding (see module docs).

    Args:
        app: The ASGI application.
        pipeline: Strategies the app runs through (e.g. ``Pipeline(Bulkhead(64),
            RateLimiter(100, 200, key=by_client))``); ``None`` runs the app directly. A
            `Retry` or `Hedge` is refused: the app cannot be run twice on one request.
        timeout: Server-side limit per request in seconds (> 0), or ``None`` (default) for
            none besides the incoming deadline.
        honour_deadline_header: Read ``deadline_header`` from requests (default True).
        deadline_header: Incoming deadline header name (default `DEADLINE_HEADER`).
        idempotency: An `IdempotencyStore`, or ``None`` (default) to ignore keys.
        idempotency_methods: Methods whose keys are honoured (default POST and PATCH).
        idempotency_header: Header name (default ``"Idempotency-Key"``).
        max_key_length: Longest accepted key in characters (default 255).
        ttl: Seconds a completed response is replayed (default 86,400: one day).
        lease: Seconds a running request holds its key before a repeat may run it again
            (crash recovery); default ``max(60, 2 * timeout)``. Choose it above the longest
            processing time, or a slow first request may run twice.
        max_body: Largest request body, in bytes, read for fingerprinting (default 1 MiB).
        clock: Clock for deadlines (default the system clock; must be the pipeline's).

    Raises:
        ConfigurationError: Any invalid option.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        pipeline: Pipeline | None = None,
        timeout: float | None = None,
        honour_deadline_header: bool = True,
        deadline_header: str = DEADLINE_HEADER,
        idempotency: IdempotencyStore | None = None,
        idempotency_methods: Iterable[str] = ("POST", "PATCH"),
        idempotency_header: str = "Idempotency-Key",
        max_key_length: int = 255,
        ttl: float = 86_400.0,
        lease: float | None = None,
        max_body: int = 1 << 20,
        clock: Clock | None = None,
    ) -> None:
        owner = "ResilienceMiddleware"
        if not callable(app):
            raise ConfigurationError.invalid(owner, "app", app, "an ASGI application")
        if pipeline is not None and not isinstance(pipeline, Pipeline):
            raise ConfigurationError.invalid(owner, "pipeline", pipeline, "a buttress.Pipeline")
        if pipeline is not None:
            from .._strategies.hedge import Hedge
            from .._strategies.retry import Retry

            for strategy in pipeline.strategies:
                if isinstance(strategy, (Retry, Hedge)):
                    raise ConfigurationError.invalid(
                        owner,
                        "pipeline",
                        pipeline,
                        "server-side strategies only (Bulkhead, RateLimiter, CircuitBreaker, "
                        "Timeout, Fallback): a Retry or Hedge would run the ASGI app twice "
                        "on one request stream",
                    )
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
        ):
            raise ConfigurationError.invalid(owner, "timeout", timeout, "seconds > 0 or None")
        if idempotency is not None and not isinstance(idempotency, IdempotencyStore):
            raise ConfigurationError.invalid(
                owner, "idempotency", idempotency, "an IdempotencyStore or None"
            )
        if not isinstance(max_key_length, int) or max_key_length < 1:
            raise ConfigurationError.invalid(owner, "max_key_length", max_key_length, "int >= 1")
        for name, value in (("ttl", ttl), ("lease", lease)):
            if value is not None and (
                not isinstance(value, (int, float)) or not 0 < value < math.inf
            ):
                raise ConfigurationError.invalid(owner, name, value, "seconds > 0")
        if not isinstance(max_body, int) or max_body < 0:
            raise ConfigurationError.invalid(owner, "max_body", max_body, "bytes >= 0")
        for name, header in (
            ("deadline_header", deadline_header),
            ("idempotency_header", idempotency_header),
        ):
            if not isinstance(header, str) or not header:
                raise ConfigurationError.invalid(owner, name, header, "a header name")
        self.app = app
        self.pipeline = pipeline
        self.timeout = None if timeout is None else float(timeout)
        self.honour_deadline_header = bool(honour_deadline_header)
        self.deadline_header = deadline_header.lower()
        self.idempotency = idempotency
        self.idempotency_methods = frozenset(m.upper() for m in idempotency_methods)
        self.idempotency_header = idempotency_header.lower()
        self.max_key_length = max_key_length
        self.ttl = float(ttl)
        self.lease = float(lease) if lease is not None else max(60.0, 2 * (self.timeout or 0.0))
        self.max_body = max_body
        self.clock: Clock = (
            clock
            if clock is not None
            else (pipeline.clock if pipeline is not None else SYSTEM_CLOCK)
        )
        self._env = pipeline.env if pipeline is not None else Env("asgi", self.clock)

    # -- ASGI entry ---------------------------------------------------------------------------

    async def __call__(self, scope_: Scope, receive: Receive, send: Send) -> None:
        if scope_.get("type") != "http":
            await self.app(scope_, receive, send)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope_.get("headers") or ():
            name = raw_name.decode("latin-1").lower()
            if name not in headers:
                headers[name] = raw_value.decode("latin-1")
        method = str(scope_.get("method", "GET")).upper()
        path = str(scope_.get("path", ""))
        client = scope_.get("client")
        info = RequestInfo(method, path, str(client[0]) if client else "", headers)

        remaining = self.timeout
        if self.honour_deadline_header and self.deadline_header in headers:
            incoming = _parse_ms(headers[self.deadline_header])
            if incoming is not None:
                if incoming <= 0.0:
                    self._emit_rejected("deadline", None)
                    await _respond(send, 504, b"deadline exceeded before processing\n")
                    return
                remaining = incoming if remaining is None else min(remaining, incoming)

        store = self.idempotency
        key: str | None = None
        if store is not None and method in self.idempotency_methods:
            raw_key = headers.get(self.idempotency_header)
            if raw_key is not None:
                key = _valid_key(raw_key, self.max_key_length)
                if key is None:
                    await _respond(
                        send,
                        400,
                        f"malformed {self.idempotency_header}: 1..{self.max_key_length} "
                        "printable ASCII characters expected\n".encode(),
                    )
                    return
        if key is None or store is None:
            await self._run(scope_, receive, send, info, remaining, None)
            return

        try:
            body = await _read_body(receive, self.max_body)
        except _BodyTooLarge:
            await _respond(send, 413, b"request body too large for an idempotent request\n")
            return
        fingerprint = request_fingerprint(method, path, scope_.get("query_string", b""), body)
        begin = await store.begin(key, fingerprint, self.lease)
        if begin.state == "done" and begin.response is not None:
            await _replay(send, begin.response)
            return
        if begin.state == "mismatch":
            await _respond(send, 422, b"Idempotency-Key reused with a different request\n")
            return
        if begin.state != "started" or begin.token is None:
            await _respond(
                send,
                409,
                b"a request with this Idempotency-Key is still being processed\n",
                retry_after=1,
            )
            return
        token = begin.token
        replay_receive = _replaying(body, receive)
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        try:
            done = await self._run(scope_, replay_receive, capture, info, remaining, captured)
        except BaseException:
            await store.release(key, token)
            raise
        if not done:  # rejected: the rejection response is in `captured`
            await store.release(key, token)
        else:
            response = _assemble(captured)
            if response.status < 500:
                await store.complete(key, token, response, self.ttl)
            else:
                await store.release(key, token)
        for message in captured:
            await send(message)

    # -- running the app ------------------------------------------------------------------------

    async def _run(
        self,
        scope_: Scope,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        remaining: float | None,
        captured: list[Message] | None,
    ) -> bool:
        """Run the app; returns False when a rejection response was sent instead."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        with scope(
            operation_key=f"{info.method} {info.path}",
            timeout=remaining,
            properties={REQUEST: info},
            clock=self.clock,
        ) as ctx:
            try:
                await self._with_deadline(ctx.deadline, scope_, receive, tracking_send)
            except RejectedError as exc:
                if started and captured is None:
                    raise  # part of the response already left: nothing else can be sent
                if captured is not None:
                    captured.clear()
                status = 429 if isinstance(exc, RateLimitedError) else 503
                retry_after = (
                    None if exc.retry_after is None else max(1, math.ceil(exc.retry_after))
                )
                await _respond(send, status, f"{exc}\n".encode(), retry_after=retry_after)
                return False
        return True

    async def _with_deadline(
        self, deadline: float | None, scope_: Scope, receive: Receive, send: Send
    ) -> None:
        pipeline = self.pipeline
        app = self.app

        async def call() -> None:
            if pipeline is not None:
                await pipeline.acall(app, scope_, receive, send)
            else:
                await app(scope_, receive, send)

        if deadline is None:
            await call()
            return
        rt = self._env.async_runtime()
        handle = rt.enter_deadline(deadline)
        try:
            await call()
        except BaseException as exc:
            if rt.exit_deadline(handle, exc):
                self._emit_rejected("deadline", None)
                raise TimeoutRejectedError(
                    "request deadline passed", strategy="asgi", timeout=self.timeout or 0.0
                ) from exc
            raise
        rt.exit_deadline(handle, None)

    def _emit_rejected(self, reason: str, retry_after: float | None) -> None:
        env = self._env
        if env.listeners:
            env.emit(
                CallRejected(
                    pipeline=env.name,
                    strategy="asgi",
                    time=env.clock.now(),
                    reason=reason,
                    retry_after=retry_after,
                )
            )


# -- helpers -------------------------------------------------------------------------------------


async def _respond(send: Send, status: int, body: bytes, *, retry_after: int | None = None) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _replay(send: Send, response: StoredResponse) -> None:
    headers = [*response.headers, (b"idempotent-replayed", b"true")]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break  # client went away: process what arrived
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _assemble(messages: list[Message]) -> StoredResponse:
    status = 500
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body = bytearray()
    for message in messages:
        kind = message.get("type")
        if kind == "http.response.start":
            status = int(message["status"])
            headers = tuple((bytes(k), bytes(v)) for k, v in message.get("headers", ()))
        elif kind == "http.response.body":
            body += message.get("body", b"")
    return StoredResponse(status, headers, bytes(body))
