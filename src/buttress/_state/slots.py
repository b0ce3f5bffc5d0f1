"""`SlotPool`: the admission state of one bulkhead partition (slots plus a FIFO queue).

Not pure in the strict sense (it holds a `threading.Lock` and opaque waiter objects), but
it never blocks, sleeps or reads a clock by itself: the flow supplies waiters from the
runtime (`buttress._runtime.base`) and a ``now`` function, and does the waiting.

Invariants, all maintained under ``lock``:

* ``0 <= in_use <= max_concurrent``; ``0 <= queued <= max_queued``.
* A slot is never returned to the pool while a live waiter is queued: `release` hands it
  straight to the oldest live waiter (its ticket becomes ``GRANTED``; ``in_use`` does not
  change). So admission is FIFO and a newcomer can never barge past a waiter (the fast
  path admits only when ``queued == 0``).
* Every ticket leaves ``WAITING`` exactly once: to ``GRANTED`` (by `release`), to
  ``ABANDONED`` (by `abandon`, when its waiter gave up) or to ``EXPIRED`` (by `release`,
  which skips a waiter whose deadline has already passed: under overload, handing a slot
  to a waiter that timed out but has not resumed yet would waste the slot for a loop turn
  or more; one overload run with a short ``max_wait`` saw 906 of 946 grants go to such
  waiters). A waiter that gives up after it
  was granted (cancelled or timed out at the very moment of the grant) owns a slot, and
  `abandon` hands that slot on like a `release`. No slot leaks, none is granted twice.
* Abandoned tickets are dropped lazily (skipped by `release`); the deque is compacted
  when they outnumber the live ones, so memory stays proportional to ``max_queued``.

``retry_after`` estimate: while the pool is full, `release` records the interval between
consecutive releases in an exponentially weighted moving average (weight 0.2 on the new
interval); the estimate of "time until a slot frees" is that average. It is ``None`` until
two consecutive releases were seen under saturation; the clock is read only then, never on
the uncontended path.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["ABANDONED", "EXPIRED", "GRANTED", "WAITING", "SlotPool", "Ticket"]

WAITING = 0
GRANTED = 1
ABANDONED = 2
EXPIRED = 3

_EWMA_WEIGHT = 0.2


class Ticket:
    """A queued caller's place in line: its state and its runtime waiter."""

    __slots__ = ("deadline", "state", "waiter")

    def __init__(self, waiter: Any, deadline: float | None = None) -> None:
        self.state = WAITING
        self.waiter = waiter
        self.deadline = deadline


class SlotPool:
    """Slots and a FIFO wait queue for one bulkhead partition.

    Args:
        max_concurrent: Slots, an int >= 1 (validated by the strategy).
        max_queued: Most callers allowed to wait, an int >= 0.
    """

    __slots__ = (
        "_last_full_release",
        "_queue",
        "in_use",
        "interval",
        "lock",
        "max_concurrent",
        "max_queued",
        "queued",
    )

    def __init__(self, max_concurrent: int, max_queued: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.lock = threading.Lock()
        self.in_use = 0
        self.queued = 0
        self._queue: deque[Ticket] | None = None  # created on the first wait (memory)
        self.interval: float | None = None
        """EWMA of seconds between releases while full, or ``None`` (see module docs)."""
        self._last_full_release: float | None = None

    def busy(self) -> bool:
        """``True`` while a slot is held or a caller waits (the partition must be kept)."""
        return self.in_use > 0 or self.queued > 0

    def try_acquire(self) -> bool:
        """Take a free slot if one is free and nobody waits; never queues."""
        with self.lock:
            if self.in_use < self.max_concurrent and not self.queued:
                self.in_use += 1
                return True
            return False

    def enqueue(self, waiter: Any, deadline: float | None = None) -> Ticket | bool:
        """Take a free slot, or queue ``waiter`` if there is room.

        Args:
            waiter: A runtime waiter to wake on grant, or ``None`` to never queue.
            deadline: When the waiter gives up (clock seconds), or ``None``; `release`
                never grants to a waiter whose deadline has passed.

        Returns:
            ``True`` if a slot was taken at once, a `Ticket` if queued (wait on
            ``waiter``, then check ``ticket.state``), ``False`` if rejected.
        """
        with self.lock:
            if self.in_use < self.max_concurrent and not self.queued:
                self.in_use += 1
                return True
            if waiter is None or self.queued >= self.max_queued:
                return False
            ticket = Ticket(waiter, deadline)
            if self._queue is None:
                self._queue = deque()
            self._queue.append(ticket)
            self.queued += 1
            return ticket

    def release(self, now: Callable[[], float]) -> None:
        """Return a slot: hand it to the oldest live waiter, or free it."""
        waiter = None
        with self.lock:
            t: float | None = None
            if self.in_use >= self.max_concurrent:
                t = now()
                self._saturated_release(t)
            elif self._last_full_release is not None:
                self._last_full_release = None
            queue = self._queue
            if self.queued and queue is not None:
                while queue:
                    ticket = queue.popleft()
                    if ticket.state == WAITING:
                        if ticket.deadline is not None:
                            if t is None:
                                t = now()
                            if ticket.deadline <= t:
                                # timed out but not resumed yet: its abandon() finds EXPIRED
                                ticket.state = EXPIRED
                                ticket.waiter = None
                                self.queued -= 1
                                continue
                        ticket.state = GRANTED
                        self.queued -= 1
                        waiter = ticket.waiter
                        ticket.waiter = None
                        break
            if waiter is None:
                self.in_use -= 1
        if waiter is not None:
            waiter.wake()

    def abandon(self, ticket: Ticket, now: Callable[[], float]) -> bool:
        """The waiter of ``ticket`` gives up (timed out, cancelled or rejected).

        Returns:
            ``True`` if the ticket had been granted meanwhile: its slot was handed on
            (or freed) here. ``False`` if it was still waiting and is now withdrawn.
        """
        with self.lock:
            if ticket.state == EXPIRED or ticket.state == ABANDONED:
                return False  # already out of the queue (skipped by release, or twice)
            if ticket.state != GRANTED:
                ticket.state = ABANDONED
                ticket.waiter = None
                self.queued -= 1
                queue = self._queue
                if queue is not None and len(queue) > 2 * self.queued + 32:
                    self._queue = deque(t for t in queue if t.state == WAITING)
                return False
        self.release(now)
        return True

    def _saturated_release(self, now: float) -> None:
        last = self._last_full_release
        if last is not None:
            gap = now - last
            if gap >= 0.0:
                interval = self.interval
                self.interval = (
                    gap if interval is None else interval + _EWMA_WEIGHT * (gap - interval)
                )
        self._last_full_release = now

    def retry_after(self) -> float | None:
        """Estimated seconds until a slot frees, or ``None`` (see module docs)."""
        return self.interval
