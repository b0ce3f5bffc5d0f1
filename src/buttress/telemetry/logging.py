"""`LoggingListener`: every event as one stdlib log record with structured ``extra``;
`JsonFormatter`: one JSON object per record, with the ``buttress_*`` fields as keys."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime
from typing import Any

from ..events import (
    CallRejected,
    CircuitStateChanged,
    Event,
    RetryBudgetExhausted,
    RetryGaveUp,
    StoreFailed,
    TimeoutExpired,
)

__all__ = ["JsonFormatter", "LoggingListener"]

_WARNING_TYPES: tuple[type[Event], ...] = (
    RetryGaveUp,
    RetryBudgetExhausted,
    CircuitStateChanged,
    StoreFailed,
)
_INFO_TYPES: tuple[type[Event], ...] = (TimeoutExpired, CallRejected)


class LoggingListener:
    """Log each event through stdlib `logging`.

    Each record's message is ``"buttress <kind> pipeline=<p> strategy=<s> k=v ..."`` and its
    ``extra`` holds ``buttress_event`` (the kind) plus every field prefixed ``buttress_``
    (e.g. ``record.buttress_delay``), so JSON formatters can emit them as fields.

    Args:
        logger: Logger or logger name (default ``"buttress"``).
        level: Level for routine events (default ``logging.DEBUG``). Give-ups, budget
            exhaustion, breaker transitions and store failures log at ``WARNING``;
            timeouts and rejections at ``INFO`` (never below ``level``).
    """

    __slots__ = ("level", "logger")

    def __init__(
        self, logger: logging.Logger | str = "buttress", level: int = logging.DEBUG
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level

    def __call__(self, event: Event) -> None:
        if isinstance(event, _WARNING_TYPES):
            level = max(self.level, logging.WARNING)
        elif isinstance(event, _INFO_TYPES):
            level = max(self.level, logging.INFO)
        else:
            level = self.level
        if not self.logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        extra = {f"buttress_{k}": v for k, v in fields.items()}
        extra["buttress_event"] = event.kind
        detail = " ".join(
            f"{k}={v!r}" for k, v in fields.items() if k not in ("pipeline", "strategy", "time")
        )
        self.logger.log(
            level,
            "buttress %s pipeline=%s strategy=%s %s",
            event.kind,
            event.pipeline,
            event.strategy,
            detail,
            extra=extra,
        )


_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format log records as one JSON object per line.

    Keys: ``time`` (ISO 8601 UTC wall time of the record), ``level``, ``logger``,
    ``message``, then every ``extra`` field. Fields written by `LoggingListener` lose their
    ``buttress_`` prefix and ``buttress_event`` becomes ``event`` (for example
    ``{"event": "retry.scheduled", "pipeline": "inventory", "delay": 0.2, ...}``); ``time``
    of the event itself (the monotonic pipeline clock) is emitted as ``clock``. Values that
    are not JSON types are written with ``str()``. Exceptions go to ``exc_info`` as text.

    Example:
        >>> handler = logging.StreamHandler()
        >>> handler.setFormatter(JsonFormatter())
        >>> logging.getLogger("buttress").addHandler(handler)
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_FIELDS:
                continue
            if key.startswith("buttress_"):
                key = key[len("buttress_") :]
                if key == "time":
                    key = "clock"
            out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
