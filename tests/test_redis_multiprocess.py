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


@pytest.mark.parametrize("timed", [False, True], ids=["count-window", "time-window"])
def test_four_processes_share_one_breaker(redis_url: str, timed: bool) -> None:
    from mp_workers import breaker_worker

    ctx = multiprocessing.get_context("spawn")
    start, opened = ctx.Barrier(4), ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=breaker_worker, args=(redis_url, i, start, opened, out, timed))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    reports = sorted((out.get(timeout=120) for _ in procs), key=lambda r: r["index"])
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    out.close()
    out.join_thread()
    assert [r.get("error") for r in reports] == [None] * 4
    assert all(r["before"] == "ok" for r in reports)
    # opened by process 0 once 10 calls (min_throughput) were in the window and at least
    # half failed: the 4 successes (one per process) and 6 failures, in either window
    assert reports[0]["failures_to_open"] == 6
    for r in reports[1:]:
        assert r["after"] == "rejected"  # the very next call after the opening
        assert 0 < r["retry_after"] <= 60
