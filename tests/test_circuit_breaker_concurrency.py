"""Half-open trials never exceed ``half_open_calls``, under real threads and asyncio tasks.

The dependency itself counts the trials executing at once: a store subclass marks the
calls it admits as trials (a context variable read by the protected function), and the
function counts concurrent trials per half-open round (per generation token).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
from collections import Counter
from collections.abc import Hashable
from typing import Any

import pytest

from buttress import CircuitBreaker, CircuitOpenError, Pipeline
from buttress._state.circuit import Admission, CircuitPolicy
from buttress.stores.memory import MemoryCircuit, MemoryCircuitStore
from buttress.testing import ManualClock

TRIAL: contextvars.ContextVar[int | None] = contextvars.ContextVar("trial", default=None)


class MarkingCircuit(MemoryCircuit):
    """Marks each admitted trial with its round's token for the protected function."""

    __slots__ = ()

    def try_acquire(self, now: float, rng: Any = None) -> Admission:
        admission = super().try_acquire(now, rng)
        TRIAL.set(admission.token if admission.trial else None)
        return admission


class MarkingStore(MemoryCircuitStore):
    def circuit(self, name: str, key: Hashable | None, policy: CircuitPolicy) -> MemoryCircuit:
        return MarkingCircuit(policy)


class TrialCounter:
    """Counts trials executing at once, per round; remembers the worst."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: Counter[int] = Counter()
        self.worst = 0
        self.trials = 0

    def enter(self) -> int | None:
        token = TRIAL.get()
        TRIAL.set(None)
        if token is not None:
            with self.lock:
                self.active[token] += 1
                self.trials += 1
                self.worst = max(self.worst, self.active[token])
        return token

    def leave(self, token: int | None) -> None:
        if token is not None:
            with self.lock:
                self.active[token] -= 1


class LockedClock(ManualClock):
    """A manual clock that several threads may advance."""

    def __init__(self) -> None:
        super().__init__()
        self._advance_lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._advance_lock:
            super().advance(seconds)


@pytest.mark.parametrize("half_open_calls", [1, 3])
def test_threads_exactly_half_open_calls_trials_per_round(half_open_calls: int) -> None:
    clock = ManualClock()
    b = CircuitBreaker(
        on=ConnectionError,
        consecutive_failures=1,
        break_duration=1.0,
        half_open_calls=half_open_calls,
        store=MarkingStore(),
    )
    p = Pipeline(b, clock=clock)
    counter = TrialCounter()
    threads_n = 8
    for round_ in range(12):
        b.isolate()
        b.close()
        try:
            p.call(_raise, ConnectionError)
        except ConnectionError:
            pass
        clock.advance(1.0)
        assert b.state == "half_open"
        release = threading.Event()
        entered = threading.Semaphore(0)
        barrier = threading.Barrier(threads_n)
        rejected: list[BaseException] = []
        verdict = round_ % 3  # 0: succeed, 1: fail, 2: unhandled exception (slot released)

        def trial(
            entered: threading.Semaphore = entered,
            release: threading.Event = release,
            verdict: int = verdict,
        ) -> str:
            token = counter.enter()
            entered.release()
            try:
                assert release.wait(10.0)
                if verdict == 1:
                    raise ConnectionError
                if verdict == 2:
                    raise KeyError("unhandled")
                return "ok"
            finally:
                counter.leave(token)

        def worker(
            barrier: threading.Barrier = barrier,
            rejected: list[BaseException] = rejected,
            trial: Any = trial,
        ) -> None:
            barrier.wait()
            try:
                p.call(trial)
            except CircuitOpenError as exc:
                rejected.append(exc)
            except (ConnectionError, KeyError):
                pass

        threads = [threading.Thread(target=worker) for _ in range(threads_n)]
        for t in threads:
            t.start()
        for _ in range(half_open_calls):
            assert entered.acquire(timeout=10.0)
        # every other thread is rejected at once, without waiting for the trials
        for _ in range(100):
            if len(rejected) == threads_n - half_open_calls:
                break
            threading.Event().wait(0.01)
        assert len(rejected) == threads_n - half_open_calls
        assert all(e.retry_after is None for e in rejected)
        assert b.metrics.half_open_in_flight == half_open_calls
        release.set()
        for t in threads:
            t.join(10.0)
        snap = b.metrics
        assert snap.half_open_in_flight == 0
        expected = {0: "closed", 1: "open", 2: "half_open"}[verdict]
        assert snap.state == expected
    assert counter.worst == half_open_calls


def _raise(kind: type[BaseException]) -> None:
    raise kind


def test_threads_random_stress_never_exceed_trials_and_leave_no_slot() -> None:
    clock = LockedClock()
    n = 2
    b = CircuitBreaker(
        on=ConnectionError,
        consecutive_failures=2,
        failure_ratio=0.5,
        window=10,
        min_throughput=4,
        break_duration=0.5,
        half_open_calls=n,
        half_open_max_duration=None,  # a round ends only by verdicts here
        store=MarkingStore(),
    )
    p = Pipeline(b, clock=clock)
    counter = TrialCounter()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)

        def call() -> str:
            token = counter.enter()
            try:
                if token is not None:
                    assert counter.active[token] <= n
                if rng.random() < 0.3:
                    threading.Event().wait(0.0005)  # let other threads in
                r = rng.random()
                if r < 0.35:
                    raise ConnectionError
                if r < 0.45:
                    raise KeyError("unhandled")
                return "ok"
            finally:
                counter.leave(token)

        try:
            for _ in range(600):
                if rng.random() < 0.1:
                    clock.advance(rng.choice([0.1, 0.3, 0.6]))
                try:
                    p.call(call)
                except (ConnectionError, KeyError, CircuitOpenError):
                    pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60.0)
    assert not errors
    assert counter.trials > 0  # the breaker did go half-open and run trials
    assert counter.worst <= n
    assert b.metrics.half_open_in_flight == 0
    assert sum(counter.active.values()) == 0


def test_asyncio_thousands_of_tasks_admit_exactly_the_trials() -> None:
    clock = ManualClock()
    n = 3
    b = CircuitBreaker(
        consecutive_failures=1, break_duration=1.0, half_open_calls=n, store=MarkingStore()
    )
    p = Pipeline(b, clock=clock)
    counter = TrialCounter()

    async def main() -> None:
        async def fail() -> None:
            raise ConnectionError

        for wave in range(3):
            with pytest.raises(ConnectionError):
                await p.acall(fail)  # closed (or re-closed) -> open
            clock.advance(1.0)
            gate = asyncio.Event()
            started = 0

            async def trial(gate: asyncio.Event = gate) -> str:
                nonlocal started
                token = counter.enter()
                started += 1
                try:
                    await gate.wait()
                    return "ok"
                finally:
                    counter.leave(token)

            tasks = [asyncio.create_task(p.acall(trial)) for _ in range(5000)]
            for _ in range(5):
                await asyncio.sleep(0)
            assert started == n
            assert b.metrics.half_open_in_flight == n
            if wave == 1:
                # cancel the trials: their slots come back; the next callers take them
                trials = [t for t in tasks if not t.done()]
                assert len(trials) == n
                for t in trials:
                    t.cancel()
                await asyncio.gather(*trials, return_exceptions=True)
                assert b.metrics.half_open_in_flight == 0
                assert b.state == "half_open"
                more = [asyncio.create_task(p.acall(trial)) for _ in range(2000)]
                for _ in range(5):
                    await asyncio.sleep(0)
                assert started == 2 * n
                tasks = tasks + more
            gate.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            oks = [r for r in results if r == "ok"]
            rejected = [r for r in results if isinstance(r, CircuitOpenError)]
            assert len(oks) == n
            assert len(rejected) + len(oks) + (n if wave == 1 else 0) == len(tasks)
            assert b.state == "closed"
            assert b.metrics.half_open_in_flight == 0

    asyncio.run(main())
    assert counter.worst == n


def test_asyncio_ten_thousand_tasks_random_stress() -> None:
    clock = ManualClock()
    n = 2
    b = CircuitBreaker(
        on=ConnectionError,
        consecutive_failures=3,
        break_duration=0.25,
        half_open_calls=n,
        half_open_max_duration=None,
        store=MarkingStore(),
    )
    p = Pipeline(b, clock=clock)
    counter = TrialCounter()
    rng = random.Random(7)

    async def main() -> None:
        async def call(kind: float, hops: int) -> str:
            token = counter.enter()
            try:
                if token is not None:
                    assert counter.active[token] <= n
                for _ in range(hops):
                    await asyncio.sleep(0)
                if kind < 0.3:
                    raise ConnectionError
                if kind < 0.4:
                    raise KeyError("unhandled")
                return "ok"
            finally:
                counter.leave(token)

        async def one(i: int) -> None:
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            if rng.random() < 0.05:
                clock.advance(0.25)
            try:
                await p.acall(call, rng.random(), rng.randint(0, 4))
            except (ConnectionError, KeyError, CircuitOpenError):
                pass

        tasks = [asyncio.create_task(one(i)) for i in range(10_000)]
        for _ in range(3):
            await asyncio.sleep(0)
        for t in rng.sample(tasks, 1500):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    assert counter.trials > 0
    assert counter.worst <= n
    assert b.metrics.half_open_in_flight == 0
    assert sum(counter.active.values()) == 0
