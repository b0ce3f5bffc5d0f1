"""Real mode (``buttress lab run --real``): the scenario in wall-clock time, over the network.

Each replica is a small asyncio HTTP/1.1 server on 127.0.0.1 (one per replica, own port)
with the scenario's workers, bounded queue, service times and faults applied live by a
timeline task; the clients are real `httpx.AsyncClient` calls (spread over ``CLIENTS``
clients) through the same buttress pipelines on the system clock. Clients and servers share
one event loop, whose scheduling lag is sampled and reported (``real.loop_lag``): a loaded
machine delays both, and a long stall is a fault of its own. The report has the same shape
as a simulated run.

Differences from the simulator, by necessity:

* Time is real: one run per pipeline, one after the other, each lasting the scenario's
  ``duration`` (so keep real-mode scenarios short; the command refuses runs longer than
  ``MAX_SECONDS`` in total).
* The offered rate is scaled down to at most ``MAX_RPS`` leaf calls per second (an httpx
  call costs ~0.5 ms of CPU, ~1 ms with a new connection, and a storm triples the calls),
  and workers and queues are scaled by the same factor so utilisation stays the same;
  ``results.json`` records the factor (``real.rate_scale``). Absolute rates in the
  pipelines (a retry budget's floor of retries per second, a rate limit) are not scaled,
  so they weigh more in a scaled run.
* A down replica answers ``503`` with ``x-lab-error: unavailable`` at once instead of
  refusing the TCP connection (the client maps it to `UnavailableError`).
* Wasted work is server time spent on requests whose client deadline (sent in the
  ``x-lab-deadline`` header) had passed when the work finished.
* The ``occ`` dependency, ``fanout`` > 1 and the network-delay distribution are not
  modelled in real mode (the command says so); ``cache_flush`` faults and zone delays are
  refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random as _random
import time
from collections import Counter, deque
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from .errors import (
    CallTimeoutError,
    OverloadedError,
    ScenarioError,
    ServerError,
    ThrottledError,
    UnavailableError,
)
from .model import Counters, key_picker, sampler
from .pipelines import build_pipeline
from .run import _Run, percentile
from .runner import aggregate, check_names
from .scenario import FaultSpec, PipelineSpec, Scenario

__all__ = ["BUSY_LAG", "MAX_RPS", "MAX_SECONDS", "run_real"]

MAX_RPS = 100.0
"""Most leaf calls per second offered in real mode; faster scenarios are scaled down."""

MAX_SECONDS = 300.0
"""Longest real-mode session accepted (pipelines x seeds x duration), seconds."""

CLIENTS = 16
"""`httpx.AsyncClient` instances the calls are spread over (round robin, per attempt).

httpcore's connection pool re-examines every pooled connection for every connection on
each request start and end, so its CPU cost grows with the square of the connections in
one pool. In a retry storm every timed-out attempt costs a fresh connection and ~100 are
in flight: with one client the pool bookkeeping took most of the process's CPU, the event
loop fell behind, attempts timed out before they were even sent and the server saw less
load than the clients offered (hiding the storm). Sixteen small pools cost ~1/16 as much
each and stand for what a storm really involves: many client instances.
"""

BACKLOG = 4096
"""Listen backlog of each replica's server (asyncio's default, 100, overflows in a storm).

When the accept queue overflows the kernel drops the client's SYN and the client resends
it only after a second: such attempts time out without reaching the server, and the
server sees less load than was offered.
"""

LAG_PROBE = 0.02
"""Period of the event-loop lag probe, seconds (``real.loop_lag`` in the results)."""

BUSY_LAG = 0.25
"""Event-loop stall, seconds, from which the command warns that the machine was too busy."""


class _Replica:
    def __init__(self, index: int, zone: str, workers: int) -> None:
        self.index = index
        self.zone = zone
        self.workers = workers
        self.capacity = workers
        self.busy = 0
        self.queue: deque[asyncio.Future[None]] = deque()
        self.down = self.hang = self.fail_fast = False
        self.error_rate = 0.0
        self.latency = 1.0
        self.port = 0
        self.server: asyncio.Server | None = None

    def is_hung(self) -> bool:
        """Whether a hang fault is on now (a method: it changes while a request waits)."""
        return self.hang


class _Dependency:
    """The replicas, their HTTP servers and the live fault state."""

    def __init__(self, scenario: Scenario, seed: int, c: Counters, scale: float) -> None:
        dep = scenario.dependency
        workers = max(1, round(dep.workers * scale))
        self.queue_cap = round(dep.queue * scale)
        self.replicas = [
            _Replica(i, dep.zones[i % len(dep.zones)], workers) for i in range(dep.replicas)
        ]
        self.scenario = scenario
        self.c = c
        self.last = c.size - 1
        self.t0 = 0.0
        self.service = sampler(dep.service, _random.Random(f"{seed}/service"))
        self.fault_rng = _random.Random(f"{seed}/faults")
        self.bad_keys: dict[int, str] = {}
        self.active: list[FaultSpec] = []
        self.hung: set[asyncio.Future[None]] = set()
        self.handlers: set[asyncio.Task[Any]] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.stopping = False

    def bin(self) -> int:
        b = int(time.monotonic() - self.t0)
        return b if b <= self.last else self.last

    async def start(self) -> None:
        for rep in self.replicas:
            rep.server = await asyncio.start_server(
                self._handler(rep), "127.0.0.1", 0, backlog=BACKLOG
            )
            rep.port = rep.server.sockets[0].getsockname()[1]

    def _handler(self, rep: _Replica) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.handlers.add(task)
            self.writers.add(writer)
            try:
                await self._connection(rep, reader, writer)
            finally:
                self.writers.discard(writer)
                if task is not None:
                    self.handlers.discard(task)

        return handle

    async def stop(self) -> None:
        self.stopping = True
        for fut in list(self.hung):
            if not fut.done():
                fut.set_result(None)
        for rep in self.replicas:
            if rep.server is not None:
                rep.server.close()
        # close every connection so the handlers end normally (EOF), then wait for them;
        # queued requests are dropped unserved (taken off the queue, so no worker hands
        # its slot to them afterwards)
        for writer in list(self.writers):
            writer.close()
        for rep in self.replicas:
            while rep.queue:
                slot = rep.queue.popleft()
                if not slot.done():
                    slot.set_result(None)
        if self.handlers:
            await asyncio.wait(list(self.handlers), timeout=5.0)
        for rep in self.replicas:
            if rep.server is not None:
                await rep.server.wait_closed()

    # -- faults -------------------------------------------------------------------------

    async def timeline(self) -> None:
        events: list[tuple[float, int, FaultSpec]] = []
        for f in self.scenario.faults:
            if f.kind == "flapping":
                t = f.start
                while t < f.end:
                    events.append((t, 1, f))
                    events.append((min(t + f.bad, f.end), 0, f))
                    t = min(t + f.bad, f.end) + f.good
            else:
                events += [(f.start, 1, f), (f.end, 0, f)]
        events.sort(key=lambda e: (e[0], e[1]))
        for when, on, f in events:
            delay = self.t0 + when - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if on:
                self.active.append(f)
            elif f in self.active:
                self.active.remove(f)
            self._apply()

    def _apply(self) -> None:
        for r in self.replicas:
            r.down = r.hang = r.fail_fast = False
            r.error_rate = 0.0
            r.latency = 1.0
            r.capacity = r.workers
        self.bad_keys = {}
        for f in self.active:
            if f.kind == "partition":
                for k in f.keys:
                    self.bad_keys[k] = f.mode
                continue
            if f.replica is not None:
                targets = [self.replicas[f.replica]]
            elif f.zone is not None:
                targets = [r for r in self.replicas if r.zone == f.zone]
            else:
                targets = self.replicas
            for r in targets:
                if f.kind in ("outage", "flapping"):
                    if f.mode == "hang":
                        r.hang = True
                    else:
                        r.fail_fast = True
                elif f.kind == "error_rate":
                    r.error_rate = 1.0 - (1.0 - r.error_rate) * (1.0 - f.rate)
                elif f.kind in ("latency", "slow_replica"):
                    r.latency *= f.factor
                elif f.kind == "capacity":
                    r.capacity = min(r.capacity, round(r.workers * f.remaining))
                elif f.kind in ("replica_down", "zone_down"):
                    r.down = True
        for r in self.replicas:
            while r.queue and r.busy < r.capacity:
                r.busy += 1
                fut = r.queue.popleft()
                if not fut.done():
                    fut.set_result(None)
                else:
                    r.busy -= 1

    # -- HTTP ----------------------------------------------------------------------------

    async def _connection(
        self, rep: _Replica, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                path = line.split(b" ")[1].decode() if b" " in line else "/"
                status: int | None = 200
                extra = ""
                if path != "/warmup":  # warm-up: before the run's clock starts, not counted
                    key = int(path.rpartition("key=")[2] or 0) if "key=" in path else 0
                    deadline = float(headers.get("x-lab-deadline", "inf"))
                    status, extra = await self._serve(rep, key, deadline, reader)
                if status is None:
                    break  # hung: the client gave up and closed the connection
                body = b"ok" if status == 200 else b"error"
                head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
                writer.write(head.encode() + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _serve(
        self, rep: _Replica, key: int, deadline: float, reader: asyncio.StreamReader
    ) -> tuple[int | None, str]:
        c = self.c
        dep = self.scenario.dependency
        if rep.down:
            c.refused += 1
            return 503, "x-lab-error: unavailable\r\n"
        if rep.hang or self.bad_keys.get(key) == "hang":
            c.lost += 1  # packet loss: the request never arrives
            await self._hold(reader)
            return None, ""
        c.seen[self.bin()] += 1
        if (
            rep.fail_fast
            or key in self.bad_keys
            or (rep.error_rate > 0 and self.fault_rng.random() < rep.error_rate)
        ):
            c.server_errors += 1
            if dep.rejection_cost > 0:
                await asyncio.sleep(dep.rejection_cost)
            return 500, ""
        if rep.busy < rep.capacity:
            rep.busy += 1
        elif len(rep.queue) < self.queue_cap:
            slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            rep.queue.append(slot)
            await slot  # the releasing worker hands its slot over
            if self.stopping:
                return None, ""
        elif dep.throttle_retry_after is not None:
            c.throttled += 1
            return 429, f"retry-after: {dep.throttle_retry_after:g}\r\n"
        else:
            c.overloaded += 1
            return 503, "x-lab-error: overloaded\r\n"
        started = time.monotonic()
        try:
            await asyncio.sleep(self.service() * rep.latency)
        finally:
            used = time.monotonic() - started
            b = self.bin()
            c.busy[b] += used
            if time.monotonic() > deadline:
                c.wasted[b] += used
            self._release(rep)
        if rep.is_hung():  # as in the simulator: served, but the reply is lost in the network
            c.lost += 1
            await self._hold(reader)
            return None, ""
        return 200, ""

    async def _hold(self, reader: asyncio.StreamReader) -> None:
        """Keep a lost call's connection silent until its client gives up (or the run ends)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.hung.add(fut)
        reader_done: asyncio.Future[Any] = asyncio.ensure_future(reader.read(1))
        pending: list[asyncio.Future[Any]] = [fut, reader_done]
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader_done.cancel()
            self.hung.discard(fut)

    @staticmethod
    def _release(rep: _Replica) -> None:
        """A worker is done: hand it to the next queued request, or free it."""
        if rep.busy <= rep.capacity:
            while rep.queue:
                slot = rep.queue.popleft()
                if not slot.done():  # a cancelled waiter gave its place up
                    slot.set_result(None)
                    return
        rep.busy -= 1


class _RealRun(_Run):
    """One pipeline run in wall-clock time (reuses the simulator's result code)."""

    def __init__(self, scenario: Scenario, spec: PipelineSpec, seed: int, scale: float) -> None:
        import buttress

        self.scenario = scenario
        self.seed = seed
        self.c = c = Counters(scenario.duration)
        self.last = c.size - 1
        self.sched = SimpleNamespace(steps=0)  # type: ignore[assignment]
        self.pipeline = build_pipeline(
            spec,
            buttress.SystemClock(),
            _random.Random(f"{seed}/pipeline/{spec.name}"),
            file=scenario.source,
        )
        self.lat = []
        self.lat_t = []
        self.errors = Counter()
        self.failed = self.succeeded = 0
        self.finished_at = 0.0
        self.budgets = []
        self.budget_series = []
        self.breaker = []
        self.ejections = []
        self.fanout = 1
        self.by_key = None
        self.keyed = False
        self.scale = scale
        self.dep = _Dependency(scenario, seed, c, scale)
        self.arrival_rng = _random.Random(f"{seed}/arrivals")
        self.key_rng = _random.Random(f"{seed}/keys")
        self._key = key_picker(scenario.load, self.key_rng)
        self.route_rng = _random.Random(f"{seed}/route")
        self.zone = scenario.client.zone or scenario.dependency.zones[0]
        self.clients: list[Any] = []
        self.next_client = 0
        self.lags: list[float] = []

    async def _call(self, key: int) -> None:
        import httpx

        dep = self.dep
        client = self.clients[self.next_client % len(self.clients)]
        self.next_client += 1
        self.c.attempts[dep.bin()] += 1
        reps = dep.replicas
        rep = reps[int(self.route_rng.random() * len(reps))]
        if rep.zone != self.zone:
            self.c.cross_zone += 1
        timeout = self.scenario.client.timeout
        deadline = time.monotonic() + timeout if timeout is not None else math.inf
        try:
            # the scenario's timeout bounds the whole call (httpx's is per phase)
            async with asyncio.timeout(timeout):
                r = await client.get(
                    f"http://127.0.0.1:{rep.port}/call?key={key}",
                    headers={"x-lab-deadline": repr(deadline)},
                    timeout=None,
                )
        except (httpx.TimeoutException, TimeoutError):
            raise CallTimeoutError() from None
        except httpx.TransportError as exc:
            raise UnavailableError(str(exc)) from None
        if r.status_code == 200:
            return
        if r.status_code == 429:
            raise ThrottledError(
                "throttled",
                strategy="dependency",
                retry_after=float(r.headers.get("retry-after", "0")),
            )
        if r.status_code == 503:
            if r.headers.get("x-lab-error") == "unavailable":
                raise UnavailableError(f"replica {rep.index} is down")
            raise OverloadedError("queue full")
        raise ServerError(f"HTTP {r.status_code}")

    async def _user(self) -> None:  # type: ignore[override]
        dep = self.dep
        c = self.c
        t0 = time.monotonic()
        b = dep.bin()
        c.first[b] += 1
        key = self._key()
        try:
            await self.pipeline.acall(self._call, key)
        except Exception as exc:
            self.failed += 1
            self.errors[type(exc).__name__] += 1
        else:
            now = time.monotonic()
            self.succeeded += 1
            c.ok_by_start[b] += 1
            c.good[dep.bin()] += 1
            self.lat.append(now - t0)
            self.lat_t.append(now - dep.t0)
        self.finished_at = time.monotonic() - dep.t0

    async def _drive(self) -> None:
        import ssl

        import httpx

        sc = self.scenario
        load = sc.load
        dep = self.dep
        await dep.start()
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
        tls = ssl.create_default_context()  # unused (plain HTTP); built once, not per client
        tasks: set[asyncio.Task[None]] = set()
        probe: asyncio.Future[None] | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(CLIENTS):
                    client = httpx.AsyncClient(limits=limits, verify=tls)
                    self.clients.append(await stack.enter_async_context(client))
                await self._warm_up()
                probe = asyncio.ensure_future(self._probe_lag())
                dep.t0 = time.monotonic()
                timeline = asyncio.ensure_future(dep.timeline())
                stop = load.stop if load.stop is not None else sc.duration
                if load.kind == "open":
                    t = load.start
                    while True:
                        rate = load.rate_at(t) * self.scale
                        if rate <= 0:
                            t += 0.1
                        elif load.arrival == "poisson":
                            t += self.arrival_rng.expovariate(rate)
                        else:
                            t += 1.0 / rate
                        if t >= stop:
                            break
                        delay = dep.t0 + t - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        task = asyncio.ensure_future(self._user())
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                else:
                    clients = max(1, round(load.clients * self.scale))
                    for _ in range(clients):
                        task = asyncio.ensure_future(self._client_loop(stop))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                remaining = dep.t0 + sc.duration - time.monotonic()
                if remaining > 0:
                    await asyncio.sleep(remaining)
                timeline.cancel()
                probe.cancel()
                self.in_flight = len(tasks)
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, timeline, probe, return_exceptions=True)
        finally:
            if probe is not None:
                probe.cancel()
            await dep.stop()

    async def _warm_up(self) -> None:
        """One uncounted request per client before the clock starts.

        The first request of a process imports and sets up parts of the HTTP stack (a
        stall of a few hundred milliseconds that used to land in the first second).
        """
        reps = self.dep.replicas
        for i, client in enumerate(self.clients):
            await client.get(f"http://127.0.0.1:{reps[i % len(reps)].port}/warmup")

    async def _probe_lag(self) -> None:
        """Sample how late the event loop wakes a sleeping task (its scheduling lag)."""
        lags = self.lags
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE)
            lags.append(max(0.0, time.monotonic() - before - LAG_PROBE))

    async def _client_loop(self, stop: float) -> None:
        load = self.scenario.load
        n = 0
        while (load.requests_per_client == 0 or n < load.requests_per_client) and (
            time.monotonic() - self.dep.t0 < stop
        ):
            await self._user()
            n += 1
            if load.think_time > 0:
                await asyncio.sleep(load.think_time)

    def execute(self) -> dict[str, Any]:
        self.in_flight = 0
        asyncio.run(self._drive())
        return self._results(self.in_flight)

    def loop_lag(self) -> tuple[float, float]:
        """The event loop's scheduling lag over the run: (99th percentile, max), seconds."""
        lags = sorted(self.lags)
        return (percentile(lags, 99.0) or 0.0, lags[-1] if lags else 0.0)


def _check(scenario: Scenario, runs: int) -> None:
    where = scenario.source
    if scenario.dependency.kind != "service":
        raise ScenarioError(where, "dependency.kind", "real mode supports only 'service'")
    if scenario.load.fanout != 1:
        raise ScenarioError(where, "load.fanout", "real mode supports only fanout = 1")
    for i, f in enumerate(scenario.faults):
        if f.kind == "cache_flush":
            raise ScenarioError(
                where, f"faults[{i}].kind", "'cache_flush' is simulator-only (not in real mode)"
            )
    zd = scenario.dependency.zone_delay
    if zd.same or zd.cross or any(d for _, _, d in zd.pairs):
        raise ScenarioError(
            where, "dependency.zone_delay", "zone delays are simulator-only (not in real mode)"
        )
    total = runs * scenario.duration
    if total > MAX_SECONDS:
        raise ScenarioError(
            where,
            "scenario.duration",
            f"real mode would take {total:.0f} s ({runs} runs x {scenario.duration:g} s); "
            f"keep it under {MAX_SECONDS:.0f} s (fewer seeds or pipelines, or a shorter "
            "scenario)",
        )


def run_real(
    scenario: Scenario,
    *,
    seeds: int | None = None,
    extra: tuple[PipelineSpec, ...] = (),
    progress: Any = None,
    on_start: Any = None,
) -> dict[str, Any]:
    """Run ``scenario`` in wall-clock time against real HTTP servers on 127.0.0.1.

    Args:
        scenario: The validated scenario.
        seeds: Seeds per pipeline (default 1 in real mode).
        extra: More pipelines (``--pipeline``).
        progress: Called as ``progress(done, total)`` after each run.
        on_start: Called once the scenario is accepted for real mode, before the first
            run (the CLI creates its output directory there).

    Returns:
        The results document (same schema as simulated runs, plus ``real``).

    Raises:
        ScenarioError: The scenario cannot run in real mode, two pipelines share a name,
            or the ``httpx`` extra is missing.
    """
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise ScenarioError(
            scenario.source, "", "real mode needs httpx: pip install 'buttress[httpx]'"
        ) from None
    n = seeds if seeds is not None else 1
    specs = (*scenario.pipelines, *extra)
    check_names(scenario, specs)
    _check(scenario, n * len(specs))
    if on_start is not None:
        on_start()
    load = scenario.load
    peak = max([load.rate, *(r for _, r in load.ramp)]) if load.kind == "open" else 0.0
    scale = min(1.0, MAX_RPS / peak) if peak > 0 else 1.0
    by_pipeline: dict[str, list[dict[str, Any]]] = {s.name: [] for s in specs}
    lag: dict[str, dict[str, float]] = {}
    total = n * len(specs)
    done = 0
    for spec in specs:
        for seed in range(n):
            run = _RealRun(scenario, spec, seed, scale)
            by_pipeline[spec.name].append(run.execute())
            p99, worst = run.loop_lag()
            seen = lag.setdefault(spec.name, {"p99": 0.0, "max": 0.0})
            seen["p99"] = round(max(seen["p99"], p99), 6)
            seen["max"] = round(max(seen["max"], worst), 6)
            done += 1
            if progress is not None:
                progress(done, total)
    # rates, goodput and counts are those of the scaled run (see ``real.rate_scale``)
    out = aggregate(replace(scenario, pipelines=specs), n, by_pipeline)
    out["real"] = {"rate_scale": round(scale, 6), "max_rps": MAX_RPS, "loop_lag": lag}
    return out
