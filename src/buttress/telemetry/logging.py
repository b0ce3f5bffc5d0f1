"""`LoggingListener`: every event as one stdlib log record with structured ``extra``."""

from __future__ import annotations

import dataclasses
import logging
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

__all__ = ["LoggingListener"]

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
