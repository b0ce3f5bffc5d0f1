"""`LatencyTracker`: percentiles of recently observed latencies, in bounded memory.

A pure object: time is passed in (``now``), nothing sleeps or reads a clock. It keeps the
last ``window`` samples twice: in arrival order (a ring, to know which sample to forget)
and sorted (a plain list kept sorted with `bisect`), so

* recording a sample is one `bisect.insort` plus one removal, both a ``memmove`` of at
  most ``window`` pointers (about 0.5-1 us for the default 1,000 on the reference machine);
* a percentile is one list index, O(1).

Memory: ``window`` floats twice plus their timestamps (about 40 bytes per sample).

Percentiles use the **nearest-rank** definition: the ``q``-percentile of ``n`` samples is
the ``ceil(q * n)``-th smallest (1-based), so ``q = 0.95`` over 100 samples is the 95th
smallest and never an interpolated value that was not observed.

Thread-safe (one lock); `Hedge` shares one tracker between all calls of a pipeline.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque

from .._core.validate import check_count, check_optional_duration

__all__ = ["LatencyTracker"]


class LatencyTracker:
    """The last ``window`` latency samples and their percentiles.

    Args:
        window: Number of most recent samples kept, an int >= 1 (default 1000).
        max_age: Seconds after which a sample is forgotten even if fewer than ``window``
            newer ones arrived, or ``None`` (default) to keep samples until displaced.
            Keeps a quiet client from hedging on hour-old latencies.

    Raises:
        ConfigurationError: ``window`` < 1, or ``max_age`` negative or NaN.
    """

    __slots__ = ("_lock", "_ring", "_sorted", "max_age", "window")

    def __init__(self, window: int = 1000, *, max_age: float | None = None) -> None:
        self.window = check_count("LatencyTracker", "window", window)
        self.max_age = check_optional_duration(
            "LatencyTracker", "max_age", max_age, strictly_positive=True
        )
        self._ring: deque[tuple[float, float]] = deque()
        self._sorted: list[float] = []
        self._lock = threading.Lock()

    def record(self, now: float, seconds: float) -> None:
        """Add one observed latency of ``seconds`` (>= 0), observed at time ``now``.

        Negative or NaN latencies are ignored (a clock can misbehave; the tracker must not).
        """
        if not seconds >= 0.0:
            return
        with self._lock:
            ring = self._ring
            ordered = self._sorted
            if len(ring) >= self.window:
                _, old = ring.popleft()
                del ordered[bisect.bisect_left(ordered, old)]
            ring.append((now, seconds))
            bisect.insort(ordered, seconds)
            if self.max_age is not None:
                self._expire(now)

    def _expire(self, now: float) -> None:
        ring = self._ring
        ordered = self._sorted
        horizon = now - self.max_age  # type: ignore[operator]
        while ring and ring[0][0] < horizon:
            _, old = ring.popleft()
            del ordered[bisect.bisect_left(ordered, old)]

    def count(self, now: float) -> int:
        """Samples currently kept (after forgetting those older than ``max_age``)."""
        with self._lock:
            if self.max_age is not None:
                self._expire(now)
            return len(self._sorted)

    def percentile(self, q: float, now: float, *, min_samples: int = 1) -> float | None:
        """The nearest-rank ``q``-percentile of the kept samples, in seconds.

        Args:
            q: Quantile as a ratio in (0, 1] (0.95 for p95, 1.0 for the maximum).
            now: Current time in seconds (only used to forget samples past ``max_age``).
            min_samples: Fewer kept samples than this give ``None`` (not enough data).

        Raises:
            ValueError: ``q`` outside (0, 1].
        """
        if not 0.0 < q <= 1.0:
            raise ValueError(f"LatencyTracker.percentile: q must be in (0, 1], got {q!r}")
        with self._lock:
            if self.max_age is not None:
                self._expire(now)
            ordered = self._sorted
            n = len(ordered)
            if n == 0 or n < min_samples:
                return None
            rank = max(1, math.ceil(q * n - 1e-9))
            return ordered[min(rank, n) - 1]

    def clear(self) -> None:
        """Forget every sample."""
        with self._lock:
            self._ring.clear()
            self._sorted.clear()

    def __repr__(self) -> str:
        return f"LatencyTracker(window={self.window}, max_age={self.max_age!r})"
