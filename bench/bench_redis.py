"""Redis benchmarks (plain script, not a test): round trips, ops/s, cross-process stampede.

    .venv/bin/python bench/bench_redis.py [--quick]

Starts its own ``redis-server`` on a free port (``--save '' --appendonly no``).

1. One connection, sequential requests: a raw redis-py ``GET`` loop (the peer) beside
   ``RedisStore.cache_get`` (one EVALSHA), a ``CacheAside`` hit served from Redis (the
   local tier re-checks Redis on every call: ``local_ttl`` tiny), a shared retry-budget
   withdrawal and a ``RateLimiter`` admission on Redis. Round trips per operation are
   counted on the client (requests written to a socket / operations).
2. Cross-process stampede: 4 processes x 250 threads miss one key at once; the loader
   sleeps 0.5 s and counts its runs in Redis (target: exactly 1 load).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from buttress import CacheAside, Pipeline, RateLimiter, TokenBucketBudget
from buttress.stores import RedisStore

QUICK = "--quick" in sys.argv
N = 5_000 if QUICK else 20_000


def start_server() -> tuple[subprocess.Popen[bytes], int, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    tmp = tempfile.mkdtemp(prefix="buttress-bench-redis-")
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    client.close()
    return proc, port, tmp


_sent = [0]


def count_requests() -> None:
    """Count requests written to sockets (one per round trip; a pipeline counts once)."""
    from redis.connection import AbstractConnection

    original = AbstractConnection.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        _sent[0] += 1
        return original(self, *args, **kwargs)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]


def bench_round_trips(port: int) -> None:
    url = f"redis://127.0.0.1:{port}/0"
    raw = redis.Redis(port=port)  # one connection, sequential
    raw.set("raw", b'"x"')
    store = RedisStore(url, timeout=1)
    store.cache_set("bench", "k", b'"x"', 3600, 0, 0.01, 1)
    spec = CacheAside(3600, key="k", store=store, name="bench", local_ttl=1e-9)
    pipe = Pipeline(spec)

    def load() -> str:
        raise AssertionError("never loads: the value is in Redis")

    budget = TokenBucketBudget(1e12, retry_cost=1, name="bench", store=store)
    limited = Pipeline(RateLimiter(1e9, 1e9, store=store, name="bench"))

    def admitted() -> int:
        return 1

    ops = [
        ("raw redis-py GET (peer)", lambda: raw.get("raw")),
        ("RedisStore.cache_get (EVALSHA)", lambda: store.cache_get("bench", "k")),
        ("CacheAside hit served from Redis", lambda: pipe.call(load)),
        ("shared retry-budget withdrawal", lambda: budget.try_withdraw(0.0)),
        ("RateLimiter admission on Redis", lambda: limited.call(admitted)),
    ]
    chunk = N // 10
    best = [0.0] * len(ops)
    trips = [0.0] * len(ops)
    for i, (_, fn) in enumerate(ops):  # warm up, count round trips
        for _ in range(100):
            fn()
        before = _sent[0]
        for _ in range(1000):
            fn()
        trips[i] = (_sent[0] - before) / 1000
    for _ in range(10):  # interleaved chunks, best rate of each: fair on a loaded machine
        for i, (_, fn) in enumerate(ops):
            start = time.perf_counter()
            for _ in range(chunk):
                fn()
            best[i] = max(best[i], chunk / (time.perf_counter() - start))
    print(f"1. one connection, sequential; best of 10 interleaved chunks of {chunk}")
    for i, (label, _) in enumerate(ops):
        ratio = f"   {best[i] / best[0]:5.2f}x of raw GET" if i else ""
        print(f"   {label:<34} {best[i]:9.0f} ops/s   {trips[i]:4.2f} round trips/op{ratio}")
    spec.close()
    store.close()
    raw.close()


def bench_stampede(port: int) -> None:
    from mp_workers import cache_stampede_worker

    url = f"redis://127.0.0.1:{port}/0"
    redis.Redis(port=port).flushall()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=cache_stampede_worker, args=(url, start, 250, out)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    reports = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    loads = int(redis.Redis(port=port).get("test:loads") or 0)
    answered = sum(r[0] for r in reports)
    errors = sum(len(r[2]) for r in reports)
    print("2. cross-process stampede: 4 processes x 250 concurrent misses on one key")
    print(f"   loads: {loads}   answered: {answered}/1000   errors: {errors}")


if __name__ == "__main__":
    count_requests()
    proc, port, tmp = start_server()
    try:
        bench_round_trips(port)
        bench_stampede(port)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
