"""Worker functions for multi-process tests (importable by spawned children)."""

from __future__ import annotations

import threading
import time
from typing import Any


def cache_stampede_worker(url: str, start: Any, threads: int, out: Any) -> None:
    """``threads`` concurrent misses on one key through a Redis-backed CacheAside."""
    import redis

    from buttress import CacheAside, Pipeline
    from buttress.stores import RedisStore

    store = RedisStore(url, timeout=5)
    spec = CacheAside(60, key="hot", store=store, lock_lease=10, poll_interval=0.02)
    pipe = Pipeline(spec)
    counter = redis.Redis.from_url(url)

    def load() -> dict[str, int]:
        n = int(counter.incr("test:loads"))
        time.sleep(0.5)
        return {"value": 42, "load": n}

    results: list[Any] = []
    errors: list[str] = []
    barrier = threading.Barrier(threads)

    def one() -> None:
        barrier.wait()
        try:
            results.append(pipe.call(load))
        except Exception as exc:  # reported to the parent
            errors.append(repr(exc))

    start.wait()
    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    spec.close()
    store.close()
    counter.close()
    out.put((len(results), sorted({r["load"] for r in results}), errors))


def breaker_worker(
    url: str, index: int, start: Any, opened: Any, out: Any, timed: bool = False
) -> None:
    try:
        _breaker_worker(url, index, start, opened, out, timed)
    except Exception as exc:  # reported to the parent, never a hang
        out.put({"index": index, "error": repr(exc)})


def _breaker_worker(url: str, index: int, start: Any, opened: Any, out: Any, timed: bool) -> None:
    """Process 0 fails until the shared breaker opens; the others must then reject.
    ``timed``: a time window (60 s in 6 buckets) instead of the last 20 calls."""
    from buttress import CircuitBreaker, CircuitOpenError, Pipeline
    from buttress.stores import RedisStore

    store = RedisStore(url, timeout=5)
    window: dict[str, Any] = (
        {"window_duration": 60, "window_buckets": 6} if timed else {"window": 20}
    )
    pipe = Pipeline(
        CircuitBreaker(
            on=ConnectionError,
            failure_ratio=0.5,
            min_throughput=10,
            break_duration=60,
            store=store,
            name="shared-breaker",
            **window,
        )
    )

    def ok() -> str:
        return "ok"

    def boom() -> None:
        raise ConnectionError("dependency down")

    before = pipe.call(ok)  # closed: every process gets through
    start.wait()  # a barrier: everyone has made a call before process 0 starts failing
    report: dict[str, Any] = {"index": index, "before": before}
    if index == 0:
        failures = 0
        while True:
            try:
                pipe.call(boom)
            except ConnectionError:
                failures += 1
            except CircuitOpenError:
                break
        report["failures_to_open"] = failures
        opened.set()
    else:
        opened.wait(60)
        try:
            pipe.call(ok)
            report["after"] = "admitted"
        except CircuitOpenError as exc:
            report["after"] = "rejected"
            report["retry_after"] = exc.retry_after
    store.close()
    out.put(report)
