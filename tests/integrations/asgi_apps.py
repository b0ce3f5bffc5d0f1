"""Small raw ASGI apps and helpers shared by the ASGI tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from buttress import current_context

Scope = dict[str, Any]


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def send_json(send: Any, status: int, data: Any, headers: list[Any] | None = None) -> None:
    payload = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


class Recorder:
    """An ASGI app that records each execution; behaviour scripted per test."""

    def __init__(
        self,
        status: int | list[int] = 201,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
        fail: int = 0,
    ) -> None:
        self.statuses = status if isinstance(status, list) else None
        self.status = status if isinstance(status, int) else 201
        self.delay = delay
        self.gate = gate
        self.fail = fail
        self.runs: list[bytes] = []
        self.remaining: list[float | None] = []
        self.started = asyncio.Event() if gate is not None else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        self.runs.append(body)
        ctx = current_context()
        self.remaining.append(ctx.remaining() if ctx is not None else None)
        if self.started is not None:
            self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("app crashed")
        status = self.statuses.pop(0) if self.statuses else self.status
        await send_json(send, status, {"run": len(self.runs), "body": body.decode()})
