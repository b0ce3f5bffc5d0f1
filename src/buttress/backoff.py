"""Backoff schedules: pure functions from the attempt number to a delay in seconds.

A schedule's ``delay(attempt, previous, rng)`` returns the seconds to wait after the
``attempt``-th failed attempt (1-based), given the previous delay (``0.0`` before the first
retry) and a `random.Random` to draw jitter from. Schedules never read a clock and never
sleep; the pipeline's random source makes them deterministic under a seed.

Jitter kinds (Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015):

* ``"none"``: ``d``;
* ``"full"``: ``uniform(0, d)``: the default; least total work under contention;
* ``"equal"``: ``d/2 + uniform(0, d/2)``;
* ``"decorrelated"``: ``min(cap, uniform(base, previous * 3))``, ignoring the attempt.

Every delay is clamped to ``[0, cap]`` after jitter, never overflows (the exponent is
bounded before it is computed, so attempt ``10**6`` is as cheap as attempt 2) and a zero
base gives zero delay.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ._core.validate import check_duration
from ._exceptions import ConfigurationError

__all__ = [
    "Backoff",
    "Jitter",
    "constant",
    "decorrelated",
    "exponential",
    "linear",
    "none",
]

Jitter = Literal["none", "full", "equal", "decorrelated"]
_JITTERS = ("none", "full", "equal", "decorrelated")


@runtime_checkable
class Backoff(Protocol):
    """A delay schedule (anything with this method can be passed as ``backoff=``)."""

    def delay(self, attempt: int, previous: float, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); >= 0."""
        ...


def _check_jitter(owner: str, jitter: Any) -> Jitter:
    if jitter not in _JITTERS:
        raise ConfigurationError.invalid(owner, "jitter", jitter, f"one of {', '.join(_JITTERS)}")
    return jitter  # type: ignore[no-any-return]


def _apply(
    jitter: str, d: float, base: float, cap: float, previous: float, rng: random.Random
) -> float:
    if jitter == "full":
        d = rng.random() * d
    elif jitter == "equal":
        d = d / 2 + rng.random() * (d / 2)
    elif jitter == "decorrelated":
        hi = max(base, previous * 3.0)
        d = base + rng.random() * (hi - base)
    if d > cap:
        return cap
    return d if d > 0.0 else 0.0


@dataclass(frozen=True, slots=True)
class _Constant:
    seconds: float
    jitter: Jitter

    def delay(self, attempt: int, previous: float, rng: random.Random) -> float:
        if self.jitter == "none":
            return self.seconds
        return _apply(self.jitter, self.seconds, self.seconds, self.seconds, previous, rng)


@dataclass(frozen=True, slots=True)
class _Linear:
    first: float
    step: float
    cap: float
    jitter: Jitter

    def delay(self, attempt: int, previous: float, rng: random.Random) -> float:
        # clamp the step count so int->float conversion never overflows
        steps = min(max(0, attempt - 1), 2**53)
        d = min(self.cap, self.first + self.step * steps)
        if self.jitter == "none":
            return d
        return _apply(self.jitter, d, self.first, self.cap, previous, rng)


@dataclass(frozen=True, slots=True)
class _Exponential:
    base: float
    multiplier: float
    cap: float
    jitter: Jitter
    max_exponent: int

    def delay(self, attempt: int, previous: float, rng: random.Random) -> float:
        if self.base == 0.0:
            return 0.0
        if self.jitter == "decorrelated":
            return _apply("decorrelated", 0.0, self.base, self.cap, previous, rng)
        exponent = attempt - 1
        if exponent >= self.max_exponent:
            d = self.cap
        else:
            try:
                d = min(self.cap, self.base * self.multiplier ** max(0, exponent))
            except OverflowError:  # subnormal base: the power alone can overflow
                d = self.cap
        if self.jitter == "none":
            return d
        return _apply(self.jitter, d, self.base, self.cap, previous, rng)


class _Function:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[int], float]) -> None:
        self.fn = fn

    def delay(self, attempt: int, previous: float, rng: random.Random) -> float:
        d = float(self.fn(attempt))
        return d if d > 0 else 0.0


def none() -> Backoff:
    """No delay at all between attempts (and no sleep call)."""
    return _Constant(0.0, "none")


def constant(delay: float = 1.0, *, jitter: Jitter = "none") -> Backoff:
    """The same ``delay`` (seconds, >= 0; default 1.0) after every attempt.

    Raises:
        ConfigurationError: ``delay`` negative/NaN, or an unknown ``jitter``.
    """
    seconds = check_duration("backoff.constant", "delay", delay)
    return _Constant(seconds, _check_jitter("backoff.constant", jitter))


def linear(
    first: float = 0.1, step: float | None = None, *, cap: float = 10.0, jitter: Jitter = "none"
) -> Backoff:
    """``min(cap, first + step * (attempt - 1))`` seconds.

    Args:
        first: Delay after the first attempt, seconds >= 0 (default 0.1).
        step: Increase per attempt, seconds >= 0; ``None`` means ``first``.
        cap: Upper bound in seconds, >= 0 (default 10.0).
        jitter: One of ``"none"`` (default), ``"full"``, ``"equal"``, ``"decorrelated"``.

    Raises:
        ConfigurationError: A negative/NaN duration or an unknown ``jitter``.
    """
    owner = "backoff.linear"
    f = check_duration(owner, "first", first)
    s = f if step is None else check_duration(owner, "step", step)
    c = check_duration(owner, "cap", cap)
    return _Linear(f, s, c, _check_jitter(owner, jitter))


def exponential(
    base: float = 0.1,
    multiplier: float = 2.0,
    *,
    cap: float = 10.0,
    jitter: Jitter = "full",
) -> Backoff:
    """Exponential backoff: ``min(cap, base * multiplier ** (attempt - 1))``, then jitter.

    The default (0.1 s doubling to a 10 s cap, full jitter) follows the AWS SDKs and gRPC.

    Args:
        base: Delay before jitter after the first attempt, seconds >= 0 (default 0.1).
            Zero means no delay at all.
        multiplier: Growth factor per attempt, >= 1 (default 2.0).
        cap: Largest delay in seconds, applied after jitter, finite, >= 0 (default 10.0).
        jitter: ``"full"`` (default), ``"equal"``, ``"none"`` or ``"decorrelated"``
            (Brooker 2015; ``multiplier`` is then unused).

    Raises:
        ConfigurationError: Out-of-range value or unknown ``jitter``.
    """
    owner = "backoff.exponential"
    b = check_duration(owner, "base", base)
    c = check_duration(owner, "cap", cap)
    if (
        isinstance(multiplier, bool)
        or not isinstance(multiplier, (int, float))
        or math.isnan(multiplier)
        or math.isinf(multiplier)
        or multiplier < 1
    ):
        raise ConfigurationError.invalid(owner, "multiplier", multiplier, "a finite number >= 1")
    j = _check_jitter(owner, jitter)
    if b == 0 or c <= b or multiplier == 1:
        max_exponent = 0 if (b == 0 or c <= b) else 2**62
    else:
        # logs of each side stay finite even for subnormal bases (c / b may overflow)
        exponent = (math.log(c) - math.log(b)) / math.log(multiplier)
        max_exponent = min(2**62, math.ceil(exponent) + 1)
    return _Exponential(b, float(multiplier), c, j, max_exponent)


def decorrelated(base: float = 0.1, *, cap: float = 10.0) -> Backoff:
    """Decorrelated jitter: ``min(cap, uniform(base, previous * 3))`` (Brooker 2015).

    Args:
        base: Smallest delay in seconds, >= 0 (default 0.1).
        cap: Largest delay in seconds, >= 0 (default 10.0).
    """
    return exponential(base, 3.0, cap=cap, jitter="decorrelated")


def coerce(owner: str, value: Any) -> Backoff:
    """Accept a `Backoff`, a plain number (constant seconds) or ``f(attempt) -> seconds``.

    Raises:
        ConfigurationError: Anything else.
    """
    if isinstance(value, Backoff):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return constant(value)
    if callable(value):
        return _Function(value)
    raise ConfigurationError.invalid(
        owner, "backoff", value, "a buttress.backoff schedule, seconds, or f(attempt) -> seconds"
    )
