"""Several processes sharing state on one redis-server."""

from __future__ import annotations

import multiprocessing

import pytest
import redis

from mp_workers import cache_stampede_worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_four_processes_250_misses_each_give_one_load(redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=cache_stampede_worker, args=(redis_url, start, 250, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    reports = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    out.close()
    out.join_thread()
    for answered, loads_seen, errors in reports:
        assert errors == []
        assert answered == 250
        assert loads_seen == [1]  # everyone got the value of load number 1
    client = redis.Redis.from_url(redis_url)
    try:
        assert int(client.get("test:loads")) == 1
    finally:
        client.close()
