"""LoggingListener + JsonFormatter, StructlogListener."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from buttress import Pipeline, Retry, backoff
from buttress.telemetry import JsonFormatter, LoggingListener, instrument
from buttress.testing import ManualClock


def test_json_formatter_emits_event_fields(clock: ManualClock) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("buttress.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        pipeline = Pipeline(
            Retry(on=ConnectionError, backoff=backoff.constant(0.5), budget=None, attempts=2),
            name="json",
            clock=clock,
            listeners=[LoggingListener(logger)],
        )
        with pytest.raises(ConnectionError):
            pipeline.call(_raise)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    kinds = [line["event"] for line in lines]
    assert kinds == [
        "pipeline.started",
        "retry.attempt",
        "retry.scheduled",
        "retry.attempt",
        "retry.gave_up",
        "pipeline.completed",
    ]
    scheduled = lines[2]
    assert scheduled["pipeline"] == "json"
    assert scheduled["delay"] == 0.5
    assert scheduled["error_type"] == "ConnectionError"
    assert scheduled["level"] == "DEBUG"
    assert lines[4]["level"] == "WARNING"
    assert lines[4]["reason"] == "attempts"
    assert isinstance(scheduled["clock"], float)
    assert scheduled["time"].endswith("+00:00")


def _raise() -> None:
    raise ConnectionError("down")


def test_json_formatter_handles_plain_records_and_exceptions() -> None:
    record = logging.makeLogRecord(
        {"msg": "x %s", "args": (1,), "levelname": "INFO", "custom": object()}
    )
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "x 1"
    assert "ValueError: boom" in out["exc_info"]
    assert out["custom"].startswith("<object")


def test_structlog_listener_passes_fields(clock: ManualClock) -> None:
    structlog = pytest.importorskip("structlog")
    from buttress.telemetry import StructlogListener

    calls: list[tuple[str, str, dict[str, Any]]] = []

    class Capture:
        def __getattr__(self, level: str) -> Any:
            def log(event: str, **kw: Any) -> None:
                calls.append((level, event, kw))

            return log

    pipeline = Pipeline(
        Retry(on=ConnectionError, backoff=backoff.constant(0.1), budget=None, attempts=2),
        name="sl",
        clock=clock,
        listeners=[StructlogListener(Capture())],
    )
    with pytest.raises(ConnectionError):
        pipeline.call(_raise)
    assert [(lvl, name) for lvl, name, _ in calls] == [
        ("debug", "buttress.pipeline.started"),
        ("debug", "buttress.retry.attempt"),
        ("debug", "buttress.retry.scheduled"),
        ("debug", "buttress.retry.attempt"),
        ("warning", "buttress.retry.gave_up"),
        ("debug", "buttress.pipeline.completed"),
    ]
    assert calls[2][2]["delay"] == 0.1
    assert calls[2][2]["pipeline"] == "sl"

    # and with a real structlog logger, through structlog's capture helper
    with structlog.testing.capture_logs() as logs:
        instrumentation = instrument(structlog=True)
        try:
            Pipeline(name="real-sl", clock=clock).call(lambda: 1)
        finally:
            instrumentation.close()
    assert [entry["event"] for entry in logs] == [
        "buttress.pipeline.started",
        "buttress.pipeline.completed",
    ]
    assert logs[1]["outcome"] == "success"


def test_instrument_requires_a_choice() -> None:
    from buttress import ConfigurationError

    with pytest.raises(ConfigurationError, match="at least one"):
        instrument()
