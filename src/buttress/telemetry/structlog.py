"""`StructlogListener`: every event as one structlog log call with the event's fields."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..events import Event
from ._lazy import require
from .logging import _INFO_TYPES, _WARNING_TYPES

__all__ = ["StructlogListener"]

_RANK = {"debug": 0, "info": 1, "warning": 2}


class StructlogListener:
    """Log each event through structlog.

    The log call's event name is ``"buttress.<kind>"`` (e.g. ``"buttress.retry.scheduled"``)
    and its key-value pairs are the event's fields (``pipeline``, ``strategy``, ``delay``,
    ...; the event's monotonic ``time`` is passed as ``clock``).

    Args:
        logger: A structlog bound logger; default ``structlog.get_logger("buttress")``.
        level: Method for routine events: ``"debug"`` (default), ``"info"`` or
            ``"warning"``. Give-ups, budget exhaustion, breaker transitions and store
            failures use ``warning``; timeouts and rejections ``info`` (never below ``level``).

    Raises:
        ImportError: structlog is not installed and no ``logger`` was given.
        ValueError: Unknown ``level``.
    """

    __slots__ = ("level", "logger")

    def __init__(self, logger: Any = None, level: str = "debug") -> None:
        if level not in _RANK:
            raise ValueError(f"level must be 'debug', 'info' or 'warning', got {level!r}")
        if logger is None:
            logger = require("structlog", "structlog").get_logger("buttress")
        self.logger = logger
        self.level = level

    def __call__(self, event: Event) -> None:
        level = self.level
        if isinstance(event, _WARNING_TYPES):
            level = "warning"
        elif isinstance(event, _INFO_TYPES) and _RANK[level] < 1:
            level = "info"
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        fields["clock"] = fields.pop("time")
        getattr(self.logger, level)(f"buttress.{event.kind}", **fields)
