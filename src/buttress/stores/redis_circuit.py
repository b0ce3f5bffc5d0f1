"""`RedisCircuit`: one circuit breaker's state on Redis, shared by every process.

Every operation (admit, record, release, snapshot, manual transition) is one run of the
`buttress.stores._redis_cmds.CIRCUIT` script: atomic, one round trip, timed with the
server's ``TIME``. The script mirrors `buttress._state.circuit.CircuitState` for both
window kinds, each kept in one string next to the state hash:

* a count window (``window=N``): the last N outcome codes, one byte per call;
* a time window (``window_duration``, ``window_buckets``): the rolling buckets, 18 bytes
  each (calls, failures, slow calls), bucket index ``floor(server time / width)``. Expired
  buckets are zeroed when the next outcome or snapshot finds them, so a call costs
  O(1) (at most ``window_buckets`` buckets after a long quiet spell) and the string never
  exceeds ``18 x window_buckets`` bytes.

Both keys expire by themselves ``max(3600, 10 x longest break, window_duration)`` seconds
after the last change. A window stored under another shape (the breaker's window settings
changed between deployments) is cleared rather than misread.

A break schedule (``break_duration`` given as a backoff) is evaluated once, when the circuit
is created, for opens 1..32 (with a fixed seed for jitter), so every process uses the same
table; later opens use the last entry.

Fail-open: each circuit also holds a local `MemoryCircuit`; when Redis fails (per the
store's `StoreGuard`) the breaker decides on that local state until Redis answers again,
and `StoreFailed` / `StoreRecovered` go to the global listeners. Fail-closed
(``RedisStore(fail_open=False)``) raises `StoreError` from the breaker instead.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from .._core.env import Env
from .._core.store_guard import StoreGuard
from .._state.circuit import Admission, CircuitPolicy, CircuitSnapshot
from . import _redis_cmds as cmd
from .memory import MemoryCircuit

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["RedisCircuit"]

_BREAKS = 32


def _params(policy: CircuitPolicy) -> tuple[list[Any], list[str]]:
    """The script's policy arguments (ARGV 5..16) and its break table (ARGV 18..)."""
    rng = random.Random(0)
    breaks: list[str] = []
    previous = 0.0
    longest = 0.0
    for opens in range(1, _BREAKS + 1):
        previous = policy.break_for(opens, previous, rng)
        longest = max(longest, previous)
        breaks.append(repr(float(previous)))
        if policy.break_constant is not None:
            break
    slow_on = policy.slow_call_duration is not None
    hmax = policy.half_open_max_duration
    duration = policy.window_duration
    timed = duration is not None
    ttl = max(3600, int(10 * longest) + 1, int(duration or 0.0) + 1)
    return [
        0 if timed else policy.window,
        policy.min_throughput,
        cmd.fmt(policy.failure_ratio) if policy.failure_ratio is not None else -1,
        policy.consecutive_failures if policy.consecutive_failures is not None else -1,
        cmd.fmt(policy.slow_call_ratio) if slow_on else -1,
        policy.half_open_calls,
        policy.half_open_successes,
        int(hmax * 1e6) if hmax is not None else -1,
        int(policy.break_reset_after * 1e6),
        ttl,
        policy.window_buckets if timed else 0,
        cmd.fmt((duration or 0.0) / policy.window_buckets),
    ], breaks


def _snapshot(reply: Any) -> CircuitSnapshot:
    calls, failures, slow = int(reply[2]), int(reply[3]), int(reply[4])
    retry_us = int(reply[8])
    previous = reply[12].decode() if isinstance(reply[12], bytes) else str(reply[12])
    state = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    return CircuitSnapshot(
        state=state,
        generation=int(reply[1]),
        calls=calls,
        failures=failures,
        slow_calls=slow,
        failure_ratio=failures / calls if calls else 0.0,
        slow_ratio=slow / calls if calls else 0.0,
        consecutive_failures=int(reply[5]),
        opens=int(reply[6]),
        break_duration=float(reply[7]),
        retry_after=retry_us / 1e6 if retry_us >= 0 else None,
        half_open_in_flight=int(reply[9]),
        half_open_successes=int(reply[10]),
        half_open_failures=int(reply[11]),
        previous_state=previous or None,
    )


def _admission(reply: Any) -> Admission:
    snap = _snapshot(reply)
    actual = reply[15].decode() if isinstance(reply[15], bytes) else str(reply[15])
    opened = snap.previous_state is not None and actual == "open"
    retry_after = snap.retry_after
    if retry_after is None and actual == "open":
        # reopened with a zero break (a trial round overran half_open_max_duration): the
        # break already "elapsed", so the snapshot fields read half-open; the rejection's
        # wait is 0.0, as in the pure machine
        retry_after = 0.0
    return Admission(
        permitted=bool(int(reply[13])),
        token=snap.generation,
        trial=bool(int(reply[14])),
        state=actual,
        retry_after=retry_after,
        previous_state=snap.previous_state,
        failure_ratio=snap.failure_ratio if snap.previous_state is not None else None,
        break_duration=snap.break_duration if opened else None,
    )


class RedisCircuit:
    """One breaker (one partition key) on Redis; implements `Circuit` (not `FastCircuit`).

    Args:
        store: The `RedisStore`.
        name: The breaker's name (namespace of its keys).
        key: Partition key, or ``None``.
        policy: The breaker's thresholds (count or time window).
        caller_clock: For tests only: time every operation with the ``now`` it is given
            (seconds >= 0 on the caller's clock) instead of the server's ``TIME``, so a test can
            drive the breaker with a `buttress.testing.ManualClock`. Every process sharing
            the circuit must then use the same clock. Default ``False``.
    """

    def __init__(
        self,
        store: RedisStore,
        name: str,
        key: Hashable | None,
        policy: CircuitPolicy,
        *,
        caller_clock: bool = False,
    ) -> None:
        self.store = store
        self.policy = policy
        self.keys = list(store.keys.circuit(name, "-" if key is None else str(key)))
        self.params, self.breaks = _params(policy)
        self.caller_clock = caller_clock
        self.fallback = MemoryCircuit(policy)
        self.guard = StoreGuard(store, name, fail_open=store.fail_open)
        self.env = Env(f"breaker:{name}")
        self._slow = policy.slow_call_duration

    def __repr__(self) -> str:
        return f"RedisCircuit({self.keys[0]!r})"

    def _args(
        self, op: str, now: float, token: int = 0, failed: bool = False, slow: bool = False
    ) -> list[Any]:
        clock = round(now * 1e6) if self.caller_clock else -1
        return [op, token, int(failed), int(slow), *self.params, clock, *self.breaks]

    def _is_slow(self, duration: float | None) -> bool:
        return duration is not None and self._slow is not None and duration > self._slow

    def _run(self, now: float, op: str, *args: Any) -> Any:
        guard = self.guard
        if not guard.usable(now):
            return None
        try:
            reply = self.store.run(cmd.CIRCUIT, self.keys, self._args(op, now, *args))
        except Exception as exc:
            guard.failed(self.env, op, exc, now)
            return None
        if guard.down:
            guard.succeeded(self.env, now)
        return reply

    async def _arun(self, now: float, op: str, *args: Any) -> Any:
        guard = self.guard
        if not guard.usable(now):
            return None
        try:
            reply = await self.store.arun(cmd.CIRCUIT, self.keys, self._args(op, now, *args))
        except Exception as exc:
            guard.failed(self.env, op, exc, now)
            return None
        if guard.down:
            guard.succeeded(self.env, now)
        return reply

    # -- Circuit protocol (sync) ----------------------------------------------------------

    def try_acquire(self, now: float, rng: random.Random | None = None) -> Admission:
        """See `buttress.stores.base.Circuit.try_acquire` (decided by the server)."""
        reply = self._run(now, "acquire")
        if reply is None:
            return self.fallback.try_acquire(now, rng)
        return _admission(reply)

    def record(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> CircuitSnapshot:
        """See `buttress.stores.base.Circuit.record`."""
        reply = self._run(now, "record", token, failed, self._is_slow(duration))
        if reply is None:
            return self.fallback.record(token, failed, duration, now, rng)
        return _snapshot(reply)

    def release(self, token: int, now: float) -> None:
        """See `buttress.stores.base.Circuit.release`."""
        if self._run(now, "release", token) is None:
            self.fallback.release(token, now)

    def snapshot(self, now: float) -> CircuitSnapshot:
        """See `buttress.stores.base.Circuit.snapshot`."""
        reply = self._run(now, "snapshot")
        return self.fallback.snapshot(now) if reply is None else _snapshot(reply)

    def transition(self, action: Any, now: float) -> CircuitSnapshot:
        """See `buttress.stores.base.Circuit.transition` (``isolate``, ``close``, ``reset``)."""
        if action not in ("isolate", "close", "reset"):
            raise ValueError(f"unknown circuit action {action!r}")
        reply = self._run(now, action)
        if reply is None:
            return self.fallback.transition(action, now)
        return _snapshot(reply)

    # -- Circuit protocol (async) ---------------------------------------------------------

    async def atry_acquire(self, now: float, rng: random.Random | None = None) -> Admission:
        """Async `try_acquire`."""
        reply = await self._arun(now, "acquire")
        if reply is None:
            return self.fallback.try_acquire(now, rng)
        return _admission(reply)

    async def arecord(
        self,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
        rng: random.Random | None = None,
    ) -> CircuitSnapshot:
        """Async `record`."""
        reply = await self._arun(now, "record", token, failed, self._is_slow(duration))
        if reply is None:
            return self.fallback.record(token, failed, duration, now, rng)
        return _snapshot(reply)

    async def arelease(self, token: int, now: float) -> None:
        """Async `release`."""
        if await self._arun(now, "release", token) is None:
            self.fallback.release(token, now)

    async def asnapshot(self, now: float) -> CircuitSnapshot:
        """Async `snapshot`."""
        reply = await self._arun(now, "snapshot")
        return self.fallback.snapshot(now) if reply is None else _snapshot(reply)

    async def atransition(self, action: Any, now: float) -> CircuitSnapshot:
        """Async `transition`."""
        if action not in ("isolate", "close", "reset"):
            raise ValueError(f"unknown circuit action {action!r}")
        reply = await self._arun(now, action)
        if reply is None:
            return self.fallback.transition(action, now)
        return _snapshot(reply)
