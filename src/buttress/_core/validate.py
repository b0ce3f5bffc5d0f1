"""Validation helpers shared by every spec: durations, ratios, counts.

Every helper raises `ConfigurationError` naming the owner, the parameter, the value and
the valid range, so a bad setting fails at construction and never during a call.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from .._exceptions import ConfigurationError

__all__ = ["Duration", "check_count", "check_duration", "check_optional_duration", "check_ratio"]

Duration = float | int | timedelta
"""A duration: float seconds or a `datetime.timedelta`."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def check_duration(
    owner: str,
    name: str,
    value: Any,
    *,
    minimum: float = 0.0,
    strictly_positive: bool = False,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` in seconds, or raise `ConfigurationError`.

    Args:
        owner: Name of the spec for the message (``"Retry"``).
        name: Parameter name.
        value: Float seconds or `timedelta`.
        minimum: Smallest valid value in seconds (default 0).
        strictly_positive: Reject exactly ``minimum``.
        allow_inf: Accept ``math.inf``.

    Raises:
        ConfigurationError: Wrong type, NaN, infinite (unless allowed) or out of range.
    """
    seconds = _number(value)
    bound = f"> {minimum:g}" if strictly_positive else f">= {minimum:g}"
    expected = f"a duration in seconds (float or timedelta) {bound}"
    if seconds is None or math.isnan(seconds):
        raise ConfigurationError.invalid(owner, name, value, expected)
    if math.isinf(seconds) and not (allow_inf and seconds > 0):
        raise ConfigurationError.invalid(owner, name, value, expected + ", finite")
    if seconds < minimum or (strictly_positive and seconds == minimum):
        raise ConfigurationError.invalid(owner, name, value, expected)
    return seconds


def check_optional_duration(
    owner: str, name: str, value: Any, *, strictly_positive: bool = False
) -> float | None:
    """Like `check_duration`, but ``None`` passes through (it means "no limit")."""
    if value is None:
        return None
    return check_duration(owner, name, value, strictly_positive=strictly_positive)


def check_ratio(
    owner: str, name: str, value: Any, *, low_open: bool = False, high_open: bool = False
) -> float:
    """Return ``value`` as a float ratio in 0..1, or raise `ConfigurationError`."""
    number = _number(value) if not isinstance(value, timedelta) else None
    lo = "(0" if low_open else "[0"
    hi = "1)" if high_open else "1]"
    expected = f"a ratio in {lo}, {hi}"
    if number is None or math.isnan(number):
        raise ConfigurationError.invalid(owner, name, value, expected)
    if number < 0 or number > 1 or (low_open and number == 0) or (high_open and number == 1):
        raise ConfigurationError.invalid(owner, name, value, expected)
    return number


def check_count(owner: str, name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum``, or raise `ConfigurationError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError.invalid(owner, name, value, f"an int >= {minimum}")
    return value


def check_positive_number(owner: str, name: str, value: Any) -> float:
    """Return ``value`` as a finite float > 0, or raise `ConfigurationError`."""
    number = _number(value) if not isinstance(value, timedelta) else None
    if number is None or math.isnan(number) or math.isinf(number) or number <= 0:
        raise ConfigurationError.invalid(owner, name, value, "a finite number > 0")
    return number
