"""Real mode's HTTP dependency (`buttress.lab.real`): live servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from buttress.lab.model import Counters
from buttress.lab.real import _Dependency
from buttress.lab.scenario import parse_scenario

ONE_WORKER = {
    "scenario": {"name": "one-worker", "duration": 5.0},
    "dependency": {
        "workers": 1,
        "queue": 5,
        "service": {"distribution": "constant", "value": 0.2},
    },
    "load": {"rate": 10.0},
    "client": {"timeout": 1.0},
    "pipelines": {"none": {"baseline": "no-retry"}},
}


async def _send(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /call?key=0 HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    return reader, writer


@pytest.mark.realtime
async def test_stopping_with_queued_requests_reports_no_loop_errors() -> None:
    # Regression: stop() released the queued requests without taking them off the queue,
    # so each worker finishing afterwards handed its slot to an already released request
    # (InvalidStateError, logged ~100 times at the end of every stormy run).
    scenario = parse_scenario(ONE_WORKER)
    dep = _Dependency(scenario, 0, Counters(scenario.duration), 1.0)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        await dep.start()
        dep.t0 = loop.time()
        port = dep.replicas[0].port
        conns = [await _send(port) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert dep.replicas[0].busy == 1
        assert len(dep.replicas[0].queue) == 3
        await dep.stop()
        await asyncio.sleep(0.3)  # the worker's service time ends after the stop
        for _, writer in conns:
            writer.close()
    finally:
        loop.set_exception_handler(None)
    assert errors == []
