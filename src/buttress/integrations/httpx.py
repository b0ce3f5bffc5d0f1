"""httpx transports that send every request through a buttress `Pipeline`.

Use with any ``httpx.Client`` / ``httpx.AsyncClient``::

    import httpx
    from buttress import Pipeline, Retry, Timeout
    from buttress.integrations.httpx import ResilientTransport, retryable

    pipeline = Pipeline(Timeout(10.0), Retry(on=retryable(), attempts=4), name="billing")
    client = httpx.Client(transport=ResilientTransport(pipeline))

What the transport does on every request:

* **Classification** (`retryable`): connect errors, pool and read timeouts, and responses
  429, 502, 503, 504 are failures a `Retry` may retry (both sets configurable).
* **Retry-After** on a failure response is parsed (delay-seconds or HTTP-date, RFC 9110
  section 10.2.3) and returned by the predicate as a minimum delay, so the `Retry` waits at
  least that long. A malformed value is ignored (the backoff applies); a value above
  ``max_retry_after`` makes the response final (returned to the caller, not retried).
* **Idempotency**: requests with a method outside ``idempotent_methods`` (POST, PATCH by
  default) are retried only when they carry an ``Idempotency-Key`` header, or when the
  transport was built with ``add_idempotency_key=True``: it then adds the context's
  `Context.idempotency_key` (identical on every attempt; set your own with
  ``buttress.scope(idempotency_key=...)``), per the IETF draft "The Idempotency-Key HTTP
  Header Field". Connect errors and pool timeouts (the request provably never left) are
  retryable for every method.
* **Deadlines**: each attempt's httpx timeouts (connect, read, write, pool) shrink to the
  time left until the context deadline (a `Timeout` around the retry, an outer pipeline or a
  `buttress.scope`); when none is left the attempt is not sent and `TimeoutRejectedError` is
  raised. The time left is sent downstream in the header `DEADLINE_HEADER`
  (``X-Buttress-Deadline-Ms``: milliseconds remaining when the request left, an integer; the
  buttress ASGI middleware reads it), so the next service can honour it.
* **Streaming bodies** cannot be replayed: such requests are never retried; the predicate
  declines and adds a note to the exception, and if a `Retry` built with a bare exception type
  tries anyway, the second attempt raises `RequestNotRetryableError`.
* Responses that are about to be retried are closed before the next attempt (the
  connection returns to the pool); the last response is returned unread, as usual.

Needs ``httpx`` (``pip install 'buttress[httpx]'``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from .._core.context import CURRENT, DEADLINE, ENV, current_context
from .._core.handle import on_exception, on_result
from .._core.pipeline import Pipeline
from .._exceptions import ButtressError, ConfigurationError, TimeoutRejectedError

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "buttress.integrations.httpx needs httpx: pip install 'buttress[httpx]'"
    ) from exc

__all__ = [
    "DEADLINE_HEADER",
    "DEFAULT_EXCEPTIONS",
    "DEFAULT_STATUSES",
    "IDEMPOTENT_METHODS",
    "AsyncResilientTransport",
    "RequestNotRetryableError",
    "ResilientTransport",
    "parse_retry_after",
    "retryable",
]

DEADLINE_HEADER = "X-Buttress-Deadline-Ms"
"""Header carrying the caller's remaining time in whole milliseconds (relative, so the two
hosts' clocks need not agree)."""

DEFAULT_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
"""Response statuses treated as retryable failures by default."""

UNSENT_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
"""Errors raised before any byte of the request was sent: safe to retry for any method."""

DEFAULT_EXCEPTIONS: tuple[type[Exception], ...] = (*UNSENT_EXCEPTIONS, httpx.ReadTimeout)
"""Exceptions treated as retryable failures by default."""

IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods retried without an idempotency key (RFC 9110 section 9.2.2)."""

_SAFE = "buttress.retry_safe"  # request extensions set by the transports
_REPLAYABLE = "buttress.replayable"
_DELAY_SECONDS = re.compile(r"^\s*([0-9]+)\s*$")


class RequestNotRetryableError(ButtressError):
    """A `Retry` tried to resend a request that must not be sent twice.

    Raised on the second attempt of a request with a streaming (non-replayable) body, or of
    a non-idempotent request without an idempotency key after it may have reached the
    server. Use ``Retry(on=retryable())`` so such requests are not retried at all. The
    previous attempt's exception, if any, is chained as ``__cause__``.
    """


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value, or ``None`` if absent or malformed.

    Accepts delay-seconds (``"120"``) and an HTTP-date (``"Wed, 21 Oct 2026 07:28:00 GMT"``);
    a date in the past gives ``0.0``.

    Args:
        value: The header value.
        now: Current wall-clock time (aware datetime) for HTTP-dates; default
            ``datetime.now(UTC)``.
    """
    if value is None:
        return None
    match = _DELAY_SECONDS.match(value)
    if match:
        return float(match.group(1))
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # RFC 9110 HTTP-dates are always GMT; anything else is malformed
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _request_of(obj: Any) -> httpx.Request | None:
    try:
        request = obj.request
    except (RuntimeError, AttributeError):
        return None
    return request if isinstance(request, httpx.Request) else None


def _replayable(request: httpx.Request) -> bool:
    recorded = request.extensions.get(_REPLAYABLE)
    if recorded is not None:  # decided before the first attempt consumed any stream
        return bool(recorded)
    try:
        request.content  # noqa: B018 - raises when the body is an unread stream
    except httpx.RequestNotRead:
        return False
    return True


def _safe(request: httpx.Request | None, idempotent_methods: Collection[str]) -> bool:
    if request is None:
        return False
    flag = request.extensions.get(_SAFE)
    if flag is not None:
        return bool(flag)
    if not _replayable(request):
        return False
    return request.method in idempotent_methods or "idempotency-key" in request.headers


def retryable(
    *,
    statuses: Iterable[int] = DEFAULT_STATUSES,
    exceptions: tuple[type[Exception], ...] = DEFAULT_EXCEPTIONS,
    max_retry_after: float = 60.0,
    idempotent_methods: Iterable[str] = IDEMPOTENT_METHODS,
    now: Callable[[], datetime] | None = None,
) -> tuple[on_result, on_exception]:
    """The ``on=`` handle for a `Retry` around an httpx transport.

    Handles a response whose status is in ``statuses`` and an exception that is an
    instance of ``exceptions``, but only for requests that are safe to send again (see the
    module docs); errors in `UNSENT_EXCEPTIONS` are safe for every method. For a handled
    response with a valid ``Retry-After``, returns that many seconds as the minimum delay.

    Args:
        statuses: Retryable response status codes (default 429, 502, 503, 504).
        exceptions: Retryable exception types (default connect errors and timeouts, pool
            timeouts, read timeouts).
        max_retry_after: Seconds (default 60); a response asking to wait longer is final.
        idempotent_methods: Methods safe to retry without a key, for requests that did not
            go through a buttress transport (which decides and records it itself).
        now: Wall-clock source for HTTP-date values (default ``datetime.now(UTC)``).

    Raises:
        ConfigurationError: An invalid status, exception type or ``max_retry_after``.
    """
    codes = frozenset(statuses)
    for code in codes:
        if not isinstance(code, int) or not 100 <= code <= 599:
            raise ConfigurationError.invalid("retryable", "statuses", code, "HTTP status codes")
    if not isinstance(exceptions, tuple) or not all(
        isinstance(t, type) and issubclass(t, Exception) for t in exceptions
    ):
        raise ConfigurationError.invalid(
            "retryable", "exceptions", exceptions, "a tuple of Exception subclasses"
        )
    if not isinstance(max_retry_after, (int, float)) or not max_retry_after >= 0:
        raise ConfigurationError.invalid(
            "retryable", "max_retry_after", max_retry_after, "seconds >= 0"
        )
    methods = frozenset(m.upper() for m in idempotent_methods)
    limit = float(max_retry_after)

    def on_response(response: Any) -> float | bool:
        if not isinstance(response, httpx.Response) or response.status_code not in codes:
            return False
        if not _safe(_request_of(response), methods):
            return False
        delay = parse_retry_after(
            response.headers.get("retry-after"), now=now() if now is not None else None
        )
        if delay is None:
            return True
        if delay > limit:
            return False
        return delay

    def on_error(exc: Exception) -> bool:
        if not isinstance(exc, exceptions):
            return False
        request = _request_of(exc)
        if request is not None and not _replayable(request):
            exc.add_note(
                "buttress: not retried: the request body is a stream and cannot be replayed"
            )
            return False
        if isinstance(exc, UNSENT_EXCEPTIONS):
            return True
        if _safe(request, methods):
            return True
        exc.add_note(
            "buttress: not retried: non-idempotent request without an Idempotency-Key "
            "(add the header or use add_idempotency_key=True)"
        )
        return False

    return on_result(on_response), on_exception(on_error)


def _outcome_unsent(exc: BaseException | None) -> bool:
    return isinstance(exc, UNSENT_EXCEPTIONS)


class _Base:
    """Configuration and per-attempt preparation shared by both transports."""

    def __init__(
        self,
        pipeline: Pipeline | None,
        *,
        idempotent_methods: Iterable[str],
        add_idempotency_key: bool,
        idempotency_header: str,
        deadline_header: str | None,
        owner: str,
    ) -> None:
        if pipeline is None:
            from .._strategies.retry import Retry

            pipeline = Pipeline(Retry(on=retryable(), attempts=3), name="httpx")
        if not isinstance(pipeline, Pipeline):
            raise ConfigurationError.invalid(owner, "pipeline", pipeline, "a buttress.Pipeline")
        if not isinstance(idempotency_header, str) or not idempotency_header:
            raise ConfigurationError.invalid(
                owner, "idempotency_header", idempotency_header, "a header name"
            )
        if deadline_header is not None and (
            not isinstance(deadline_header, str) or not deadline_header
        ):
            raise ConfigurationError.invalid(
                owner, "deadline_header", deadline_header, "a header name or None"
            )
        self.pipeline = pipeline
        self.idempotent_methods = frozenset(m.upper() for m in idempotent_methods)
        self.add_idempotency_key = bool(add_idempotency_key)
        self.idempotency_header = idempotency_header
        self.deadline_header = deadline_header

    def _classify(self, request: httpx.Request) -> None:
        """Record once, before the first attempt, whether ``request`` may be resent."""
        replayable = request.extensions[_REPLAYABLE] = _replayable(request)
        if not replayable:
            request.extensions[_SAFE] = False
            return
        if request.method in self.idempotent_methods:
            request.extensions[_SAFE] = True
            return
        header = self.idempotency_header
        if header not in request.headers and self.add_idempotency_key:
            ctx = current_context()
            request.headers[header] = ctx.idempotency_key if ctx is not None else _fresh_key()
        request.extensions[_SAFE] = header in request.headers

    def _prepare(self, request: httpx.Request, state: list[Any]) -> None:
        """Before each attempt: guard replays, shrink timeouts, send the deadline.

        The caller closes the previous attempt's response (``state[2]``) first.
        """
        attempt = state[0] = state[0] + 1
        state[2] = None
        if (
            attempt > 1
            and not request.extensions.get(_SAFE)
            and not (_outcome_unsent(state[1]) and _replayable(request))
        ):
            raise RequestNotRetryableError(
                f"{request.method} {request.url}: not resent (attempt {attempt}): "
                + (
                    "the body is a stream and cannot be replayed"
                    if not _replayable(request)
                    else "non-idempotent request without an Idempotency-Key"
                )
                + "; use Retry(on=buttress.integrations.httpx.retryable())"
            ) from state[1]
        record = CURRENT.get()  # the transport's own pipeline execution
        deadline = record[DEADLINE] if record is not None else None
        if deadline is None:
            return
        remaining = deadline - float(record[ENV].clock.now())  # type: ignore[index]
        if remaining <= 0.0:
            raise TimeoutRejectedError(
                f"{request.method} {request.url}: deadline passed before attempt {attempt}",
                strategy="httpx",
                timeout=0.0,
            )
        timeouts = state[3]
        if timeouts is None:
            timeouts = state[3] = dict(request.extensions.get("timeout") or {})
        shrunk = {}
        for key in ("connect", "read", "write", "pool"):
            value = timeouts.get(key)
            shrunk[key] = remaining if value is None else min(float(value), remaining)
        request.extensions["timeout"] = shrunk
        if self.deadline_header is not None:
            request.headers[self.deadline_header] = str(max(0, math.floor(remaining * 1000)))


def _fresh_key() -> str:
    import uuid

    return uuid.uuid4().hex


class ResilientTransport(_Base, httpx.BaseTransport):
    """An ``httpx.BaseTransport`` sending each request through ``pipeline``.

    Args:
        pipeline: The `Pipeline` every request runs through; its `Retry` should use
            ``on=retryable()``. Default: ``Pipeline(Retry(on=retryable(), attempts=3),
            name="httpx")``.
        transport: The transport that really sends (default ``httpx.HTTPTransport()``).
        idempotent_methods: Methods retried without a key (default GET, HEAD, OPTIONS,
            TRACE, PUT, DELETE).
        add_idempotency_key: Add ``idempotency_header`` with the context's idempotency key
            to non-idempotent requests that lack it, making them retryable (default False).
        idempotency_header: Header name (default ``"Idempotency-Key"``).
        deadline_header: Header for the remaining milliseconds (default
            `DEADLINE_HEADER`); ``None`` sends nothing.

    Raises:
        ConfigurationError: ``pipeline`` is not a `Pipeline`, or a header name is empty.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        idempotent_methods: Iterable[str] = IDEMPOTENT_METHODS,
        add_idempotency_key: bool = False,
        idempotency_header: str = "Idempotency-Key",
        deadline_header: str | None = DEADLINE_HEADER,
    ) -> None:
        super().__init__(
            pipeline,
            idempotent_methods=idempotent_methods,
            add_idempotency_key=add_idempotency_key,
            idempotency_header=idempotency_header,
            deadline_header=deadline_header,
            owner="ResilientTransport",
        )
        self.transport = transport if transport is not None else httpx.HTTPTransport()
        if not isinstance(self.transport, httpx.BaseTransport):
            raise ConfigurationError.invalid(
                "ResilientTransport", "transport", transport, "an httpx.BaseTransport"
            )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # state: [attempt, last exception, last response, original timeouts]
        return self.pipeline.call(self._attempt, request, [0, None, None, None])

    def _attempt(self, request: httpx.Request, state: list[Any]) -> httpx.Response:
        if state[0] == 0:
            self._classify(request)
        previous = state[2]
        try:
            self._prepare(request, state)
        finally:
            if previous is not None:
                previous.close()  # about to be replaced by a retry: free the connection
        try:
            response = self.transport.handle_request(request)
        except httpx.RequestError as exc:
            exc.request = request
            state[1] = exc
            raise
        response.request = request
        state[1] = None
        state[2] = response
        return response

    def close(self) -> None:
        self.transport.close()


class AsyncResilientTransport(_Base, httpx.AsyncBaseTransport):
    """The asyncio/trio twin of `ResilientTransport` (same arguments).

    Args:
        pipeline: See `ResilientTransport`.
        transport: The sending transport (default ``httpx.AsyncHTTPTransport()``).
        idempotent_methods: See `ResilientTransport`.
        add_idempotency_key: See `ResilientTransport`.
        idempotency_header: See `ResilientTransport`.
        deadline_header: See `ResilientTransport`.

    Raises:
        ConfigurationError: As `ResilientTransport`.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        idempotent_methods: Iterable[str] = IDEMPOTENT_METHODS,
        add_idempotency_key: bool = False,
        idempotency_header: str = "Idempotency-Key",
        deadline_header: str | None = DEADLINE_HEADER,
    ) -> None:
        super().__init__(
            pipeline,
            idempotent_methods=idempotent_methods,
            add_idempotency_key=add_idempotency_key,
            idempotency_header=idempotency_header,
            deadline_header=deadline_header,
            owner="AsyncResilientTransport",
        )
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        if not isinstance(self.transport, httpx.AsyncBaseTransport):
            raise ConfigurationError.invalid(
                "AsyncResilientTransport", "transport", transport, "an httpx.AsyncBaseTransport"
            )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.pipeline.acall(self._attempt, request, [0, None, None, None])

    async def _attempt(self, request: httpx.Request, state: list[Any]) -> httpx.Response:
        if state[0] == 0:
            self._classify(request)
        previous = state[2]
        try:
            self._prepare(request, state)
        finally:
            if previous is not None:
                await previous.aclose()  # about to be replaced by a retry
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request
            state[1] = exc
            raise
        response.request = request
        state[1] = None
        state[2] = response
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()
