"""Balancers: pure selection policies over endpoint states, time and randomness passed in.

A balancer never reads a clock, never sleeps and never draws from the `random` module:
``pick(candidates, now, rng)`` takes the candidates (a non-empty sequence of
`EndpointState`), the current time in seconds and a `random.Random`. The statistics it
reads live on each `EndpointState`, updated by ``on_start`` / ``on_finish``. The same
objects run in pipelines, in the lab's simulator and in the benchmarks.

Algorithms:

* `RoundRobin`: cycle through the candidates (load-oblivious).
* `RandomChoice`: uniform random (load-oblivious).
* `LeastRequest`: power of two choices on outstanding requests (Mitzenmacher; Envoy's
  ``LEAST_REQUEST`` with ``choice_count`` 2; Finagle's default "P2C least loaded").
* `PeakEwma`: power of two choices on ``rtt_estimate * (outstanding + 1)`` where the RTT
  estimate is a peak-sensitive exponentially weighted moving average (Finagle
  ``P2CPeakEwma``, Linkerd's "Beyond Round Robin" 2016). The default: it wins S10 (99.9 %
  success at a 1 s timeout with one replica pinned at 2 s, against 95 % for round robin).

Errors are penalised (ours; neither Finagle nor Envoy do this in the balancer itself): a
host that fails fast has few outstanding requests and a low latency, so least-loaded
policies would *send it more* traffic. Each failure adds ``failure_penalty`` to a score
that decays exponentially with time constant ``penalty_decay``; `LeastRequest` adds the
score to the outstanding count, `PeakEwma` adds it to ``outstanding + 1`` and records a
failure's latency as at least the mean latency of recent successes (a fast error never
makes an endpoint look fast). With the defaults (1 per failure, 10 s), a host that fails
every call settles where its score matches its peers' load, about 1.5 calls/s at S10's
load, and outlier ejection removes it altogether.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

from .._core.validate import check_duration
from .._exceptions import ConfigurationError
from .endpoint import Endpoint

__all__ = [
    "BALANCERS",
    "Balancer",
    "EndpointState",
    "LeastRequest",
    "PeakEwma",
    "RandomChoice",
    "RoundRobin",
    "make_balancer",
]

_exp = math.exp

# Load of an endpoint with requests in flight and no latency observed yet (Finagle's
# "Penalty"): a new endpoint gets one probe request, not a pile of them.
_UNKNOWN_LOAD = float(1 << 32)


class EndpointState:
    """Mutable per-endpoint statistics and health, shared by balancer, outlier detector
    and router. Create one per endpoint; the router keeps them across refreshes.

    Attributes:
        endpoint: The `Endpoint`.
        name: ``endpoint.name``.
        zone: ``endpoint.zone``.
        priority: ``endpoint.priority``.
        outstanding: Calls in flight (int >= 0).
        cost: Peak-EWMA latency estimate in seconds at time ``stamp`` (0.0 before the first
            observation).
        stamp: Clock reading of the last latency observation, or ``None``.
        penalty: Failure score at time ``penalty_stamp`` (decays with ``penalty_decay``).
        penalty_stamp: Clock reading when ``penalty`` was last updated.
        healthy: Result of active health checks (``True`` until a probe says otherwise).
        ejected_until: Clock reading when an outlier ejection ends, or ``None``.
        ejections: Ejection multiplier (grows by 1 per ejection, shrinks by 1 per healthy
            outlier-analysis interval).
        consecutive_failures: Failures since the last success.
        successes: Successes in the current outlier-analysis interval.
        failures: Failures in the current outlier-analysis interval.
        lag: Replication lag in seconds reported by a lag probe, or ``None`` (unknown).
        picks: Times this endpoint was picked.
    """

    __slots__ = (
        "_hc_fail",
        "_hc_ok",
        "consecutive_failures",
        "cost",
        "ejected_until",
        "ejections",
        "endpoint",
        "failures",
        "healthy",
        "lag",
        "lag_ok",
        "name",
        "outstanding",
        "penalty",
        "penalty_stamp",
        "picks",
        "priority",
        "stamp",
        "successes",
        "zone",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.zone = endpoint.zone
        self.priority = endpoint.priority
        self.outstanding = 0
        self.cost = 0.0
        self.stamp: float | None = None
        self.penalty = 0.0
        self.penalty_stamp = 0.0
        self.healthy = True
        self.ejected_until: float | None = None
        self.ejections = 0
        self.consecutive_failures = 0
        self.successes = 0
        self.failures = 0
        self.lag: float | None = None
        self.lag_ok = True
        self.picks = 0
        self._hc_ok = 0
        self._hc_fail = 0

    @property
    def available(self) -> bool:
        """Healthy, not ejected and within the lag bound."""
        return self.healthy and self.ejected_until is None and self.lag_ok

    def failure_score(self, now: float, decay: float) -> float:
        """The failure penalty decayed to ``now`` (time constant ``decay`` seconds)."""
        p = self.penalty
        if p == 0.0:
            return 0.0
        return p * _exp((self.penalty_stamp - now) / decay)

    def __repr__(self) -> str:
        return (
            f"EndpointState({self.name!r}, outstanding={self.outstanding}, "
            f"cost={self.cost:.4f}, healthy={self.healthy}, ejected_until={self.ejected_until})"
        )


class Balancer:
    """Base of the balancers: the bookkeeping every policy shares.

    Subclasses implement `pick`. Call `on_start` when a call is sent to the picked endpoint
    and `on_finish` exactly once when it ends (success, failure or cancellation).

    Args:
        failure_penalty: Load units added per failure (float >= 0; default 1.0; 0 turns the
            penalty off). Read by `LeastRequest` and `PeakEwma`; ignored by load-oblivious
            policies.
        penalty_decay: Time constant in seconds of the penalty's exponential decay (float or
            `timedelta`, > 0; default 10.0).

    Raises:
        ConfigurationError: A parameter is out of range.
    """

    name: ClassVar[str] = "balancer"
    __slots__ = ("failure_penalty", "penalty_decay")

    def __init__(
        self, *, failure_penalty: float = 1.0, penalty_decay: float | timedelta = 10.0
    ) -> None:
        owner = type(self).__name__
        if (
            isinstance(failure_penalty, bool)
            or not isinstance(failure_penalty, (int, float))
            or not failure_penalty >= 0
            or math.isinf(failure_penalty)
        ):
            raise ConfigurationError.invalid(
                owner, "failure_penalty", failure_penalty, "a finite number >= 0"
            )
        self.failure_penalty = float(failure_penalty)
        self.penalty_decay = check_duration(
            owner, "penalty_decay", penalty_decay, strictly_positive=True
        )

    def pick(
        self, candidates: Sequence[EndpointState], now: float, rng: _random.Random
    ) -> EndpointState:
        """Choose one of ``candidates`` (non-empty) at time ``now`` (seconds)."""
        raise NotImplementedError

    def on_start(self, state: EndpointState, now: float) -> None:
        """A call was sent to ``state`` at ``now``."""
        state.outstanding += 1

    def on_finish(self, state: EndpointState, now: float, latency: float, failed: bool) -> None:
        """The call sent to ``state`` ended at ``now`` after ``latency`` seconds.

        Args:
            state: The endpoint the call went to.
            now: Clock reading in seconds.
            latency: Seconds from `on_start` to the end.
            failed: ``True`` for a failure (counts towards the penalty).
        """
        if state.outstanding > 0:
            state.outstanding -= 1
        if failed and self.failure_penalty:
            state.penalty = state.failure_score(now, self.penalty_decay) + self.failure_penalty
            state.penalty_stamp = now

    def on_cancel(self, state: EndpointState, now: float, latency: float) -> None:
        """The call was cancelled (by the caller or an enclosing timeout) after ``latency``."""
        if state.outstanding > 0:
            state.outstanding -= 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RoundRobin(Balancer):
    """Cycle through the candidates in order (Envoy's default; load-oblivious).

    The position is a counter modulo the number of candidates, so when the candidate list
    changes the cycle continues from the same counter.
    """

    name: ClassVar[str] = "round_robin"
    __slots__ = ("_next",)

    def __init__(
        self, *, failure_penalty: float = 1.0, penalty_decay: float | timedelta = 10.0
    ) -> None:
        super().__init__(failure_penalty=failure_penalty, penalty_decay=penalty_decay)
        self._next = 0

    def pick(
        self, candidates: Sequence[EndpointState], now: float, rng: _random.Random
    ) -> EndpointState:
        i = self._next
        self._next = i + 1
        return candidates[i % len(candidates)]


class RandomChoice(Balancer):
    """Uniformly random choice (what DNS round robin amounts to; load-oblivious)."""

    name: ClassVar[str] = "random"
    __slots__ = ()

    def pick(
        self, candidates: Sequence[EndpointState], now: float, rng: _random.Random
    ) -> EndpointState:
        return candidates[int(rng.random() * len(candidates))]


class LeastRequest(Balancer):
    """Power of two choices on outstanding requests, with the failure penalty.

    Draws two distinct candidates uniformly and keeps the one with the lower
    ``outstanding + failure_score``; ties go to the first draw. Cost: two random draws and
    two comparisons, independent of the number of endpoints.
    """

    name: ClassVar[str] = "least_request"
    __slots__ = ()

    def pick(
        self, candidates: Sequence[EndpointState], now: float, rng: _random.Random
    ) -> EndpointState:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        r = rng.random
        i = int(r() * n)
        j = int(r() * (n - 1))
        if j >= i:
            j += 1
        a = candidates[i]
        b = candidates[j]
        la: float = a.outstanding
        lb: float = b.outstanding
        if a.penalty:
            la += a.penalty * _exp((a.penalty_stamp - now) / self.penalty_decay)
        if b.penalty:
            lb += b.penalty * _exp((b.penalty_stamp - now) / self.penalty_decay)
        return b if lb < la else a


class PeakEwma(Balancer):
    """Power of two choices on peak-EWMA latency times load (Finagle / Linkerd).

    Each endpoint keeps a latency estimate ``cost``. A latency above the estimate replaces
    it at once (the "peak"); a lower one is blended in with weight ``1 - exp(-dt/decay)``,
    where ``dt`` is the time since the previous observation. When read, the estimate decays
    towards zero with the same time constant, so an endpoint that has been avoided for a
    while is tried again. The load compared is
    ``cost * (outstanding + 1 + failure_score)``; an endpoint with calls in flight but no
    observation yet counts as very loaded (Finagle's penalty), so a new endpoint receives
    one probe call at a time until it has answered.

    Args:
        decay: Time constant in seconds (float or `timedelta`, > 0; default 10.0, Finagle's
            default).
        failure_penalty: See `Balancer` (default 1.0).
        penalty_decay: See `Balancer` (default 10.0 s).

    A failure's latency is recorded as at least the mean latency of recent successes across
    all endpoints, so an endpoint that fails fast does not look fast.

    Raises:
        ConfigurationError: A parameter is out of range.
    """

    name: ClassVar[str] = "peak_ewma"
    __slots__ = ("_mean", "decay")

    def __init__(
        self,
        *,
        decay: float | timedelta = 10.0,
        failure_penalty: float = 1.0,
        penalty_decay: float | timedelta = 10.0,
    ) -> None:
        super().__init__(failure_penalty=failure_penalty, penalty_decay=penalty_decay)
        self.decay = check_duration("PeakEwma", "decay", decay, strictly_positive=True)
        self._mean = 0.0

    def load(self, state: EndpointState, now: float) -> float:
        """The load `pick` compares for ``state`` at ``now`` (for tests and the lab)."""
        stamp = state.stamp
        if stamp is None:
            return 0.0 if state.outstanding == 0 else _UNKNOWN_LOAD + state.outstanding
        load = state.outstanding + 1.0
        if state.penalty:
            load += state.penalty * _exp((state.penalty_stamp - now) / self.penalty_decay)
        return state.cost * _exp((stamp - now) / self.decay) * load

    def pick(
        self, candidates: Sequence[EndpointState], now: float, rng: _random.Random
    ) -> EndpointState:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        r = rng.random
        i = int(r() * n)
        j = int(r() * (n - 1))
        if j >= i:
            j += 1
        a = candidates[i]
        b = candidates[j]
        decay = self.decay
        # inlined `load` for speed (about 0.3 us saved per pick)
        sa = a.stamp
        if sa is None:
            la = 0.0 if a.outstanding == 0 else _UNKNOWN_LOAD + a.outstanding
        else:
            la = a.outstanding + 1.0
            if a.penalty:
                la += a.penalty * _exp((a.penalty_stamp - now) / self.penalty_decay)
            la *= a.cost * _exp((sa - now) / decay)
        sb = b.stamp
        if sb is None:
            lb = 0.0 if b.outstanding == 0 else _UNKNOWN_LOAD + b.outstanding
        else:
            lb = b.outstanding + 1.0
            if b.penalty:
                lb += b.penalty * _exp((b.penalty_stamp - now) / self.penalty_decay)
            lb *= b.cost * _exp((sb - now) / decay)
        return b if lb < la else a

    def observe(self, state: EndpointState, now: float, latency: float) -> None:
        """Fold a latency sample (seconds) into ``state``'s estimate."""
        stamp = state.stamp
        if stamp is None:
            state.cost = latency
        else:
            cost = state.cost
            if latency > cost:
                state.cost = latency
            else:
                w = _exp((stamp - now) / self.decay) if now > stamp else 1.0
                state.cost = cost * w + latency * (1.0 - w)
        state.stamp = now

    def on_finish(self, state: EndpointState, now: float, latency: float, failed: bool) -> None:
        # inlined Balancer.on_finish + observe: this runs once per call
        if state.outstanding > 0:
            state.outstanding -= 1
        mean = self._mean
        if failed:
            if self.failure_penalty:
                state.penalty = state.failure_score(now, self.penalty_decay) + self.failure_penalty
                state.penalty_stamp = now
            if latency < mean:
                latency = mean
        else:
            self._mean = latency if mean == 0.0 else mean + 0.05 * (latency - mean)
        stamp = state.stamp
        if stamp is None:
            state.cost = latency
        else:
            cost = state.cost
            if latency > cost:
                state.cost = latency
            elif now > stamp:
                w = _exp((stamp - now) / self.decay)
                state.cost = cost * w + latency * (1.0 - w)
            else:
                pass  # same instant: weight 1 keeps the estimate
        state.stamp = now

    def on_cancel(self, state: EndpointState, now: float, latency: float) -> None:
        super().on_cancel(state, now, latency)
        self.observe(state, now, latency)

    def __repr__(self) -> str:
        return f"PeakEwma(decay={self.decay!r})"


BALANCERS: dict[str, type[Balancer]] = {
    "round_robin": RoundRobin,
    "random": RandomChoice,
    "least_request": LeastRequest,
    "p2c": LeastRequest,
    "peak_ewma": PeakEwma,
    "ewma": PeakEwma,
}
"""Balancer names accepted by ``LoadBalance(balancer=...)``."""


def make_balancer(owner: str, spec: Any) -> Balancer:
    """A fresh balancer from a name in `BALANCERS` or a `Balancer` instance (used as is).

    Raises:
        ConfigurationError: Unknown name or wrong type.
    """
    if isinstance(spec, Balancer):
        return spec
    if isinstance(spec, str) and spec in BALANCERS:
        return BALANCERS[spec]()
    raise ConfigurationError.invalid(
        owner,
        "balancer",
        spec,
        f"one of {sorted(BALANCERS)} or a buttress.routing.Balancer instance",
    )
