"""Contract test for circuit stores: any `buttress.stores.base.Circuit` against a small,
obviously correct reference model of the breaker, as a hypothesis state machine.

The model keeps a plain list of outcomes and recomputes every window from scratch; the
implementations keep rings and rolling buckets (and the memory store folds lock-free
batched successes lazily). A shared-store implementation (Redis) runs the same machine::

    from circuit_contract import make_circuit_machine
    TestRedisCircuit = make_circuit_machine(
        lambda policy: RedisCircuit(store, "t", uuid4().hex, policy, caller_clock=True)
    ).TestCase

The store must then use the ``now`` it is given (inject a clock for the test), since the
machine compares exact times. ``windows="time"`` (or ``"count"``) draws only policies with
that kind of window.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from buttress import backoff
from buttress._state.circuit import Admission, CircuitPolicy, CircuitSnapshot, CircuitState
from buttress.stores.base import Circuit, CircuitAction, FastCircuit
from buttress.stores.memory import MemoryCircuit


@dataclass
class Model:
    """The breaker as specified in the docs, computed the naive way."""

    p: dict[str, Any]
    state: str = "closed"
    gen: int = 0
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)
    consecutive: int = 0
    opens: int = 0
    brk: float = 0.0
    until: float = 0.0
    closed_since: float = 0.0
    round_start: float = 0.0
    in_flight: int = 0
    ok: int = 0
    bad: int = 0

    # windows, recomputed from the full outcome list
    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        if self.p["window"] is not None:
            return self.outcomes[-self.p["window"] :] if self.outcomes else []
        width = self.p["window_duration"] / self.p["window_buckets"]
        newest = math.floor(now / width)
        return [
            o for o in self.outcomes if math.floor(o[0] / width) > newest - self.p["window_buckets"]
        ]

    def break_for(self, opens: int) -> float:
        b = self.p["break"]
        if isinstance(b, float):
            return b
        return min(4.0, 1.0 * 2.0 ** (opens - 1))

    def open(self, now: float) -> None:
        if self.state == "closed" and now - self.closed_since >= self.p["break_reset_after"]:
            self.opens = 0
        self.opens += 1
        self.brk = self.break_for(self.opens)
        self.until = now + self.brk
        self.state = "open"
        self.gen += 1
        self.in_flight = self.ok = self.bad = 0

    def close(self, now: float) -> None:
        self.state = "closed"
        self.gen += 1
        self.outcomes = []
        self.consecutive = 0
        self.closed_since = now
        self.in_flight = self.ok = self.bad = 0

    def acquire(self, now: float) -> tuple[bool, bool, str, float | None, str | None]:
        """(permitted, trial, state, retry_after, previous_state)"""
        if self.state == "closed":
            return True, False, "closed", None, None
        if self.state == "isolated":
            return False, False, "isolated", None, None
        previous = None
        if self.state == "open":
            if now < self.until:
                return False, False, "open", self.until - now, None
            self.state = "half_open"
            self.gen += 1
            self.round_start = now
            self.in_flight = self.ok = self.bad = 0
            previous = "open"
        n = self.p["half_open_calls"]
        if self.in_flight + self.ok + self.bad < n:
            self.in_flight += 1
            return True, True, "half_open", None, previous
        limit = self.p["half_open_max_duration"]
        if limit is not None and self.in_flight > 0 and now - self.round_start >= limit:
            self.open(now)
            return False, False, "open", self.until - now, "half_open"
        return False, False, "half_open", None, previous

    def record(self, token: int, failed: bool, duration: float, now: float) -> str | None:
        if token != self.gen:
            return None
        slow_d = self.p["slow_call_duration"]
        slow = slow_d is not None and duration > slow_d
        if self.state == "closed":
            self.outcomes.append((now, failed, slow))
            self.consecutive = self.consecutive + 1 if failed else 0
            if not failed and not slow:
                return None
            w = self.window(now)
            calls = len(w)
            fails = sum(1 for o in w if o[1])
            slows = sum(1 for o in w if o[2])
            trip = self.p["consecutive_failures"] is not None and (
                self.consecutive >= self.p["consecutive_failures"]
            )
            if calls >= self.p["min_throughput"] and calls > 0:
                ratio = self.p["failure_ratio"]
                if ratio is not None and fails >= ratio * calls:
                    trip = True
                if slow_d is not None and slows >= self.p["slow_call_ratio"] * calls:
                    trip = True
            if trip:
                self.open(now)
                return "closed"
            return None
        if self.state == "half_open" and self.in_flight > 0:
            self.in_flight -= 1
            n, k = self.p["half_open_calls"], self.p["half_open_successes"]
            if failed or slow:
                self.bad += 1
                if self.bad > n - k:
                    self.open(now)
                    return "half_open"
            else:
                self.ok += 1
                if self.ok >= k:
                    self.close(now)
                    return "half_open"
        return None

    def release(self, token: int) -> None:
        if token == self.gen and self.state == "half_open" and self.in_flight > 0:
            self.in_flight -= 1

    def manual(self, action: str, now: float) -> str | None:
        if action == "isolate":
            if self.state == "isolated":
                return None
            previous = self.state
            self.state = "isolated"
            self.gen += 1
            self.in_flight = self.ok = self.bad = 0
            return previous
        previous = self.state if self.state != "closed" else None
        self.close(now)
        if action == "reset":
            self.opens = 0
            self.brk = 0.0
        return previous

    def effective(self, now: float) -> str:
        if self.state == "open" and now >= self.until:
            return "half_open"
        return self.state


@st.composite
def policies(draw: st.DrawFn, windows: str = "any") -> dict[str, Any]:
    timed = draw(st.booleans()) if windows == "any" else windows == "time"
    window = None if timed else draw(st.integers(1, 6))
    p: dict[str, Any] = {
        "window": window,
        "window_duration": draw(st.sampled_from([2.0, 3.0, 5.0])) if timed else None,
        "window_buckets": draw(st.integers(1, 4)),
        "failure_ratio": draw(st.sampled_from([None, 0.25, 0.5, 1.0])),
        "consecutive_failures": draw(st.sampled_from([None, 1, 2, 3])),
        "slow_call_duration": draw(st.sampled_from([None, 1.0])),
        "slow_call_ratio": draw(st.sampled_from([0.5, 1.0])),
        "break": draw(st.sampled_from([0.0, 1.0, 3.0, "exp"])),
        "break_reset_after": draw(st.sampled_from([0.0, 5.0, 60.0])),
        "half_open_calls": draw(st.integers(1, 3)),
        "half_open_max_duration": draw(st.sampled_from([None, 2.0, 6.0])),
    }
    p["min_throughput"] = draw(st.integers(1, window if window is not None else 6))
    p["half_open_successes"] = draw(st.integers(1, p["half_open_calls"]))
    if p["failure_ratio"] is None and p["consecutive_failures"] is None:
        p["consecutive_failures"] = 2
    return p


def build_policy(p: dict[str, Any]) -> CircuitPolicy:
    return CircuitPolicy(
        failure_ratio=p["failure_ratio"],
        consecutive_failures=p["consecutive_failures"],
        window=p["window"],
        window_duration=p["window_duration"],
        window_buckets=p["window_buckets"],
        min_throughput=p["min_throughput"],
        slow_call_duration=p["slow_call_duration"],
        slow_call_ratio=p["slow_call_ratio"],
        break_duration=(
            backoff.exponential(1.0, 2.0, cap=4.0, jitter="none")
            if p["break"] == "exp"
            else p["break"]
        ),
        break_reset_after=p["break_reset_after"],
        half_open_calls=p["half_open_calls"],
        half_open_successes=p["half_open_successes"],
        half_open_max_duration=p["half_open_max_duration"],
    )


class BreakerMachine(RuleBasedStateMachine):
    factory: Callable[[CircuitPolicy], Circuit] = MemoryCircuit
    use_fast_path = True
    windows = "any"

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.held: list[tuple[int, bool]] = []
        self.model: Model
        self.cell: Any

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        p = data.draw(policies(self.windows), label="policy")
        self.p = p
        self.model = Model(p)
        self.cell = type(self).factory(build_policy(p))

    @rule(dt=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 7.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def acquire(self) -> None:
        adm = self.cell.try_acquire(self.now)
        permitted, trial, state, retry_after, previous = self.model.acquire(self.now)
        assert (adm.permitted, adm.trial, adm.state) == (permitted, trial, state)
        assert adm.retry_after == retry_after
        assert adm.previous_state == previous
        assert adm.token == self.model.gen
        if adm.permitted:
            self.held.append((adm.token, adm.trial))

    @precondition(lambda self: bool(self.held))
    @rule(i=st.integers(0, 100), failed=st.booleans(), slow=st.booleans())
    def finish(self, i: int, failed: bool, slow: bool) -> None:
        token, _ = self.held.pop(i % len(self.held))
        duration = 2.0 if slow else 0.5
        cell = self.cell
        expected = self.model.record(token, failed, duration, self.now)
        fast = (
            self.use_fast_path
            and isinstance(cell, FastCircuit)
            and not failed
            and not (slow and self.p["slow_call_duration"] is not None)
            and token == cell.closed_gen
            and self.now < cell.batch_until
        )
        if fast:  # the strategy's closed happy path: no lock, batched
            cell.count_success()
            assert expected is None
        else:
            snap = cell.record(token, failed, duration, self.now)
            assert snap.previous_state == expected

    @precondition(lambda self: bool(self.held))
    @rule(i=st.integers(0, 100))
    def release(self, i: int) -> None:
        token, _ = self.held.pop(i % len(self.held))
        self.cell.release(token, self.now)
        self.model.release(token)

    @rule(action=st.sampled_from(["isolate", "close", "reset"]))
    def manual(self, action: str) -> None:
        snap = self.cell.transition(action, self.now)  # type: ignore[arg-type]
        assert snap.previous_state == self.model.manual(action, self.now)

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        m = self.model
        snap = self.cell.snapshot(self.now)
        assert snap.state == m.effective(self.now)
        assert snap.generation == m.gen
        assert snap.consecutive_failures == m.consecutive
        assert snap.opens == m.opens
        assert snap.break_duration == m.brk
        expected_retry = m.until - self.now if m.state == "open" and self.now < m.until else None
        assert snap.retry_after == expected_retry
        assert (snap.half_open_in_flight, snap.half_open_successes, snap.half_open_failures) == (
            m.in_flight,
            m.ok,
            m.bad,
        )
        assert snap.half_open_in_flight <= self.p["half_open_calls"]
        if isinstance(self.cell, MemoryCircuit):
            # the state survives a save/load round trip (what a shared store may rely on)
            with self.cell.lock:
                data = self.cell.state.to_dict()
            copy = CircuitState.from_dict(self.cell.state.policy, json.loads(json.dumps(data)))
            assert copy.to_dict() == data
            assert copy.snapshot(self.now) == snap
        if m.state == "closed":
            w = m.window(self.now)
            assert snap.calls == len(w)
            assert snap.failures == sum(1 for o in w if o[1])
            assert snap.slow_calls == sum(1 for o in w if o[2])


def make_circuit_machine(
    factory: Callable[[CircuitPolicy], Circuit],
    *,
    use_fast_path: bool = True,
    max_examples: int = 100,
    windows: str = "any",
) -> type[BreakerMachine]:
    """A state machine class checking circuits built by ``factory(policy)``; ``windows``
    (``"any"``, ``"count"`` or ``"time"``) restricts the policies drawn."""
    assert windows in ("any", "count", "time")
    machine = type(
        "CircuitMachine",
        (BreakerMachine,),
        {"factory": staticmethod(factory), "use_fast_path": use_fast_path, "windows": windows},
    )
    machine.TestCase.settings = settings(
        max_examples=max_examples,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return machine


class SavedCircuit:
    """A `Circuit` whose state lives serialised in a dict, as in a key-value server:
    every operation loads, decides with the pure machine and saves (under a lock standing
    in for the server's compare-and-set)."""

    def __init__(self, policy: CircuitPolicy) -> None:
        self.policy = policy
        self.server: dict[str, str] = {"k": json.dumps(CircuitState(policy).to_dict())}
        self.lock = threading.Lock()

    def _run(self, op: Any) -> Any:
        with self.lock:
            state = CircuitState.from_dict(self.policy, json.loads(self.server["k"]))
            result = op(state)
            self.server["k"] = json.dumps(state.to_dict())
            return result

    def try_acquire(self, now: float, rng: Any = None) -> Admission:
        return self._run(lambda s: s.try_acquire(now, rng))  # type: ignore[no-any-return]

    def record(
        self, token: int, failed: bool, duration: float | None, now: float, rng: Any = None
    ) -> CircuitSnapshot:
        def op(s: CircuitState) -> CircuitSnapshot:
            return s.snapshot(now, s.record(token, failed, duration, now, rng))

        return self._run(op)  # type: ignore[no-any-return]

    def release(self, token: int, now: float) -> None:
        self._run(lambda s: s.release(token, now))

    def snapshot(self, now: float) -> CircuitSnapshot:
        return self._run(lambda s: s.snapshot(now))  # type: ignore[no-any-return]

    def transition(self, action: CircuitAction, now: float) -> CircuitSnapshot:
        return self._run(lambda s: s.snapshot(now, getattr(s, action)(now)))  # type: ignore[no-any-return]

    async def atry_acquire(self, now: float, rng: Any = None) -> Admission:
        return self.try_acquire(now, rng)

    async def arecord(
        self, token: int, failed: bool, duration: float | None, now: float, rng: Any = None
    ) -> CircuitSnapshot:
        return self.record(token, failed, duration, now, rng)

    async def arelease(self, token: int, now: float) -> None:
        self.release(token, now)

    async def asnapshot(self, now: float) -> CircuitSnapshot:
        return self.snapshot(now)

    async def atransition(self, action: CircuitAction, now: float) -> CircuitSnapshot:
        return self.transition(action, now)


class SavedStore:
    """A non-local `CircuitStore` handing out `SavedCircuit`s (exercises the strategy's
    store path: one ``try_acquire`` and one ``record`` per call)."""

    local = False
    description = "saved"

    def __init__(self) -> None:
        self.circuits: dict[Any, SavedCircuit] = {}

    def circuit(self, name: str, key: Any, policy: CircuitPolicy) -> SavedCircuit:
        return self.circuits.setdefault((name, key), SavedCircuit(policy))
