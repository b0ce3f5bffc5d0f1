"""Concurrency proof: one breaker, bulkhead and rate limiter under 8 threads and 10,000 tasks.

The protected function itself checks the invariants at every step, with random failures,
delays and cancellations going on around it:

* concurrent calls inside the bulkhead never exceed ``max_concurrent``;
* half-open trials in flight never exceed ``half_open_calls`` (a store subclass marks the
  calls admitted as trials, per half-open round);
* calls admitted by the limiter never exceed ``burst + rate * elapsed`` (GCRA's bound);

and after every call has finished, no bulkhead slot, queue entry or half-open trial slot
is held, the breaker closes again after healthy trials (it cannot stay half-open), and
the limiter admits a full ``burst`` after a quiet period (no permit leaked) and still no
more than its bound.

Each stateful strategy is hammered alone and all three together in one pipeline. The
clock is the real monotonic clock: the point is real interleavings.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
import time
from collections import Counter
from collections.abc import Hashable
from typing import Any

import pytest

from buttress import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Pipeline,
    RateLimitedError,
    RateLimiter,
    Timeout,
    TimeoutRejectedError,
)
from buttress._state.circuit import Admission, CircuitPolicy
from buttress.stores.memory import MemoryCircuit, MemoryCircuitStore

HALF_OPEN_CALLS = 2
RATE = 4000.0  # permits per second
BURST = 40.0

TRIAL: contextvars.ContextVar[int | None] = contextvars.ContextVar("stress-trial", default=None)


class Abort(BaseException):
    """A simulated cancellation for threads (like KeyboardInterrupt: never handled)."""


class MarkingCircuit(MemoryCircuit):
    """Marks each admitted half-open trial with its round's token for the function."""

    __slots__ = ()

    def try_acquire(self, now: float, rng: Any = None) -> Admission:
        admission = super().try_acquire(now, rng)
        TRIAL.set(admission.token if admission.trial else None)
        return admission


class MarkingStore(MemoryCircuitStore):
    def circuit(self, name: str, key: Hashable | None, policy: CircuitPolicy) -> MemoryCircuit:
        return MarkingCircuit(policy)


class Invariants:
    """Shared counters the protected function updates and checks on every call."""

    def __init__(
        self, *, max_concurrent: int, bulkhead: bool, breaker: bool, limiter: bool
    ) -> None:
        self.lock = threading.Lock()
        self.max_concurrent = max_concurrent
        self.check_bulkhead = bulkhead
        self.check_breaker = breaker
        self.check_limiter = limiter
        self.active = 0
        self.worst_active = 0
        self.trials: Counter[int] = Counter()
        self.worst_trials = 0
        self.trial_calls = 0
        self.admitted = 0
        self.start = time.monotonic()
        self.violations: list[str] = []
        self.calls = 0

    def enter(self) -> int | None:
        token = TRIAL.get()
        TRIAL.set(None)
        now = time.monotonic()
        with self.lock:
            self.calls += 1
            self.active += 1
            self.worst_active = max(self.worst_active, self.active)
            if self.check_bulkhead and self.active > self.max_concurrent:
                self.violations.append(
                    f"{self.active} calls inside a bulkhead of {self.max_concurrent}"
                )
            if token is not None:
                self.trials[token] += 1
                self.trial_calls += 1
                self.worst_trials = max(self.worst_trials, self.trials[token])
                if self.trials[token] > HALF_OPEN_CALLS:
                    self.violations.append(f"{self.trials[token]} half-open trials in flight")
            self.admitted += 1
            bound = BURST + RATE * (now - self.start) + 1e-6
            if self.check_limiter and self.admitted > bound:
                self.violations.append(f"{self.admitted} admitted > GCRA bound {bound:.1f}")
        return token

    def leave(self, token: int | None) -> None:
        with self.lock:
            self.active -= 1
            if token is not None:
                self.trials[token] -= 1


def make(
    which: str, max_concurrent: int, max_queued: int, max_wait: float | None
) -> tuple[list[Any], CircuitBreaker | None, Bulkhead | None, Any, Invariants]:
    breaker = bulkhead = limiter = None
    strategies: list[Any] = []
    if which in ("limiter", "all"):
        limiter = RateLimiter(RATE, BURST, max_wait=0.002)
        strategies.append(limiter)
    if which in ("bulkhead", "all"):
        bulkhead = Bulkhead(max_concurrent, max_queued=max_queued, max_wait=max_wait)
        strategies.append(bulkhead)
    if which in ("breaker", "all"):
        breaker = CircuitBreaker(
            on=ConnectionError,
            failure_ratio=0.5,
            window=20,
            min_throughput=10,
            break_duration=0.005,
            half_open_calls=HALF_OPEN_CALLS,
            half_open_max_duration=None,  # a round ends by verdicts only: stricter test
            store=MarkingStore(),
        )
        strategies.append(breaker)
    inv = Invariants(
        max_concurrent=max_concurrent,
        bulkhead=bulkhead is not None,
        breaker=breaker is not None,
        limiter=limiter is not None,
    )
    return strategies, breaker, bulkhead, limiter, inv


EXPECTED = (
    ConnectionError,
    KeyError,
    CircuitOpenError,
    BulkheadFullError,
    RateLimitedError,
    TimeoutRejectedError,
)


def assert_quiescent(
    inv: Invariants, breaker: CircuitBreaker | None, bulkhead: Bulkhead | None, limiter: Any
) -> None:
    assert inv.violations == []
    assert inv.active == 0
    assert all(v == 0 for v in inv.trials.values())
    if bulkhead is not None:
        snap = bulkhead.snapshot()
        assert (snap.in_use, snap.queued) == (0, 0)
        assert inv.worst_active <= inv.max_concurrent
    if breaker is not None:
        assert breaker.metrics.half_open_in_flight == 0
        assert inv.worst_trials <= HALF_OPEN_CALLS
        # liveness: after the break, healthy calls are admitted and close the breaker (in a
        # copy of the context: the marking store sets TRIAL, which must not leak out)
        time.sleep(0.01)
        probe_b = Pipeline(breaker)
        before = breaker.metrics
        for _ in range(HALF_OPEN_CALLS):
            ctx = contextvars.copy_context()
            assert ctx.run(probe_b.call, lambda: "ok") == "ok", before
        assert breaker.state == "closed", (before, breaker.metrics)
    if limiter is not None:
        # no permit leaked: after a quiet period the bucket is full again (BURST calls pass
        # at once), and the limiter still never admits more than its bound
        probe = Pipeline(limiter)
        time.sleep(2 * BURST / RATE)
        admitted = 0
        t0 = time.monotonic()
        for _ in range(int(BURST) + 20):
            try:
                probe.call(lambda: None)
                admitted += 1
            except RateLimitedError:
                break
        elapsed = time.monotonic() - t0
        assert admitted >= BURST
        assert admitted <= BURST + RATE * elapsed + 1


# -- threads -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["breaker", "bulkhead", "limiter", "all"])
def test_threads_hammer_stateful_strategies(which: str) -> None:
    strategies, breaker, bulkhead, limiter, inv = make(
        which, max_concurrent=3, max_queued=8, max_wait=0.002
    )
    pipeline = Pipeline(*strategies, name=f"stress-{which}")
    threads_n, calls_per_thread = 8, 1000
    outcomes: Counter[str] = Counter()
    unexpected: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        failing = [0.1]  # failure probability: alternating healthy and outage phases

        def fn() -> str:
            token = inv.enter()
            try:
                r = rng.random()
                if r < 0.3:
                    time.sleep(rng.random() * 0.0004)  # hold the slot a while
                r = rng.random()
                if r < failing[0]:
                    raise ConnectionError("down")
                if r < failing[0] + 0.05:
                    raise KeyError("unhandled")
                if r < failing[0] + 0.08:
                    raise Abort
                return "ok"
            finally:
                inv.leave(token)

        barrier.wait()
        local: Counter[str] = Counter()
        for i in range(calls_per_thread):
            failing[0] = 0.7 if (i // 100) % 2 else 0.1
            try:
                pipeline.call(fn)
                local["ok"] += 1
            except EXPECTED as exc:
                local[type(exc).__name__] += 1
            except Abort:
                local["Abort"] += 1
            except BaseException as exc:  # pragma: no cover - reported below
                unexpected.append(exc)
        with inv.lock:
            outcomes.update(local)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60.0)
    assert not any(t.is_alive() for t in threads)
    assert unexpected == []
    assert sum(outcomes.values()) == threads_n * calls_per_thread
    assert outcomes["ok"] > 0
    assert_quiescent(inv, breaker, bulkhead, limiter)
    if bulkhead is not None:
        assert inv.worst_active == inv.max_concurrent  # the limit was actually reached
    if breaker is not None:
        assert inv.trial_calls > 0  # half-open rounds happened
        assert outcomes["CircuitOpenError"] > 0


# -- asyncio: 10,000 concurrent tasks ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("which", ["breaker", "bulkhead", "limiter", "all"])
def test_asyncio_10000_tasks_hammer_stateful_strategies(which: str) -> None:
    strategies, breaker, bulkhead, limiter, inv = make(
        which, max_concurrent=8, max_queued=500, max_wait=None
    )
    # an inner Timeout adds cancellations from inside; the canceller adds them from outside
    pipeline = Pipeline(*strategies, Timeout(0.003), name=f"astress-{which}")
    tasks_n = 10_000
    rng = random.Random(7)
    outcomes: Counter[str] = Counter()
    unexpected: list[BaseException] = []

    async def fn(r1: float, r2: float, hold: float, failing: float) -> str:
        token = inv.enter()
        try:
            if r1 < 0.3:
                await asyncio.sleep(hold)
            else:
                await asyncio.sleep(0)
            if r2 < failing:
                raise ConnectionError("down")
            if r2 < failing + 0.05:
                raise KeyError("unhandled")
            return "ok"
        finally:
            inv.leave(token)

    async def one(delay: float, r1: float, r2: float, hold: float) -> None:
        await asyncio.sleep(delay)
        failing = 0.8 if int(delay * 20) % 2 else 0.1  # 50 ms outage phases
        try:
            await pipeline.acall(fn, r1, r2, hold, failing)
            outcomes["ok"] += 1
        except EXPECTED as exc:
            outcomes[type(exc).__name__] += 1
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
            raise
        except BaseException as exc:  # pragma: no cover - reported below
            unexpected.append(exc)

    async def main() -> None:
        tasks = [
            asyncio.create_task(
                one(rng.random() * 0.5, rng.random(), rng.random(), rng.random() * 0.004)
            )
            for _ in range(tasks_n)
        ]
        # cancel 10 % of them at random moments
        victims = rng.sample(tasks, tasks_n // 10)
        for i, task in enumerate(victims):
            if i % 50 == 0:
                await asyncio.sleep(0.5 / (len(victims) / 50))
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        assert cancelled >= 1
        assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results)

    asyncio.run(main())
    assert unexpected == []
    assert outcomes["ok"] > 0
    assert_quiescent(inv, breaker, bulkhead, limiter)
    if bulkhead is not None:
        assert inv.worst_active == inv.max_concurrent
    if breaker is not None:
        assert inv.trial_calls > 0
