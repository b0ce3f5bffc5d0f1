"""GCRA: a token bucket computed from one number, the theoretical arrival time.

The generic cell rate algorithm (ITU-T I.371, the "virtual scheduling" form; also how
Brandur Leach's redis-cell and Stripe-style limiters do it) keeps, per bucket, only
``tat``: the time at which the bucket would be full again if nothing else arrived. With

* ``interval = 1 / rate`` seconds per permit, and
* ``tolerance = burst * interval`` seconds (how far ``tat`` may run ahead of ``now``),

a request for ``permits`` at ``now`` computes ``new_tat = max(tat, now) + permits *
interval`` and conforms when ``new_tat - tolerance <= now``. Otherwise it must wait
``new_tat - tolerance - now`` seconds. It is exactly a token bucket of capacity ``burst``
refilled at ``rate`` per second, with no refill timer and no background thread: time is
passed in, nothing here reads a clock, sleeps or blocks.

Guarantees (checked by property tests): over any interval of length ``L`` the permits
admitted (at their admission times, i.e. after any reserved wait) never exceed
``burst + rate * L``; waits are never negative; a rejected request's wait is exact (at
``now + wait`` the same request conforms, absent other traffic).

Waiting: ``take(..., max_wait=w)`` *reserves* when the wait fits (``tat`` moves forward, the
caller sleeps the returned wait and then proceeds). A reservation is not refunded if the
caller gives up (cancelled while sleeping): the limiter never admits more than its rate,
and at most ``rate * max_wait`` permits can be forfeited that way.

Clock steps: a forward jump of ``now`` refills at most ``burst`` (``max(tat, now)`` forgets
credit beyond a full bucket), so it can never let more than one burst through. Each
bucket also remembers the latest ``now`` it saw and treats an earlier one as that latest
reading, so a clock that steps backwards can never lock callers out.

Floating point: waits at or below ``EPSILON`` (1 ns) count as zero, so a rate such as 10/s
(interval 0.1, not exact in binary) does not reject a request at the exact boundary.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["EPSILON", "Gcra", "GcraTable", "gcra_take"]

EPSILON = 1e-9
"""Waits at or below this many seconds are rounded to zero."""


def gcra_take(
    tat: float,
    now: float,
    permits: float,
    interval: float,
    tolerance: float,
    max_wait: float,
) -> tuple[float, float]:
    """One GCRA decision (pure). Returns ``(tat after, wait)``.

    Args:
        tat: The bucket's theoretical arrival time (``-inf`` or any value <= ``now`` for a
            full bucket).
        now: Current time in seconds.
        permits: Permits asked for, > 0.
        interval: Seconds per permit (``1 / rate``).
        tolerance: ``burst * interval`` seconds.
        max_wait: Longest acceptable wait in seconds (>= 0; ``inf`` allowed).

    Returns:
        ``wait == 0``: admitted now, ``tat`` advanced. ``0 < wait <= max_wait``:
        reserved, ``tat`` advanced, proceed after ``wait`` seconds. ``wait > max_wait``:
        rejected, ``tat`` unchanged, ``wait`` is the exact time until these permits
        conform. ``inf`` (even when ``max_wait`` is ``inf``): rejected, ``permits``
        exceeds ``burst`` and never can conform.
    """
    new_tat = (tat if tat > now else now) + permits * interval
    wait = new_tat - tolerance - now
    if wait <= EPSILON:
        return new_tat, 0.0
    if permits * interval > tolerance + EPSILON:
        return tat, math.inf
    if wait <= max_wait:
        return new_tat, wait
    if wait <= max_wait + EPSILON:  # rounding: a reserved wait never exceeds max_wait
        return new_tat, max_wait
    return tat, wait


class Gcra:
    """One GCRA bucket (thread-safe).

    Args:
        rate: Permits per second, > 0 (validated by the caller).
        burst: Bucket capacity in permits, >= 1 (validated by the caller).
    """

    __slots__ = ("_lock", "burst", "interval", "last_now", "rate", "tat", "tolerance")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.interval = 1.0 / rate
        self.tolerance = burst * self.interval
        self.tat = -math.inf
        self.last_now = -math.inf
        self._lock = threading.Lock()

    def take(self, now: float, permits: float = 1.0, max_wait: float = 0.0) -> float:
        """Take ``permits`` at ``now``; see `gcra_take` for the meaning of the result."""
        with self._lock:
            if now < self.last_now:
                now = self.last_now
            else:
                self.last_now = now
            self.tat, wait = gcra_take(
                self.tat, now, permits, self.interval, self.tolerance, max_wait
            )
            return wait

    def wait_time(self, now: float, permits: float = 1.0) -> float:
        """Seconds until ``permits`` would conform at ``now`` (0 if now), taking nothing."""
        with self._lock:
            now = max(now, self.last_now)
            return gcra_take(self.tat, now, permits, self.interval, self.tolerance, 0.0)[1]

    def available(self, now: float) -> float:
        """Permits that could be taken at ``now`` without waiting (0..``burst``)."""
        with self._lock:
            now = max(now, self.last_now)
            ahead = self.tat - now if self.tat > now else 0.0
            return max(0.0, (self.tolerance - ahead) / self.interval)


class GcraTable:
    """Per-key GCRA buckets with a bounded number of keys (LRU eviction), thread-safe.

    Stores one float per key in an `OrderedDict` (no object per key). Beyond
    ``max_keys``, the least recently used key is forgotten; if it comes back, its bucket
    starts full: a key evicted before its bucket refilled may get up to one extra burst.
    Size ``max_keys`` above the number of keys active within ``burst / rate`` seconds to
    make that impossible in practice.

    Args:
        max_keys: Most keys kept, an int >= 1 (validated by the caller).
    """

    __slots__ = ("_lock", "_tats", "evictions", "last_now", "max_keys")

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._tats: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()
        self.last_now = -math.inf
        self.evictions = 0

    def take(
        self,
        key: Hashable,
        now: float,
        permits: float,
        interval: float,
        tolerance: float,
        max_wait: float,
    ) -> float:
        """Take ``permits`` from ``key``'s bucket; see `gcra_take` for the result."""
        tats = self._tats
        with self._lock:
            if now < self.last_now:
                now = self.last_now
            else:
                self.last_now = now
            tat = tats.get(key)
            if tat is None:
                new_tat, wait = gcra_take(-math.inf, now, permits, interval, tolerance, max_wait)
                if new_tat != -math.inf:
                    tats[key] = new_tat
                    if len(tats) > self.max_keys:
                        tats.popitem(last=False)
                        self.evictions += 1
                return wait
            new_tat, wait = gcra_take(tat, now, permits, interval, tolerance, max_wait)
            tats[key] = new_tat
            tats.move_to_end(key)
            return wait

    def wait_time(
        self, key: Hashable, now: float, permits: float, interval: float, tolerance: float
    ) -> float:
        """Seconds until ``permits`` would conform for ``key`` (0 if now), taking nothing."""
        with self._lock:
            tat = self._tats.get(key, -math.inf)
            now = max(now, self.last_now)
            return gcra_take(tat, now, permits, interval, tolerance, 0.0)[1]

    def __len__(self) -> int:
        return len(self._tats)

    def __contains__(self, key: object) -> bool:
        return key in self._tats

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self._tats.clear()
