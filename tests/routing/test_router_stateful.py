"""Stateful property test: Router invariants under any interleaving of calls, failures,
health changes and time."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from buttress.routing import (
    Endpoint,
    EndpointState,
    NoEndpointAvailableError,
    OutlierDetector,
    Router,
)


class RouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        endpoints = [
            Endpoint(f"{z}{i}p{p}", zone=z, priority=p)
            for p in (0, 1)
            for z in "ab"
            for i in range(3)
        ]
        self.outlier = OutlierDetector(
            consecutive_failures=2, base_ejection_time=5, interval=3, max_ejection_ratio=0.5
        )
        self.router = Router(
            endpoints,
            balancer="peak_ewma",
            outlier=self.outlier,
            zone="a",
            failback_delay=2.0,
        )
        self.rng = random.Random(0)
        self.now = 0.0
        self.inflight: list[tuple[EndpointState, float]] = []

    @rule(data=st.data())
    def call(self, data: st.DataObject) -> None:
        states = self.router.states
        avoid = data.draw(st.lists(st.sampled_from(states), max_size=4))
        try:
            s = self.router.pick(self.now, self.rng, avoid=avoid)
        except NoEndpointAvailableError:
            return
        # never an unavailable endpoint unless in panic mode
        assert s.available or self.router.panic or avoid
        # avoidance is honoured while an untried available endpoint exists
        untried = [x for x in self.router.available() if x not in avoid]
        if untried and not self.router.panic:
            assert s not in avoid
        self.router.start(s, self.now)
        self.inflight.append((s, self.now))

    @precondition(lambda self: self.inflight)
    @rule(index=st.integers(0, 100), failed=st.booleans(), cancel=st.booleans())
    def finish(self, index: int, failed: bool, cancel: bool) -> None:
        s, start = self.inflight.pop(index % len(self.inflight))
        if cancel:
            self.router.cancel(s, self.now, self.now - start)
        else:
            self.router.finish(s, self.now, self.now - start, failed)

    @rule(dt=st.floats(0.0, 4.0))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.router.tick(self.now)

    @rule(index=st.integers(0, 11), healthy=st.booleans())
    def health(self, index: int, healthy: bool) -> None:
        self.router.set_health(self.router.states[index], healthy, self.now)

    @invariant()
    def outstanding_matches_inflight(self) -> None:
        for s in self.router.states:
            assert s.outstanding == sum(1 for x, _ in self.inflight if x is s)
            assert s.outstanding >= 0

    @invariant()
    def ejection_cap(self) -> None:
        ejected = sum(s.ejected_until is not None for s in self.router.states)
        assert ejected <= max(1, int(0.5 * len(self.router.states)))

    @invariant()
    def ejections_end_in_the_future_or_are_pending(self) -> None:
        for s in self.router.states:
            if s.ejected_until is not None:
                assert s.ejected_until - self.now <= self.outlier.max_ejection_time + 1e-9

    @invariant()
    def tier_is_valid(self) -> None:
        assert 0 <= self.router.tier < len(self.router.priorities)


TestRouter = RouterMachine.TestCase
TestRouter.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
