"""One simulated run (scenario x pipeline x seed) and its metrics.

`run_one` builds a fresh scheduler, dependency model and pipeline, drives the load, and
returns a plain dict (JSON-ready, deterministic: the same inputs give the same dict, bit
for bit). Definitions (also in docs/lab.md):

* **first tries**: user requests started (a fan-out request counts once);
* **server requests**: calls that reached the dependency (including ones it rejected or
  answered with an error; not the ones lost in the network or refused by a down replica);
* **amplification**: server requests / first tries;
* **goodput**: successful user requests per second;
* **success rate**: successful / finished user requests;
* **wasted work**: worker-seconds spent on calls whose caller had already given up;
* **time to recover** after a fault ends: the first moment from which, for
  ``recovery_hold`` seconds, every ``recovery_bin``-second block of user requests (by
  start time) succeeds at a rate >= ``recovery_threshold``; ``None`` if never in the run.
"""

from __future__ import annotations

import heapq
import math
import random as _random
from collections import Counter
from typing import Any

from .._core.context import scope
from .errors import ScenarioError
from .model import KEY, Counters, OccModel, ServiceModel, key_picker
from .pipelines import build_pipeline, endpoints_for
from .scenario import PipelineSpec, Scenario
from .sim import STALL_EVENTS, Future, Scheduler, SimulationStalled, Task

__all__ = ["percentile", "run_one"]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile ``q`` (0..100) of an ascending list; ``None`` if empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return sorted_values[0]
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def _r(x: float | None, digits: int = 6) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


class _Run:
    def __init__(self, scenario: Scenario, spec: PipelineSpec, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.sched = sched = Scheduler()
        self.c = c = Counters(scenario.duration)
        self.last = c.size - 1
        dep = scenario.dependency
        self.model: ServiceModel | OccModel
        if dep.kind == "occ":
            self.model = OccModel(sched, scenario, seed, c)
        else:
            self.model = ServiceModel(sched, scenario, seed, c)
        self.events: list[Any] = []
        listeners: tuple[Any, ...] = ()
        endpoints = endpoints_for(scenario)
        self.pipeline = build_pipeline(
            spec,
            sched.clock,
            _random.Random(f"{seed}/pipeline/{spec.name}"),
            file=scenario.source,
            endpoints=endpoints,
        )
        if _wants_events(self.pipeline):
            listeners = (self._on_event,)
            self.pipeline = build_pipeline(
                spec,
                sched.clock,
                _random.Random(f"{seed}/pipeline/{spec.name}"),
                file=scenario.source,
                listeners=listeners,
                endpoints=endpoints,
            )
        self.acall = self.pipeline.acall
        self.call: Any = self.model.call
        if isinstance(self.model, ServiceModel) and any(
            type(s).__name__ == "LoadBalance" for s in self.pipeline.strategies
        ):
            self.call = self.model.call_endpoint
        self.lat: list[float] = []
        self.lat_t: list[float] = []
        self.errors: Counter[str] = Counter()
        self.failed = 0
        self.succeeded = 0
        self.finished_at = 0.0
        self.arrival_rng = _random.Random(f"{seed}/arrivals")
        self.arrival_random = self.arrival_rng.random
        self.key_rng = _random.Random(f"{seed}/keys")
        self._key = key_picker(scenario.load, self.key_rng)
        if isinstance(self.model, ServiceModel):
            self.model.flush_hook = _flusher(self.pipeline)
        self.budgets = _budgets(self.pipeline)
        self.budget_series: list[list[float | None]] = [[] for _ in self.budgets]
        self.breaker: list[list[Any]] = []
        self.ejections: list[list[Any]] = []
        load = scenario.load
        self.fanout = load.fanout
        self.stop = load.stop if load.stop is not None else scenario.duration
        self.const_rate = load.rate if not load.ramp else None
        self.poisson = load.arrival == "poisson"
        self.key_rng_on = load.keys > 1
        # the call's key on the context, for per-key strategies (only with several keys)
        self.keyed = load.keys > 1 and load.fanout == 1
        # per-key user requests and successes by start second (for partition faults)
        self.by_key: tuple[list[list[int]], list[list[int]]] | None = None
        if self.keyed and any(f.kind == "partition" for f in scenario.faults):
            self.by_key = (
                [[0] * c.size for _ in range(load.keys)],
                [[0] * c.size for _ in range(load.keys)],
            )

    # -- events (only for pipelines whose timelines we plot) ------------------------------

    def _on_event(self, event: Any) -> None:
        kind = getattr(event, "kind", "")
        if kind.startswith("endpoint.") and hasattr(event, "endpoint"):
            self.ejections.append([_r(event.time), kind, str(event.endpoint)])
            return
        if kind == "circuit.state_changed":
            key = getattr(event, "key", None)
            entry: list[Any] = [_r(event.time), str(event.to_state)]
            if key is not None:
                entry.append(str(key))
            self.breaker.append(entry)

    # -- user requests ---------------------------------------------------------------------

    async def _user(self, t0: float, key: int) -> None:
        c = self.c
        b = int(t0)
        if b > self.last:
            b = self.last
        c.first[b] += 1
        by_key = self.by_key
        if by_key is not None:
            by_key[0][key][b] += 1
        try:
            if self.fanout > 1:
                await self._fanout()
            elif self.keyed:
                with scope(operation_key="lab", properties={KEY: key}, clock=self.sched.clock):
                    await self.acall(self.call, key)
            else:
                await self.acall(self.call, key)
        except Exception as exc:
            self.failed += 1
            self.errors[type(exc).__name__] += 1
        else:
            now = self.sched.now
            self.succeeded += 1
            c.ok_by_start[b] += 1
            if by_key is not None:
                by_key[1][key][b] += 1
            e = int(now)
            c.good[e if e <= self.last else self.last] += 1
            self.lat.append(now - t0)
            self.lat_t.append(now)
        self.finished_at = self.sched.now

    async def _fanout(self) -> None:
        k = self.scenario.load.fanout
        done = Future()
        state: list[Any] = [k, None]
        sched = self.sched

        def child_done(task: Task) -> None:
            state[0] -= 1
            if task.exception is not None and state[1] is None:
                state[1] = task.exception
            if state[0] == 0:
                sched.resolve(done, None, state[1])

        for i in range(k):
            sched.spawn(self.acall(self.call, i), child_done)
        await done

    def _arrival(self, _: Any) -> None:
        sched = self.sched
        now = sched.now
        sched.start(self._user(now, self._key() if self.key_rng_on else 0))
        rate = self.const_rate
        if rate is None:
            rate = self.scenario.load.rate_at(now)
        if rate <= 0.0:
            nxt = now + 1.0 if self.const_rate is None else math.inf
        elif self.poisson:
            # random.expovariate's formula without its frame (same numbers)
            nxt = now - math.log(1.0 - self.arrival_random()) / rate
        else:
            nxt = now + 1.0 / rate
        if nxt < self.stop:
            heapq.heappush(sched._heap, (nxt, next(sched._seq), self._arrival, None))

    async def _client(self) -> None:
        load = self.scenario.load
        stop = load.stop if load.stop is not None else self.scenario.duration
        sched = self.sched
        n = 0
        # Livelock guard. With think_time = 0 a request that ends in zero virtual time (a
        # fast outage or refused replica with rejection_cost = 0, an open breaker, a rate
        # limiter without max_wait) is re-issued at the same instant, inside this one task
        # step: the scheduler never regains control and the clock never reaches the end.
        # We do not impose a hidden minimum think time (it would change every closed-loop
        # result and model a client that does not exist), and validation cannot tell in
        # advance (whether a call fails instantly depends on the pipeline and the faults),
        # so the run stops with an error that names the two settings that fix it.
        same = 0
        last = -1.0
        while (load.requests_per_client == 0 or n < load.requests_per_client) and (
            sched.now < stop
        ):
            await self._user(sched.now, self._key())
            n += 1
            if load.think_time > 0.0:
                await sched.runtime.sleep(load.think_time)
            elif sched.now == last:
                same += 1
                if same >= _STALL_REQUESTS:
                    raise SimulationStalled(last, same, "requests by one closed-loop client")
            else:
                last = sched.now
                same = 0

    def _sample_budgets(self, _: Any) -> None:
        now = self.sched.now
        for budget, series in zip(self.budgets, self.budget_series):
            series.append(_r(budget.level(now), 3))
        nxt = now + self.scenario.window
        if nxt <= self.scenario.duration:
            self.sched.call_at(nxt, self._sample_budgets)

    # -- the run ---------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        sc = self.scenario
        load = sc.load
        sched = self.sched
        if load.kind == "open":
            first = load.start
            if load.arrival == "poisson" and load.rate_at(first) > 0:
                first += self.arrival_rng.expovariate(load.rate_at(first))
            sched.call_at(first, self._arrival)
        else:
            for _ in range(load.clients):
                sched.spawn(self._client())
        if self.budgets:
            sched.call_at(0.0, self._sample_budgets)
        try:
            sched.run(until=sc.duration)
        except SimulationStalled as exc:
            sched.close()
            if load.kind == "closed":
                key = "load.think_time"
                hint = (
                    "closed-loop clients re-issue failed calls at the same instant: set "
                    "load.think_time > 0 (or dependency.rejection_cost > 0 when the "
                    "dependency itself refuses them)"
                )
            else:
                key = "pipelines." + self.pipeline.name
                hint = "a strategy retries with no delay: give it a backoff > 0"
            raise ScenarioError(
                sc.source, key, f"{exc} (pipeline {self.pipeline.name!r}, seed {self.seed}); {hint}"
            ) from None
        in_flight = sched.close()
        return self._results(in_flight)

    def _results(self, in_flight: int) -> dict[str, Any]:
        sc = self.scenario
        c = self.c
        first = sum(c.first)
        seen = sum(c.seen)
        attempts = sum(c.attempts)
        lat = sorted(self.lat)
        busy = sum(c.busy)
        wasted = sum(c.wasted)
        finished = self.succeeded + self.failed
        load_end = sc.load.stop if sc.load.stop is not None else sc.duration
        span = max(1e-9, load_end - sc.load.start)
        rejections: dict[str, int] = {f"client:{k}": v for k, v in sorted(self.errors.items())}
        for name in ("overloaded", "throttled", "expired", "refused", "lost", "server_errors"):
            value = getattr(c, name)
            if value:
                rejections[f"dependency:{name}"] = value
        return {
            "pipeline": self.pipeline.name,
            "seed": self.seed,
            "first_tries": first,
            "server_requests": seen,
            "client_attempts": attempts,
            "successes": self.succeeded,
            "failures": self.failed,
            "in_flight_at_end": in_flight,
            "success_rate": _r(self.succeeded / finished if finished else None),
            "goodput": _r(self.succeeded / span),
            "amplification": _r(seen / (first * self.fanout) if first else None),
            "cross_zone_share": _r(c.cross_zone / attempts if attempts else None),
            "latency": {
                "p50": _r(percentile(lat, 50.0)),
                "p99": _r(percentile(lat, 99.0)),
                "p999": _r(percentile(lat, 99.9)),
            },
            "makespan": _r(self.finished_at) if sc.load.kind == "closed" else None,
            "busy_seconds": _r(busy),
            "wasted_seconds": _r(wasted),
            "wasted_fraction": _r(wasted / busy if busy else 0.0),
            "rejections": rejections,
            "faults": [self._fault_metrics(i) for i in range(len(sc.faults))],
            "series": self._series(),
            "timelines": {
                "breaker": self.breaker,
                "endpoints": self.ejections,
                "budget": {b.name: series for b, series in zip(self.budgets, self.budget_series)},
            },
            "events": sched_steps(self.sched),
        }

    def _fault_metrics(self, i: int) -> dict[str, Any]:
        sc = self.scenario
        f = sc.faults[i]
        c = self.c
        start, end = int(f.start), min(math.ceil(f.end), self.last)
        k = self.fanout
        during_first = sum(c.first[start:end])
        during_seen = sum(c.seen[start:end])
        after_end = min(end + 30, self.last)
        after_first = sum(c.first[end:after_end])
        after_seen = sum(c.seen[end:after_end])
        burst_end = min(end + 10, self.last)
        burst = None
        if burst_end > end and after_first:
            rate = sum(c.first[end:burst_end]) / (burst_end - end)
            if rate > 0:
                burst = max(c.seen[end:burst_end]) / (k * rate)
        during_ok = sum(c.ok_by_start[start:end])
        flush = f.kind == "cache_flush"
        # a flush is instantaneous: recovery counts from the flush, not the window's end
        ttr = self._time_to_recover(start if flush else end)
        peak = max(c.seen[start:end], default=0) if end > start else None
        per_key = max_per_key = None
        if flush:
            counts = c.key_loads.get(i)
            if counts:
                per_key = sum(counts.values()) / len(counts)
                max_per_key = max(counts.values())
        healthy = None
        if self.by_key is not None and f.kind == "partition":
            firsts, oks = self.by_key
            keys = [k for k in range(len(firsts)) if k not in f.keys]
            n = sum(sum(firsts[k][start:end]) for k in keys)
            ok = sum(sum(oks[k][start:end]) for k in keys)
            healthy = ok / n if n else None
        return {
            "kind": f.kind,
            "start": f.start,
            "end": f.end,
            "amplification_during": _r(during_seen / (k * during_first) if during_first else None),
            "amplification_after": _r(after_seen / (k * after_first) if after_first else None),
            "burst_after": _r(burst),
            "success_during": _r(during_ok / during_first if during_first else None),
            "healthy_keys_success_during": _r(healthy),
            "peak_load_during": peak,
            "loads_per_key": _r(per_key),
            "max_loads_per_key": max_per_key,
            "time_to_recover": _r(ttr),
            "recovered": ttr is not None and ttr <= sc.recover_within,
            "recovery_judged": self._recovery_judged(start if flush else end),
        }

    def _recovery_blocks(self) -> tuple[int, int, int]:
        """(block length s, blocks to hold, last second a block may end) for recovery."""
        sc = self.scenario
        step = max(1, round(sc.recovery_bin))
        blocks = max(1, math.ceil(sc.recovery_hold / step))
        horizon = int(sc.duration) - step  # the last block's requests may still be running
        return step, blocks, horizon

    def _recovery_judged(self, end: int) -> bool:
        """Whether the run is long enough after ``end`` to hold ``recovery_hold`` at all.

        When it is not, "not recovered" would be a verdict the run cannot give: the report
        says n/a instead (docs/lab.md, "Recovery").
        """
        step, blocks, horizon = self._recovery_blocks()
        return end + blocks * step <= horizon

    def _time_to_recover(self, end: int) -> float | None:
        sc = self.scenario
        c = self.c
        step, blocks, horizon = self._recovery_blocks()
        thr = sc.recovery_threshold
        first, ok = c.first, c.ok_by_start
        t = end
        while t + blocks * step <= horizon:
            good = True
            for k in range(blocks):
                a = t + k * step
                n = sum(first[a : a + step])
                if n and sum(ok[a : a + step]) < thr * n:
                    good = False
                    break
            if good:
                return float(t - end)
            t += 1
        return None

    def _series(self) -> dict[str, Any]:
        sc = self.scenario
        c = self.c
        w = sc.window
        n = max(1, math.ceil(sc.duration / w))
        out: dict[str, list[Any]] = {
            "t": [],
            "first_tries": [],
            "offered": [],
            "goodput": [],
            "success": [],
            "p50": [],
            "p99": [],
        }
        # latencies by completion window
        buckets: list[list[float]] = [[] for _ in range(n)]
        for t, v in zip(self.lat_t, self.lat):
            buckets[min(int(t / w), n - 1)].append(v)
        for i in range(n):
            a = round(i * w)
            b = min(round((i + 1) * w), c.size)
            span = max(1e-9, min((i + 1) * w, sc.duration) - i * w)
            first = sum(c.first[a:b])
            out["t"].append(_r(i * w))
            out["first_tries"].append(_r(first / span, 3))
            out["offered"].append(_r(sum(c.seen[a:b]) / span, 3))
            out["goodput"].append(_r(sum(c.good[a:b]) / span, 3))
            out["success"].append(_r(sum(c.ok_by_start[a:b]) / first if first else None, 4))
            lb = sorted(buckets[i])
            out["p50"].append(_r(percentile(lb, 50.0)))
            out["p99"].append(_r(percentile(lb, 99.0)))
        return out


_STALL_REQUESTS = STALL_EVENTS // 10
"""Requests one closed-loop client may finish at one virtual instant before the run is
declared livelocked (each is several task steps, hence fewer than `STALL_EVENTS`)."""


def sched_steps(sched: Scheduler) -> int:
    """Task steps the scheduler ran (a measure of simulation work)."""
    return sched.steps


def _wants_events(pipeline: Any) -> bool:
    names = {type(s).__name__ for s in pipeline.strategies}
    return bool(names & {"CircuitBreaker", "LoadBalance"})


def _budgets(pipeline: Any) -> list[Any]:
    out = []
    seen: set[int] = set()
    for s in pipeline.strategies:
        budget = getattr(s, "budget", None)
        if budget is not None and id(budget) not in seen and hasattr(budget, "level"):
            seen.add(id(budget))
            out.append(budget)
    return out


def _flusher(pipeline: Any) -> Any:
    """What a ``cache_flush`` fault calls: empties every cache in ``pipeline`` at once.

    `CacheAside` loses its local tier (in-flight loads still store their results, as they
    would after a real flush); the ``cachetools-ttl`` baseline loses its entries.
    """
    from buttress import CacheAside

    from .pipelines import NaiveTTLCache

    clears = []
    for s in pipeline.strategies:
        if isinstance(s, CacheAside):
            clears.append(s.local.clear)
        elif isinstance(s, NaiveTTLCache):
            clears.append(s.clear)

    def flush() -> None:
        for clear in clears:
            clear()

    return flush


def run_one(scenario: Scenario, spec: PipelineSpec, seed: int) -> dict[str, Any]:
    """Simulate ``spec`` under ``scenario`` with ``seed``; returns the run's metrics dict."""
    return _Run(scenario, spec, seed).execute()
