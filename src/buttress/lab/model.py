"""The modelled dependency: replicas in zones, workers, queues, service times, faults.

`ServiceModel` is what the S2/S4-style scenarios call: each call picks a replica (random or
round robin, until the routing strategies drive it), travels the network, is admitted to
a free worker or a bounded FIFO/LIFO queue, or is rejected cheaply. A worker **keeps
working on a request whose caller gave up** unless ``keep_abandoned = false`` (then the
caller's abandonment frees the worker at once, like a propagated cancellation); with
``deadline_propagation = true`` a queued request whose deadline passed is dropped instead
of served. Server time spent on abandoned requests is *wasted work*.

`OccModel` is the single-row optimistic-concurrency workload of Brooker's 2015 jitter
simulation (scenario S1): read the version (two hops), write it back conditionally (two
hops); a write that finds the version moved fails with `ConflictError`.

Faults (`FaultSpec`) switch replica state on and off on the timeline; overlapping faults
combine (latency factors multiply, error rates combine as independent failures, the
smallest capacity wins). A ``cache_flush`` fault does not touch the replicas: at its start
the model calls ``flush_hook`` (the run empties the pipeline's caches) and, for the
fault's ``duration``, counts the requests that reach the dependency per key.

Zones: the callers sit in ``client.zone`` (default: the first zone); every request to a
replica and every reply from it waits the one-way ``dependency.zone_delay`` between the
two zones, on top of the ``dependency.network`` delay.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random as _random
from collections import deque
from collections.abc import Callable
from typing import Any

from .._core.context import CURRENT, DEADLINE, Key
from .errors import (
    CallTimeoutError,
    ConflictError,
    OverloadedError,
    ServerError,
    ThrottledError,
    UnavailableError,
)
from .scenario import Distribution, FaultSpec, LoadSpec, Scenario
from .sim import Future, Scheduler, sleep

__all__ = ["KEY", "Counters", "OccModel", "ServiceModel", "key_picker", "sampler"]

KEY: Key[int] = Key("buttress.lab.key", default=0)
"""Context property holding the key (partition) of the current simulated call, set when
the scenario has ``load.keys > 1``; per-key strategies use ``key = "key"`` in the file."""

_INF = math.inf
_heappush = heapq.heappush
_Z99 = 2.3263478740408408  # standard normal quantile at 0.99


def sampler(dist: Distribution, rng: _random.Random) -> Callable[[], float]:
    """A zero-argument function drawing from ``dist`` (seconds) with ``rng``."""
    kind = dist.kind
    if kind == "constant":
        value = dist.value
        return lambda: value
    if kind == "exponential":
        # random.expovariate's formula, without its frame: same draws, same numbers
        rate = 1.0 / dist.mean
        rand = rng.random
        log = math.log
        return lambda: -log(1.0 - rand()) / rate
    if kind == "lognormal":
        mu = math.log(dist.p50)
        sigma = (math.log(dist.p99) - mu) / _Z99
        lognorm = rng.lognormvariate
        return lambda: lognorm(mu, sigma)
    if kind == "bimodal":
        fast, slow, frac = dist.fast, dist.slow, dist.slow_fraction
        rand = rng.random
        return lambda: slow if rand() < frac else fast
    mean, sd = dist.mean, dist.sd
    gauss = rng.gauss
    return lambda: abs(gauss(mean, sd))


def key_picker(load: LoadSpec, rng: _random.Random) -> Callable[[], int]:
    """A zero-argument function drawing the key of the next user request with ``rng``.

    Keys are ``0 .. load.keys - 1``: uniform, or with ``key_popularity = "zipf"`` key *k*
    has weight ``1 / (k + 1) ** zipf_exponent`` (key 0 is the hottest).
    """
    keys = load.keys
    if keys <= 1:
        return lambda: 0
    rand = rng.random
    if load.key_popularity == "uniform":
        return lambda: int(rand() * keys)
    s = load.zipf_exponent
    cum = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(keys)))
    total = cum[-1]
    last = keys - 1
    find = bisect.bisect_right

    def pick() -> int:
        k = find(cum, rand() * total)
        return k if k < last else last

    return pick


class Counters:
    """Per-second counters of one run (index = whole virtual seconds)."""

    __slots__ = (
        "attempts",
        "busy",
        "cross_zone",
        "expired",
        "first",
        "good",
        "key_loads",
        "lost",
        "ok_by_start",
        "overloaded",
        "refused",
        "seen",
        "server_errors",
        "size",
        "throttled",
        "wasted",
    )

    def __init__(self, duration: float) -> None:
        n = math.ceil(duration) + 1
        self.size = n
        self.first = [0] * n  # user requests started
        self.ok_by_start = [0] * n  # ... of which succeeded, by start second
        self.good = [0] * n  # user requests succeeded, by completion second
        self.attempts = [0] * n  # calls the clients made (incl. refused and lost)
        self.seen = [0] * n  # calls that reached the dependency
        self.busy = [0.0] * n  # worker-seconds spent, by completion second
        self.wasted = [0.0] * n  # ... on calls whose caller had given up
        self.overloaded = 0
        self.throttled = 0
        self.expired = 0
        self.refused = 0
        self.lost = 0
        self.server_errors = 0
        self.cross_zone = 0  # calls sent to a replica outside the callers' zone
        # fault index -> key -> requests that reached the dependency (cache_flush windows)
        self.key_loads: dict[int, dict[int, int]] = {}


class _Request(Future):
    """One call in flight: the client awaits it (it is its own reply `Future`)."""

    __slots__ = ("abandoned", "key", "replica", "service", "started", "state")

    def __init__(self, replica: _Replica, deadline: float, key: int) -> None:
        # Future.__init__ inlined (one frame less per simulated call)
        self.done = False
        self.value = None
        self.exc = None
        self.waiters = []
        self.callbacks = None
        self.deadline = deadline
        self.error = CallTimeoutError
        self.replica = replica
        self.key = key
        self.abandoned = False
        self.service = 0.0
        self.started = 0.0
        self.state = 0  # 0 travelling/queued, 1 in service, 2 finished or freed

    def abandon(self) -> None:
        """The caller gave up (timeout or cancellation)."""
        self.abandoned = True
        if self.state == 1:
            model = self.replica.model
            if not model.keep_abandoned:
                model._free(self)


class _Replica:
    __slots__ = (
        "busy",
        "capacity",
        "delay_in",
        "delay_out",
        "down",
        "error_rate",
        "fail_fast",
        "hang",
        "index",
        "latency",
        "model",
        "queue",
        "remote",
        "workers",
        "zone",
    )

    def __init__(self, model: ServiceModel, index: int, zone: str, workers: int) -> None:
        self.model = model
        self.index = index
        self.zone = zone
        self.workers = workers
        self.capacity = workers
        self.busy = 0
        self.queue: deque[_Request] = deque()
        self.down = False
        self.hang = False
        self.fail_fast = False
        self.error_rate = 0.0
        self.latency = 1.0
        self.delay_in = 0.0  # one-way zone delay, callers -> replica (seconds)
        self.delay_out = 0.0  # ... replica -> callers
        self.remote = False  # outside the callers' zone


class _FaultTimeline:
    """Turns `FaultSpec` windows into on/off callbacks on the scheduler."""

    def __init__(self, sched: Scheduler, faults: tuple[FaultSpec, ...], apply: Any) -> None:
        self.active: list[FaultSpec] = []
        self._apply = apply
        for f in faults:
            if f.kind == "flapping":
                t = f.start
                while t < f.end:
                    bad_end = min(t + f.bad, f.end)
                    sched.call_at(t, self._on, f)
                    sched.call_at(bad_end, self._off, f)
                    t = bad_end + f.good
            else:
                sched.call_at(f.start, self._on, f)
                sched.call_at(f.end, self._off, f)

    def _on(self, f: FaultSpec) -> None:
        self.active.append(f)
        self._apply(self.active)

    def _off(self, f: FaultSpec) -> None:
        if f in self.active:
            self.active.remove(f)
        self._apply(self.active)


class ServiceModel:
    """A replicated request/response service (``dependency.kind = "service"``).

    Args:
        sched: The scheduler.
        scenario: The validated scenario.
        seed: Seed of this run; the model draws from its own named random streams.
        counters: Where to count.
    """

    def __init__(self, sched: Scheduler, scenario: Scenario, seed: int, counters: Counters) -> None:
        dep = scenario.dependency
        self.sched = sched
        self.c = counters
        self.last = counters.size - 1
        self.timeout = scenario.client.timeout
        self.replicas = [
            _Replica(self, i, dep.zones[i % len(dep.zones)], dep.workers)
            for i in range(dep.replicas)
        ]
        self.queue_cap = dep.queue
        self.lifo = dep.queue_order == "lifo"
        self.keep_abandoned = dep.keep_abandoned
        self.propagate = dep.deadline_propagation
        self.rejection_cost = dep.rejection_cost
        self.throttle_after = dep.throttle_retry_after
        self.service = sampler(dep.service, _random.Random(f"{seed}/service"))
        self.has_net = not (dep.network.kind == "constant" and dep.network.value == 0.0)
        self.net = sampler(dep.network, _random.Random(f"{seed}/network"))
        self.route_rng = _random.Random(f"{seed}/route")
        self.fault_rng = _random.Random(f"{seed}/faults")
        zone = scenario.client.zone or dep.zones[0]
        delays = dep.zone_delay
        for r in self.replicas:
            r.delay_in = delays.between(zone, r.zone)
            r.delay_out = delays.between(r.zone, zone)
            r.remote = r.zone != zone
        self.has_zone = any(r.delay_in > 0.0 or r.delay_out > 0.0 for r in self.replicas)
        self.delayed = self.has_net or self.has_zone
        self.any_remote = any(r.remote for r in self.replicas)
        self.round_robin = scenario.client.routing == "round_robin"
        self.single: _Replica | None = self.replicas[0] if len(self.replicas) == 1 else None
        self._rr = 0
        self.bad_keys: dict[int, str] = {}
        self.flush_hook: Callable[[], None] | None = None
        """Empties the callers' caches (set by the run); called when a cache_flush starts."""
        self.counting: list[dict[int, int]] = []  # open cache_flush windows
        for i, f in enumerate(scenario.faults):
            if f.kind == "cache_flush":
                sched.call_at(f.start, self._flush, i)
                sched.call_at(f.end, self._flush_end, i)
        self.faults = _FaultTimeline(
            sched, tuple(f for f in scenario.faults if f.kind != "cache_flush"), self._apply_faults
        )

    # -- faults ------------------------------------------------------------------------------

    def _targets(self, f: FaultSpec) -> list[_Replica]:
        if f.replica is not None:
            return [self.replicas[f.replica]]
        if f.zone is not None:
            return [r for r in self.replicas if r.zone == f.zone]
        return self.replicas

    def _flush(self, i: int) -> None:
        counts: dict[int, int] = {}
        self.c.key_loads[i] = counts
        self.counting.append(counts)
        if self.flush_hook is not None:
            self.flush_hook()

    def _flush_end(self, i: int) -> None:
        counts = self.c.key_loads[i]
        self.counting = [d for d in self.counting if d is not counts]

    def _apply_faults(self, active: list[FaultSpec]) -> None:
        for r in self.replicas:
            r.down = r.hang = r.fail_fast = False
            r.error_rate = 0.0
            r.latency = 1.0
            r.capacity = r.workers
        self.bad_keys = {}
        for f in active:
            kind = f.kind
            if kind == "partition":
                for k in f.keys:
                    self.bad_keys[k] = f.mode
                continue
            for r in self._targets(f):
                if kind in ("outage", "flapping"):
                    if f.mode == "hang":
                        r.hang = True
                    else:
                        r.fail_fast = True
                elif kind == "error_rate":
                    r.error_rate = 1.0 - (1.0 - r.error_rate) * (1.0 - f.rate)
                elif kind in ("latency", "slow_replica"):
                    r.latency *= f.factor
                elif kind == "capacity":
                    r.capacity = min(r.capacity, round(r.workers * f.remaining))
                elif kind in ("replica_down", "zone_down"):
                    r.down = True
        for r in self.replicas:
            self._dispatch(r)

    # -- the client's call -----------------------------------------------------------------

    def call(self, key: int = 0) -> Future:
        """One attempt: returns an awaitable reply (raises the dependency's errors)."""
        sched = self.sched
        now = sched.now
        c = self.c
        b = int(now)
        if b > self.last:
            b = self.last
        c.attempts[b] += 1
        rep = self.single
        if rep is not None:
            pass
        elif self.round_robin:
            reps = self.replicas
            rep = reps[self._rr % len(reps)]
            self._rr += 1
        else:
            reps = self.replicas
            rep = reps[int(self.route_rng.random() * len(reps))]
        return self._send(rep, key, now)

    def call_endpoint(self, endpoint: Any, key: int = 0) -> Future:
        """One attempt to the replica a `LoadBalance` chose (``endpoint.address`` = index)."""
        now = self.sched.now
        b = int(now)
        if b > self.last:
            b = self.last
        self.c.attempts[b] += 1
        return self._send(self.replicas[endpoint.address], key, now)

    def _send(self, rep: _Replica, key: int, now: float) -> Future:
        sched = self.sched
        c = self.c
        timeout = self.timeout
        deadline = now + timeout if timeout is not None else _INF
        if self.propagate:
            record = CURRENT.get()
            if record is not None:
                outer = record[DEADLINE]
                if outer is not None and outer < deadline:
                    deadline = outer
        req = _Request(rep, deadline, key)
        if self.any_remote and rep.remote:
            c.cross_zone += 1
        if rep.down:
            c.refused += 1
            self._reply(req, UnavailableError(f"replica {rep.index} ({rep.zone}) is down"))
        elif rep.hang or (self.bad_keys and self.bad_keys.get(key) == "hang"):
            c.lost += 1  # packet loss: the request never arrives
        elif self.delayed:
            if self.has_net:
                sched.call_later(rep.delay_in + self.net(), self._arrive, req)
            elif rep.delay_in > 0.0:
                sched.call_later(rep.delay_in, self._arrive, req)
            else:
                self._arrive(req)
        else:
            self._arrive(req)
        return req

    def _arrive(self, req: _Request) -> None:
        rep = req.replica
        now = self.sched.now
        c = self.c
        b = int(now)
        if b > self.last:
            b = self.last
        if rep.hang:
            c.lost += 1
            return
        c.seen[b] += 1
        if self.counting:
            key = req.key
            for counts in self.counting:
                counts[key] = counts.get(key, 0) + 1
        bad = self.bad_keys.get(req.key) if self.bad_keys else None
        if (
            rep.fail_fast
            or bad is not None
            or (rep.error_rate > 0.0 and self.fault_rng.random() < rep.error_rate)
        ):
            c.server_errors += 1
            self._reject(req, ServerError("injected server error"))
            return
        if self.propagate and req.deadline <= now:
            c.expired += 1
            return
        if rep.busy < rep.capacity:
            self._start(req)
        elif len(rep.queue) < self.queue_cap:
            rep.queue.append(req)
        elif self.throttle_after is not None:
            c.throttled += 1
            self._reject(
                req,
                ThrottledError("throttled", strategy="dependency", retry_after=self.throttle_after),
            )
        else:
            c.overloaded += 1
            self._reject(req, OverloadedError("queue full"))

    def _reject(self, req: _Request, exc: BaseException) -> None:
        cost = self.rejection_cost
        if cost > 0.0:
            now = self.sched.now
            b = int(now)
            self.c.busy[b if b <= self.last else self.last] += cost
            self.sched.call_later(cost, self._reply_exc, (req, exc))
        else:
            self._reply(req, exc)

    def _reply_exc(self, arg: tuple[_Request, BaseException]) -> None:
        self._reply(arg[0], arg[1])

    def _start(self, req: _Request) -> None:
        rep = req.replica
        rep.busy += 1
        req.state = 1
        sched = self.sched
        now = sched.now
        req.started = now
        s = self.service() * rep.latency
        req.service = s
        _heappush(sched._heap, (now + s, next(sched._seq), self._complete, req))

    def _complete(self, req: _Request) -> None:
        if req.state != 1:
            return  # freed when its caller gave up (keep_abandoned = false)
        req.state = 2
        rep = req.replica
        rep.busy -= 1
        c = self.c
        b = int(self.sched.now)
        if b > self.last:
            b = self.last
        c.busy[b] += req.service
        if req.abandoned:
            c.wasted[b] += req.service
        elif rep.hang:
            c.lost += 1  # the reply is lost in the network
        else:
            self._reply(req, None)
        if rep.queue:
            self._dispatch(rep)

    def _free(self, req: _Request) -> None:
        """Stop serving ``req`` now (its caller gave up and abandonment propagates)."""
        req.state = 2
        rep = req.replica
        rep.busy -= 1
        now = self.sched.now
        b = int(now)
        if b > self.last:
            b = self.last
        used = now - req.started
        self.c.busy[b] += used
        self.c.wasted[b] += used
        self._dispatch(rep)

    def _dispatch(self, rep: _Replica) -> None:
        queue = rep.queue
        now = self.sched.now
        while queue and rep.busy < rep.capacity:
            req = queue.pop() if self.lifo else queue.popleft()
            if req.abandoned and not self.keep_abandoned:
                continue
            if self.propagate and req.deadline <= now:
                self.c.expired += 1
                continue
            self._start(req)

    def _reply(self, req: _Request, exc: BaseException | None) -> None:
        if self.delayed:
            if self.has_net:
                self.sched.call_later(req.replica.delay_out + self.net(), self._deliver, (req, exc))
                return
            delay = req.replica.delay_out
            if delay > 0.0:
                self.sched.call_later(delay, self._deliver, (req, exc))
                return
        self.sched.resolve(req, True, exc)

    def _deliver(self, arg: tuple[_Request, BaseException | None]) -> None:
        req, exc = arg
        self.sched.resolve(req, True, exc)


class OccModel:
    """One database row under optimistic concurrency control (Brooker 2015, scenario S1).

    ``dependency.network`` is the one-way hop delay (the blog: ``|Normal(10 ms, 2 ms)|``);
    each attempt costs four hops; ``seen`` counts write attempts.
    """

    def __init__(self, sched: Scheduler, scenario: Scenario, seed: int, counters: Counters) -> None:
        self.sched = sched
        self.c = counters
        self.last = counters.size - 1
        self.version = 0
        self.hop = sampler(scenario.dependency.network, _random.Random(f"{seed}/network"))

    async def call(self, key: int = 0) -> None:
        """Read the row, then write it back if its version has not moved."""
        hop = self.hop
        c = self.c
        b = min(int(self.sched.now), self.last)
        c.attempts[b] += 1
        await sleep(hop())
        seen = self.version
        await sleep(hop())
        await sleep(hop())
        b = min(int(self.sched.now), self.last)
        c.seen[b] += 1
        ok = self.version == seen
        if ok:
            self.version += 1
        await sleep(hop())
        if not ok:
            raise ConflictError("row version changed")
