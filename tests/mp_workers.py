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
