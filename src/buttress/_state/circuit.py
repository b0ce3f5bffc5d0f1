"""The circuit breaker as a pure state machine: time is passed in, nothing waits or locks.

One `CircuitState` holds one breaker's state (one key of a per-key breaker). Every method
takes ``now`` (seconds on the caller's monotonic clock) and returns a decision; nothing
here reads a clock, sleeps, locks or emits. The memory store wraps it with a lock and a
lock-free success counter (`buttress.stores.memory`); a shared store can run the same
object on a state it loads and saves atomically; the lab runs it in virtual time.

States and transitions (``opens`` counts consecutive opens for the break schedule)::

    closed --(threshold reached on a failure or slow call)--> open
    open --(break elapsed; first call asking)--> half_open
    half_open --(half_open_successes healthy trials)--> closed
    half_open --(a failed or slow trial that makes closing impossible)--> open
    half_open --(a trial holds its slot past half_open_max_duration)--> open
    any --isolate()--> isolated --close()/reset()--> closed

Outcomes and their epoch: every transition increments ``generation``. A permit carries
the generation it was granted in; an outcome reported with another generation belongs to
an earlier epoch and is ignored (a call admitted while closed that fails after the
breaker opened does not count again; a late trial never decides a later round).

Windows keep per-call work O(1) whatever the traffic: the count window is a ring of
``window`` one-byte codes; the time window is ``window_buckets`` rolling buckets of
``window_duration / window_buckets`` seconds each (bucket index ``floor(now / width)``),
so the window covers between ``window_duration - width`` and ``window_duration`` seconds.
Threshold checks happen when a failure or a slow call is recorded (a plain success can
only lower a ratio); a success never opens the breaker.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .._core.validate import check_count, check_duration, check_ratio
from .._exceptions import ConfigurationError
from ..backoff import Backoff

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "ISOLATED",
    "OPEN",
    "STATE_NAMES",
    "Admission",
    "CircuitPolicy",
    "CircuitSnapshot",
    "CircuitState",
]

CLOSED = 0
OPEN = 1
HALF_OPEN = 2
ISOLATED = 3
STATE_NAMES = ("closed", "open", "half_open", "isolated")

_FAILED = 1  # outcome code bits in the windows
_SLOW = 2

_OWNER = "CircuitBreaker"


class CircuitPolicy:
    """Validated, immutable thresholds of a circuit breaker (shared by every key).

    Args:
        failure_ratio: Open when failed calls / calls in the window reach this ratio,
            in (0, 1]; ``None`` disables the ratio trip (default 0.5).
        consecutive_failures: Open after this many failures in a row (int >= 1), counted
            regardless of ``min_throughput``; ``None`` (default) disables it.
        window: Count-based window: the last ``window`` calls (int >= 1). Default 100
            when ``window_duration`` is not given.
        window_duration: Time-based window in seconds (float or `timedelta`, > 0);
            mutually exclusive with ``window``.
        window_buckets: Buckets of the time window (int >= 1, default 10).
        min_throughput: Calls the window must hold before a ratio can open the breaker
            (int >= 1). Default ``min(20, window)`` for a count window, 20 for a time
            window. Must not exceed ``window``.
        slow_call_duration: A call lasting longer than this many seconds is slow
            (> 0); ``None`` (default) disables slow-call tracking (and its clock reads).
        slow_call_ratio: Open when slow calls / calls in the window reach this ratio, in
            (0, 1] (default 1.0). Only used with ``slow_call_duration``.
        break_duration: Seconds to stay open (float or `timedelta`, >= 0; default 5.0), or
            a `buttress.backoff` schedule (or ``f(opens) -> seconds``) evaluated at the
            number of consecutive opens (1 for the first) so repeated opens can back off,
            capped by the schedule.
        break_reset_after: Seconds the breaker must stay closed before the count of
            consecutive opens returns to zero (>= 0, default 60.0).
        half_open_calls: Trial calls admitted in half-open (int >= 1, default 1). Never
            more are in flight at once.
        half_open_successes: Healthy trials needed to close, 1..``half_open_calls``;
            default: all of them.
        half_open_success_ratio: Alternative to ``half_open_successes``: the share of
            trials that must be healthy, in (0, 1]; needs ``ceil(ratio * calls)`` trials.
        half_open_max_duration: Seconds a half-open round may hold a slot without an
            answer before the breaker reopens (> 0, default 60.0); ``None``: no limit.

    Raises:
        ConfigurationError: Any value out of its range, both ``window`` and
            ``window_duration``, or no trip condition at all.
    """

    __slots__ = (
        "break_constant",
        "break_duration",
        "break_reset_after",
        "consecutive_failures",
        "failure_ratio",
        "half_open_calls",
        "half_open_max_duration",
        "half_open_successes",
        "min_throughput",
        "slow_call_duration",
        "slow_call_ratio",
        "window",
        "window_buckets",
        "window_duration",
    )

    def __init__(
        self,
        *,
        failure_ratio: float | None = 0.5,
        consecutive_failures: int | None = None,
        window: int | None = None,
        window_duration: float | timedelta | None = None,
        window_buckets: int = 10,
        min_throughput: int | None = None,
        slow_call_duration: float | timedelta | None = None,
        slow_call_ratio: float = 1.0,
        break_duration: float | timedelta | Backoff | Callable[[int], float] = 5.0,
        break_reset_after: float | timedelta = 60.0,
        half_open_calls: int = 1,
        half_open_successes: int | None = None,
        half_open_success_ratio: float | None = None,
        half_open_max_duration: float | timedelta | None = 60.0,
    ) -> None:
        o = _OWNER
        self.failure_ratio: float | None = (
            None
            if failure_ratio is None
            else check_ratio(o, "failure_ratio", failure_ratio, low_open=True)
        )
        self.consecutive_failures: int | None = (
            None
            if consecutive_failures is None
            else check_count(o, "consecutive_failures", consecutive_failures)
        )
        if window is not None and window_duration is not None:
            raise ConfigurationError(
                f"{o}(window={window!r}, window_duration={window_duration!r}): expected "
                "one of them (a count window of the last N calls, or a time window in seconds)",
                parameter="window_duration",
                value=window_duration,
                expected="either window or window_duration, not both",
            )
        self.window_buckets = check_count(o, "window_buckets", window_buckets)
        if window_duration is not None:
            self.window_duration: float | None = check_duration(
                o, "window_duration", window_duration, strictly_positive=True
            )
            self.window: int | None = None
            default_min = 20
        else:
            self.window_duration = None
            self.window = 100 if window is None else check_count(o, "window", window)
            default_min = min(20, self.window)
        if min_throughput is None:
            self.min_throughput = default_min
        else:
            self.min_throughput = check_count(o, "min_throughput", min_throughput)
            if self.window is not None and self.min_throughput > self.window:
                raise ConfigurationError.invalid(
                    o,
                    "min_throughput",
                    min_throughput,
                    f"an int in 1..window ({self.window}); a count window never holds more",
                )
        self.slow_call_duration: float | None = (
            None
            if slow_call_duration is None
            else check_duration(o, "slow_call_duration", slow_call_duration, strictly_positive=True)
        )
        self.slow_call_ratio = check_ratio(o, "slow_call_ratio", slow_call_ratio, low_open=True)
        if isinstance(break_duration, Backoff):
            self.break_duration: Backoff | None = break_duration
            self.break_constant: float | None = None
        elif callable(break_duration) and not isinstance(break_duration, type):
            self.break_duration = _coerce_backoff(o, break_duration)
            self.break_constant = None
        else:
            self.break_duration = None
            if not isinstance(break_duration, (int, float, timedelta)) or isinstance(
                break_duration, bool
            ):
                raise ConfigurationError.invalid(
                    o,
                    "break_duration",
                    break_duration,
                    "seconds >= 0 (float or timedelta), a buttress.backoff schedule, "
                    "or f(opens) -> seconds",
                )
            self.break_constant = check_duration(o, "break_duration", break_duration)
        self.break_reset_after = check_duration(o, "break_reset_after", break_reset_after)
        self.half_open_calls = check_count(o, "half_open_calls", half_open_calls)
        n = self.half_open_calls
        if half_open_successes is not None and half_open_success_ratio is not None:
            raise ConfigurationError(
                f"{o}(half_open_successes={half_open_successes!r}, half_open_success_ratio="
                f"{half_open_success_ratio!r}): expected at most one of them",
                parameter="half_open_success_ratio",
                value=half_open_success_ratio,
                expected="either half_open_successes or half_open_success_ratio",
            )
        if half_open_successes is not None:
            k = check_count(o, "half_open_successes", half_open_successes)
            if k > n:
                raise ConfigurationError.invalid(
                    o, "half_open_successes", half_open_successes, f"an int in 1..{n}"
                )
        elif half_open_success_ratio is not None:
            r = check_ratio(o, "half_open_success_ratio", half_open_success_ratio, low_open=True)
            k = max(1, min(n, math.ceil(r * n - 1e-9)))
        else:
            k = n
        self.half_open_successes = k
        self.half_open_max_duration: float | None = (
            None
            if half_open_max_duration is None
            else check_duration(
                o, "half_open_max_duration", half_open_max_duration, strictly_positive=True
            )
        )
        if (
            self.failure_ratio is None
            and self.consecutive_failures is None
            and self.slow_call_duration is None
        ):
            raise ConfigurationError(
                f"{o}(failure_ratio=None, consecutive_failures=None, slow_call_duration=None):"
                " expected at least one trip condition; this breaker could never open",
                parameter="failure_ratio",
                value=None,
                expected="failure_ratio, consecutive_failures or slow_call_duration set",
            )

    def break_for(self, opens: int, previous: float, rng: random.Random | None) -> float:
        """Seconds the ``opens``-th consecutive open lasts (1-based)."""
        if self.break_constant is not None:
            return self.break_constant
        assert self.break_duration is not None
        d = float(self.break_duration.delay(opens, previous, rng or _RNG))
        return d if d > 0.0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping (for stores, reports and ``repr``)."""
        return {
            "failure_ratio": self.failure_ratio,
            "consecutive_failures": self.consecutive_failures,
            "window": self.window,
            "window_duration": self.window_duration,
            "window_buckets": self.window_buckets,
            "min_throughput": self.min_throughput,
            "slow_call_duration": self.slow_call_duration,
            "slow_call_ratio": self.slow_call_ratio,
            "break_duration": (
                self.break_constant if self.break_constant is not None else self.break_duration
            ),
            "break_reset_after": self.break_reset_after,
            "half_open_calls": self.half_open_calls,
            "half_open_successes": self.half_open_successes,
            "half_open_max_duration": self.half_open_max_duration,
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"CircuitPolicy({inner})"


_RNG = random.Random(0)  # only for schedules with jitter when no generator is passed


def _coerce_backoff(owner: str, fn: Any) -> Backoff:
    from ..backoff import coerce

    return coerce(owner, fn)


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    """A read-only view of one breaker's state at a given time.

    Attributes:
        state: ``"closed"``, ``"open"``, ``"half_open"`` or ``"isolated"``. An open
            breaker whose break has elapsed reads ``"half_open"`` (it admits a trial on
            the next call, which makes the transition and emits its event).
        generation: Increments on every transition (identifies the epoch).
        calls: Calls in the window (while not closed: the window as it was when the
            breaker opened; it is cleared when the breaker closes).
        failures: Failed calls in the window.
        slow_calls: Slow calls in the window (failed or not).
        failure_ratio: ``failures / calls`` (0.0 for an empty window).
        slow_ratio: ``slow_calls / calls`` (0.0 for an empty window).
        consecutive_failures: Failures since the last success.
        opens: Consecutive opens so far (drives a growing break; reset after
            ``break_reset_after`` seconds closed).
        break_duration: Seconds of the current (or last) break.
        retry_after: Seconds until the break ends (open), else ``None``.
        half_open_in_flight: Trials holding a slot now.
        half_open_successes: Healthy trials in the current half-open round.
        half_open_failures: Unhealthy trials in the current half-open round.
        previous_state: The state before the operation that returned this snapshot,
            when that operation changed it; else ``None``.
    """

    state: str
    generation: int
    calls: int
    failures: int
    slow_calls: int
    failure_ratio: float
    slow_ratio: float
    consecutive_failures: int
    opens: int
    break_duration: float
    retry_after: float | None
    half_open_in_flight: int
    half_open_successes: int
    half_open_failures: int
    previous_state: str | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to `CircuitState.try_acquire`.

    Attributes:
        permitted: ``True`` when the call may proceed.
        token: The generation to report the outcome with (`record` / `release`).
        trial: ``True`` for a half-open trial (its slot must be recorded or released).
        state: State name after the decision.
        retry_after: For a rejection: seconds until the break ends, or ``None`` when
            unknown (isolated, or half-open with every slot taken).
        previous_state: Set when this decision changed the state (open -> half_open, or
            half_open -> open when a round expired).
        failure_ratio: Window failure ratio when the state changed (for events).
        break_duration: Seconds of the new break when this decision opened the breaker.
    """

    permitted: bool
    token: int
    trial: bool
    state: str
    retry_after: float | None = None
    previous_state: str | None = None
    failure_ratio: float | None = None
    break_duration: float | None = None


class _CountWindow:
    """The last ``size`` outcomes in a ring of one-byte codes (bit 0 failed, bit 1 slow)."""

    __slots__ = ("calls", "failures", "pos", "ring", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring = bytearray(size)
        self.pos = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def clear(self) -> None:
        self.ring = bytearray(self.size)
        self.pos = self.calls = self.failures = self.slow = 0

    def add(self, code: int, now: float) -> None:
        ring = self.ring
        pos = self.pos
        if self.calls == self.size:
            old = ring[pos]
            if old:
                self.failures -= old & _FAILED
                self.slow -= old >> 1
        else:
            self.calls += 1
        ring[pos] = code
        self.failures += code & _FAILED
        self.slow += code >> 1
        pos += 1
        self.pos = 0 if pos == self.size else pos

    def add_successes(self, n: int, now: float) -> None:
        # Push failures/slow codes out one by one only while any remain; then jump.
        while n > 0 and (self.failures or self.slow):
            self.add(0, now)
            n -= 1
        if n > 0:
            self.calls = min(self.size, self.calls + n)
            self.pos = (self.pos + n) % self.size

    def rotate(self, now: float) -> float:
        """Bring the window to ``now``; return until when plain successes may be batched."""
        return math.inf


class _TimeWindow:
    """Outcomes of the last ``duration`` seconds in ``buckets`` rolling buckets."""

    __slots__ = (
        "b_calls",
        "b_failures",
        "b_slow",
        "buckets",
        "calls",
        "current",
        "failures",
        "slow",
        "width",
    )

    def __init__(self, duration: float, buckets: int) -> None:
        self.buckets = buckets
        self.width = duration / buckets
        self.b_calls = [0] * buckets
        self.b_failures = [0] * buckets
        self.b_slow = [0] * buckets
        self.current: int | None = None  # absolute index of the newest bucket
        self.calls = self.failures = self.slow = 0

    def clear(self) -> None:
        n = self.buckets
        self.b_calls = [0] * n
        self.b_failures = [0] * n
        self.b_slow = [0] * n
        self.current = None
        self.calls = self.failures = self.slow = 0

    def rotate(self, now: float) -> float:
        index = math.floor(now / self.width)
        current = self.current
        if current is None:
            self.current = current = index
        elif index > current:
            n = self.buckets
            if index - current >= n:
                self.b_calls = [0] * n
                self.b_failures = [0] * n
                self.b_slow = [0] * n
                self.calls = self.failures = self.slow = 0
            else:
                for i in range(current + 1, index + 1):
                    slot = i % n
                    self.calls -= self.b_calls[slot]
                    self.failures -= self.b_failures[slot]
                    self.slow -= self.b_slow[slot]
                    self.b_calls[slot] = self.b_failures[slot] = self.b_slow[slot] = 0
            self.current = current = index
        # a clock reading older than the newest bucket is recorded in the newest bucket
        return (current + 1) * self.width

    def add(self, code: int, now: float) -> None:
        self.rotate(now)
        slot = (self.current or 0) % self.buckets
        self.b_calls[slot] += 1
        self.calls += 1
        if code & _FAILED:
            self.b_failures[slot] += 1
            self.failures += 1
        if code & _SLOW:
            self.b_slow[slot] += 1
            self.slow += 1

    def add_successes(self, n: int, now: float) -> None:
        """Add ``n`` plain successes to the newest bucket (they happened before ``now``)."""
        if self.current is None:
            self.rotate(now)
        slot = (self.current or 0) % self.buckets
        self.b_calls[slot] += n
        self.calls += n


class CircuitState:
    """One breaker's state; every method takes ``now`` and returns a decision.

    Not thread-safe by itself: the memory store serialises calls with a lock, a shared
    store with its own atomicity. See the module documentation for the transitions.

    Args:
        policy: The thresholds.
        now: Creation time in seconds (starts the healthy period).
    """

    __slots__ = (
        "break_duration",
        "closed_since",
        "consecutive",
        "generation",
        "opens",
        "policy",
        "round_started",
        "state",
        "trial_failures",
        "trial_successes",
        "trials_in_flight",
        "until",
        "window",
    )

    def __init__(self, policy: CircuitPolicy, now: float = 0.0) -> None:
        self.policy = policy
        self.window: _CountWindow | _TimeWindow = (
            _CountWindow(policy.window)
            if policy.window is not None
            else _TimeWindow(policy.window_duration or 1.0, policy.window_buckets)
        )
        self.state = CLOSED
        self.generation = 0
        self.consecutive = 0
        self.opens = 0
        self.break_duration = 0.0
        self.until = 0.0  # open: end of the break
        self.closed_since = now
        self.round_started = 0.0
        self.trials_in_flight = 0
        self.trial_successes = 0
        self.trial_failures = 0

    # -- transitions ---------------------------------------------------------------------

    def _ratio(self) -> float:
        w = self.window
        return w.failures / w.calls if w.calls else 0.0

    def _open(self, now: float, rng: random.Random | None) -> None:
        policy = self.policy
        if self.state == CLOSED and now - self.closed_since >= policy.break_reset_after:
            self.opens = 0
        self.opens += 1
        self.break_duration = policy.break_for(self.opens, self.break_duration, rng)
        self.until = now + self.break_duration
        self.state = OPEN
        self.generation += 1
        self.trials_in_flight = self.trial_successes = self.trial_failures = 0

    def _half_open(self, now: float) -> None:
        self.state = HALF_OPEN
        self.generation += 1
        self.round_started = now
        self.trials_in_flight = self.trial_successes = self.trial_failures = 0

    def _close(self, now: float) -> None:
        self.state = CLOSED
        self.generation += 1
        self.window.clear()
        self.consecutive = 0
        self.closed_since = now
        self.trials_in_flight = self.trial_successes = self.trial_failures = 0

    # -- calls ------------------------------------------------------------------------------

    def try_acquire(self, now: float, rng: random.Random | None = None) -> Admission:
        """Ask to start a call at ``now``.

        Closed: always permitted. Open: rejected with the remaining break, until the break
        has elapsed, when this call moves the breaker to half-open and takes a trial
        slot. Half-open: permitted while fewer than ``half_open_calls`` trials are in
        flight and the round still needs answers; otherwise rejected (``retry_after``
        ``None``), reopening first if the round held a slot past
        ``half_open_max_duration``. Isolated: rejected, ``retry_after`` ``None``.
        """
        state = self.state
        if state == CLOSED:
            return Admission(True, self.generation, False, "closed")
        previous: str | None = None
        if state == OPEN:
            if now < self.until:
                return Admission(False, self.generation, False, "open", self.until - now)
            self._half_open(now)
            previous = "open"
        elif state == ISOLATED:
            return Admission(False, self.generation, False, "isolated")
        policy = self.policy
        answered = self.trial_successes + self.trial_failures
        if self.trials_in_flight + answered < policy.half_open_calls:
            self.trials_in_flight += 1
            return Admission(True, self.generation, True, "half_open", None, previous)
        limit = policy.half_open_max_duration
        if limit is not None and self.trials_in_flight and now - self.round_started >= limit:
            self._open(now, rng)
            return Admission(
                False,
                self.generation,
                False,
                "open",
                self.until - now,
                "half_open",
                None,
                self.break_duration,
            )
        return Admission(False, self.generation, False, "half_open", None, previous)

    def record(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> str | None:
        """Record the outcome of a call admitted with ``token``.

        Args:
            token: `Admission.token` of the call.
            failed: ``True`` when ``on=`` handled the outcome as a failure.
            duration: Seconds the call took, or ``None`` when not measured.
            now: Time of the outcome.
            rng: Random source for a jittered break schedule.

        Returns:
            The previous state name if this outcome changed the state, else ``None``.
            Outcomes from an earlier generation are ignored.
        """
        if token != self.generation:
            return None
        policy = self.policy
        slow = (
            duration is not None
            and policy.slow_call_duration is not None
            and duration > policy.slow_call_duration
        )
        state = self.state
        if state == CLOSED:
            if not failed and not slow:
                self.window.add(0, now)
                self.consecutive = 0
                return None
            self.window.add((_FAILED if failed else 0) | (_SLOW if slow else 0), now)
            self.consecutive = self.consecutive + 1 if failed else 0
            if self._should_trip():
                self._open(now, rng)
                return "closed"
            return None
        if state == HALF_OPEN and self.trials_in_flight > 0:
            self.trials_in_flight -= 1
            if failed or slow:
                self.trial_failures += 1
                if self.trial_failures > policy.half_open_calls - policy.half_open_successes:
                    self._open(now, rng)
                    return "half_open"
            else:
                self.trial_successes += 1
                if self.trial_successes >= policy.half_open_successes:
                    self._close(now)
                    return "half_open"
        return None

    def _should_trip(self) -> bool:
        policy = self.policy
        limit = policy.consecutive_failures
        if limit is not None and self.consecutive >= limit:
            return True
        w = self.window
        calls = w.calls
        if calls < policy.min_throughput or calls == 0:
            return False
        ratio = policy.failure_ratio
        if ratio is not None and w.failures >= ratio * calls:
            return True
        return policy.slow_call_duration is not None and w.slow >= policy.slow_call_ratio * calls

    def add_successes(self, n: int, now: float) -> None:
        """Record ``n`` plain (fast, not failed) successes of the current closed epoch.

        The memory store batches closed-state successes in a lock-free counter and folds
        them in here before any other operation; they are taken to have happened before
        ``now`` and after the previously recorded outcome.
        """
        if n > 0 and self.state == CLOSED:
            self.window.add_successes(n, now)
            self.consecutive = 0

    def batch_until(self, now: float) -> float:
        """Until when (clock reading) plain successes may be batched without a clock-aware
        record: ``inf`` for a count window, the newest bucket's end for a time window."""
        return self.window.rotate(now)

    def release(self, token: int, now: float) -> None:
        """Give back a trial slot without a verdict (cancelled call, unhandled exception).

        The slot becomes free for the next caller; the round's answers are unchanged.
        No effect for closed-state permits or permits of an earlier generation.
        """
        if token == self.generation and self.state == HALF_OPEN and self.trials_in_flight > 0:
            self.trials_in_flight -= 1

    # -- manual control -----------------------------------------------------------------

    def isolate(self, now: float) -> str | None:
        """Hold the breaker open until `close` or `reset`. Returns the previous state
        name if it changed."""
        if self.state == ISOLATED:
            return None
        previous = STATE_NAMES[self.state]
        self.state = ISOLATED
        self.generation += 1
        self.trials_in_flight = self.trial_successes = self.trial_failures = 0
        return previous

    def close(self, now: float) -> str | None:
        """Close now: clear the window and the failure streak (the count of consecutive
        opens is kept until the healthy period passes). Returns the previous state name
        if it changed."""
        previous = STATE_NAMES[self.state] if self.state != CLOSED else None
        self._close(now)
        return previous

    def reset(self, now: float) -> str | None:
        """Back to the initial state: closed, empty window, no open history."""
        previous = self.close(now)
        self.opens = 0
        self.break_duration = 0.0
        return previous

    # -- reading ------------------------------------------------------------------------

    def effective_state(self, now: float) -> str:
        """The state name as a caller at ``now`` would find it (an elapsed break reads
        ``"half_open"``)."""
        if self.state == OPEN and now >= self.until:
            return "half_open"
        return STATE_NAMES[self.state]

    def snapshot(self, now: float, previous_state: str | None = None) -> CircuitSnapshot:
        """A `CircuitSnapshot` at ``now`` (the time window is brought up to date)."""
        w = self.window
        if self.state == CLOSED:
            w.rotate(now)
        calls = w.calls
        failures = w.failures
        slow = w.slow
        retry_after = self.until - now if self.state == OPEN and now < self.until else None
        return CircuitSnapshot(
            state=self.effective_state(now),
            generation=self.generation,
            calls=calls,
            failures=failures,
            slow_calls=slow,
            failure_ratio=failures / calls if calls else 0.0,
            slow_ratio=slow / calls if calls else 0.0,
            consecutive_failures=self.consecutive,
            opens=self.opens,
            break_duration=self.break_duration,
            retry_after=retry_after,
            half_open_in_flight=self.trials_in_flight,
            half_open_successes=self.trial_successes,
            half_open_failures=self.trial_failures,
            previous_state=previous_state,
        )

    def failure_ratio(self) -> float:
        """Failure ratio of the window as it stands (no rotation)."""
        return self._ratio()

    # -- persistence --------------------------------------------------------------------

    _FIELDS = (
        "state",
        "generation",
        "consecutive",
        "opens",
        "break_duration",
        "until",
        "closed_since",
        "round_started",
        "trials_in_flight",
        "trial_successes",
        "trial_failures",
    )

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-compatible data (numbers and lists).

        With `from_dict`, a shared store can keep the state as one value and apply an
        operation by load, decide, compare-and-set. Times are the clock readings the
        operations were given.
        """
        data: dict[str, Any] = {name: getattr(self, name) for name in self._FIELDS}
        w = self.window
        if isinstance(w, _CountWindow):
            data["window"] = {
                "ring": list(w.ring),
                "pos": w.pos,
                "calls": w.calls,
                "failures": w.failures,
                "slow": w.slow,
            }
        else:
            data["window"] = {
                "calls": list(w.b_calls),
                "failures": list(w.b_failures),
                "slow": list(w.b_slow),
                "current": w.current,
            }
        return data

    @classmethod
    def from_dict(cls, policy: CircuitPolicy, data: dict[str, Any]) -> CircuitState:
        """Rebuild a state saved by `to_dict` under the same ``policy``.

        Raises:
            ValueError: ``data`` does not fit ``policy`` (other window kind or size).
        """
        state = cls(policy)
        for name in cls._FIELDS:
            setattr(state, name, data[name])
        wd = data["window"]
        w = state.window
        if isinstance(w, _CountWindow):
            if "ring" not in wd or len(wd["ring"]) != w.size:
                raise ValueError("saved circuit window does not match the policy's window")
            w.ring = bytearray(wd["ring"])
            w.pos, w.calls, w.failures, w.slow = wd["pos"], wd["calls"], wd["failures"], wd["slow"]
        else:
            if "current" not in wd or len(wd["calls"]) != w.buckets:
                raise ValueError("saved circuit window does not match the policy's window")
            w.b_calls = list(wd["calls"])
            w.b_failures = list(wd["failures"])
            w.b_slow = list(wd["slow"])
            w.current = wd["current"]
            w.calls, w.failures, w.slow = sum(w.b_calls), sum(w.b_failures), sum(w.b_slow)
        return state

    def __repr__(self) -> str:
        return (
            f"CircuitState(state={STATE_NAMES[self.state]!r}, generation={self.generation}, "
            f"calls={self.window.calls}, failures={self.window.failures})"
        )
