"""Telemetry listeners. The logging listener needs nothing; other adapters are extras."""

from __future__ import annotations

from .logging import LoggingListener

__all__ = ["LoggingListener"]
