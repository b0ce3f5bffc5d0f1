"""LatencyTracker against a reference model (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from buttress._state.latency import LatencyTracker

samples = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=5.0),  # time step
        st.floats(min_value=0.0, max_value=10.0),  # latency
    ),
    max_size=80,
)


@given(
    samples,
    st.integers(min_value=1, max_value=20),
    st.one_of(st.none(), st.floats(min_value=0.5, max_value=20.0)),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_percentile_matches_nearest_rank_of_the_kept_samples(
    steps: list[tuple[float, float]], window: int, max_age: float | None, q: float
) -> None:
    tracker = LatencyTracker(window, max_age=max_age)
    model: list[tuple[float, float]] = []
    now = 0.0
    for step, latency in steps:
        now += step
        tracker.record(now, latency)
        model.append((now, latency))
        model = model[-window:]
        if max_age is not None:
            model = [(t, v) for t, v in model if t >= now - max_age]
        kept = sorted(v for _, v in model)
        expected = kept[max(1, math.ceil(q * len(kept) - 1e-9)) - 1] if kept else None
        assert tracker.percentile(q, now) == expected
        assert tracker.count(now) == len(kept)
        assert len(tracker._sorted) <= window  # bounded memory
