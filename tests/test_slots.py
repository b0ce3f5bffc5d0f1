"""SlotPool (bulkhead partition state): a stateful model test, compaction, the estimate."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from buttress._state.slots import ABANDONED, GRANTED, WAITING, SlotPool, Ticket


class FakeWaiter:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def _now() -> float:
    return 0.0


class SlotPoolMachine(RuleBasedStateMachine):
    """Random acquire / queue / release / give-up sequences against a reference model."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = SlotPool(max_concurrent=2, max_queued=3)
        self.holders = 0  # callers holding a slot (model)
        self.line: list[Ticket] = []  # waiting tickets, FIFO (model)
        self.granted: list[Ticket] = []  # granted, not yet running or given up

    @rule()
    def arrive_without_waiting(self) -> None:
        got = self.pool.enqueue(None)
        free = self.holders + len(self.granted) < 2 and not self.line
        assert got is free
        if got:
            self.holders += 1

    @rule()
    def arrive_and_queue(self) -> None:
        got = self.pool.enqueue(FakeWaiter())
        if self.holders + len(self.granted) < 2 and not self.line:
            assert got is True
            self.holders += 1
        elif len(self.line) < 3:
            assert isinstance(got, Ticket)
            self.line.append(got)
        else:
            assert got is False

    def _hand_on(self, action: Any) -> None:
        """Run ``action`` (which returns one slot) and model the hand-over to the head."""
        head = self.line[0] if self.line else None
        waiter = head.waiter if head is not None else None
        action()
        if head is not None:
            self.line.pop(0)
            assert head.state == GRANTED
            assert waiter is not None
            assert waiter.woken == 1
            self.granted.append(head)

    @precondition(lambda self: self.holders > 0)
    @rule()
    def release(self) -> None:
        self.holders -= 1
        self._hand_on(lambda: self.pool.release(_now))

    @precondition(lambda self: bool(self.granted))
    @rule(give_up=st.booleans())
    def granted_waiter_runs_or_gives_up(self, give_up: bool) -> None:
        ticket = self.granted.pop(0)
        if give_up:  # cancelled or timed out at the moment of the grant: hand the slot on
            self._hand_on(lambda: self._abandon_granted(ticket))
        else:
            self.holders += 1

    def _abandon_granted(self, ticket: Ticket) -> None:
        assert self.pool.abandon(ticket, _now) is True

    @precondition(lambda self: bool(self.line))
    @rule(data=st.data())
    def waiter_gives_up(self, data: Any) -> None:
        ticket = data.draw(st.sampled_from(self.line))
        assert self.pool.abandon(ticket, _now) is False
        assert ticket.state == ABANDONED
        self.line.remove(ticket)

    @invariant()
    def counts_match_the_model(self) -> None:
        assert self.pool.in_use == self.holders + len(self.granted)
        assert self.pool.in_use <= 2
        assert self.pool.queued == len(self.line) <= 3
        assert all(t.state == WAITING for t in self.line)


TestSlotPool = SlotPoolMachine.TestCase
TestSlotPool.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_abandoned_tickets_are_compacted() -> None:
    pool = SlotPool(max_concurrent=1, max_queued=5)
    assert pool.try_acquire()
    for _ in range(10_000):  # waiters that time out while the slot stays held
        ticket = pool.enqueue(FakeWaiter())
        assert isinstance(ticket, Ticket)
        pool.abandon(ticket, _now)
    assert pool._queue is not None
    assert len(pool._queue) <= 33
    assert (pool.in_use, pool.queued) == (1, 0)


def test_release_interval_estimate_only_under_saturation() -> None:
    pool = SlotPool(max_concurrent=1, max_queued=0)
    times = iter([1.0, 4.0, 5.0])
    assert pool.try_acquire()
    pool.release(lambda: next(times))  # full at release: t=1
    assert pool.retry_after() is None
    assert pool.try_acquire()
    pool.release(lambda: next(times))  # t=4: interval 3
    assert pool.retry_after() == 3.0
    assert pool.try_acquire()
    pool.release(lambda: next(times))  # t=5: interval 1, EWMA 3 + 0.2 * (1 - 3)
    assert pool.retry_after() == 2.6
    big = SlotPool(max_concurrent=2, max_queued=0)
    assert big.try_acquire()
    big.release(lambda: 1 / 0)  # not full: the clock is never read
    assert big.retry_after() is None


class _Waker:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def test_release_skips_waiters_whose_deadline_passed() -> None:
    """Regression: under overload most grants went to waiters that had already timed out."""
    from buttress._state.slots import EXPIRED, GRANTED, SlotPool

    pool = SlotPool(1, 10)
    assert pool.enqueue(None) is True  # the one slot is busy
    w1, w2, w3 = _Waker(), _Waker(), _Waker()
    t1 = pool.enqueue(w1, 1.0)
    t2 = pool.enqueue(w2, 1.5)
    t3 = pool.enqueue(w3, None)
    assert pool.queued == 3
    pool.release(lambda: 2.0)
    assert (t1.state, t2.state, t3.state) == (EXPIRED, EXPIRED, GRANTED)  # type: ignore[union-attr]
    assert (w1.woken, w2.woken, w3.woken) == (0, 0, 1)
    assert (pool.in_use, pool.queued) == (1, 0)
    # the expired waiters resume later and give up: nothing is counted twice
    assert pool.abandon(t1, lambda: 2.1) is False  # type: ignore[arg-type]
    assert pool.abandon(t2, lambda: 2.1) is False  # type: ignore[arg-type]
    assert (pool.in_use, pool.queued) == (1, 0)
    pool.release(lambda: 3.0)
    assert (pool.in_use, pool.queued) == (0, 0)


def test_waiter_before_its_deadline_is_granted() -> None:
    from buttress._state.slots import GRANTED, SlotPool

    pool = SlotPool(1, 10)
    assert pool.enqueue(None) is True
    w = _Waker()
    t = pool.enqueue(w, 5.0)
    pool.release(lambda: 4.0)
    assert t.state == GRANTED  # type: ignore[union-attr]
    assert w.woken == 1
