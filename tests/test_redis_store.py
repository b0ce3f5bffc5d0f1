"""RedisStore against a real redis-server (started by the test session)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from buttress import CacheAside, ConfigurationError, Pipeline
from buttress.events import CacheHit, StoreFailed, StoreRecovered
from buttress.stores import RedisStore
from buttress.testing import RecordingListener

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str) -> Any:
    s = RedisStore(redis_url, timeout=2)
    yield s
    s.close()


@pytest.mark.parametrize(
    "url",
    ["", "http://localhost", "redis://", "redis://host:99999", "redis://h/abc", "unix://", 5],
)
def test_invalid_urls(url: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisStore(url)
    assert info.value.parameter == "url"


def test_invalid_prefix_and_timeout() -> None:
    with pytest.raises(ConfigurationError):
        RedisStore(prefix="a b")
    with pytest.raises(ConfigurationError):
        RedisStore(timeout=0)


def test_description_hides_credentials() -> None:
    s = RedisStore("redis://user:secret@example.com:6380/2")
    assert s.description == "redis://example.com:6380/2"
    assert "secret" not in repr(s)


def test_cache_record_roundtrip_uses_server_time(store: RedisStore) -> None:
    assert store.cache_get("ns", "k") is None
    assert store.cache_set("ns", "k", b'"v"', 10.0, 5.0, 0.25, 3)
    rec = store.cache_get("ns", "k")
    assert rec is not None
    assert rec.payload == b'"v"'
    assert 9.5 < rec.fresh_for <= 10.0
    assert rec.delta == 0.25
    assert rec.token == 3
    client = store._sync()
    assert client.exists("buttress:{ns}:c:k")
    assert 14_000 < client.pttl("buttress:{ns}:c:k") <= 15_000  # ttl + keep: expires by itself


def test_fencing_refuses_older_tokens(store: RedisStore) -> None:
    assert store.cache_set("ns", "k", b"1", 10, 0, 0, 5)
    assert not store.cache_set("ns", "k", b"2", 10, 0, 0, 4)
    assert store.cache_set("ns", "k", b"3", 10, 0, 0, 6)
    assert store.cache_get("ns", "k").payload == b"3"  # type: ignore[union-attr]


def test_lock_with_lease_and_tokens(store: RedisStore) -> None:
    ok, t1, _ = store.cache_lock("ns", "k", 0.3)
    assert ok
    ok2, t2, wait = store.cache_lock("ns", "k", 0.3)
    assert not ok2
    assert t2 > t1
    assert 0 < wait <= 0.3
    store.cache_unlock("ns", "k", t2)  # not the holder: no effect
    assert not store.cache_lock("ns", "k", 0.3)[0]
    store.cache_unlock("ns", "k", t1)
    ok3, t3, _ = store.cache_lock("ns", "k", 0.05)
    assert ok3
    assert t3 > t2
    time.sleep(0.08)  # the lease runs out by itself
    assert store.cache_lock("ns", "k", 0.05)[0]


def test_delete_prefix_only_touches_its_namespace(store: RedisStore) -> None:
    for k in ("user:1", "user:2", "user*x", "order:1"):
        store.cache_set("ns", k, b"1", 10, 0, 0, 1)
    store.cache_set("other", "user:1", b"1", 10, 0, 0, 1)
    assert store.cache_delete_prefix("ns", "user:") == 2
    assert store.cache_get("ns", "user*x") is not None
    assert store.cache_get("other", "user:1") is not None
    assert store.cache_delete_prefix("ns", "user*") == 1


def test_two_processes_share_a_cache_and_invalidations(redis_url: str) -> None:
    sa, sb = RedisStore(redis_url, timeout=2), RedisStore(redis_url, timeout=2)
    a = CacheAside(60, key="item:{x}", store=sa)
    b = CacheAside(60, key="item:{x}", store=sb)
    events = RecordingListener()
    pa, pb = Pipeline(a), Pipeline(b, listeners=[events])
    n = [0]

    def load(x: int) -> dict[str, Any]:
        n[0] += 1
        return {"x": x, "n": n[0]}

    try:
        assert pa.call(load, 1) == {"x": 1, "n": 1}
        assert pb.call(load, 1) == {"x": 1, "n": 1}
        assert events.of_type(CacheHit)[-1].tier == "remote"
        assert n[0] == 1
        b_sub = b._subscription
        assert b_sub.ready.wait(5)
        a.invalidate("item:1")
        deadline = time.monotonic() + 5
        while "item:1" in b.local and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "item:1" not in b.local
        assert pb.call(load, 1) == {"x": 1, "n": 2}
    finally:
        a.close()
        b.close()
        sa.close()
        sb.close()


def test_garbage_in_redis_is_a_miss(store: RedisStore) -> None:
    store._sync().hset("buttress:{c}:c:k1", mapping={"v": b"\x80garbage", "e": "x"})
    spec = CacheAside(60, key="k{x}", store=store, name="c")
    assert Pipeline(spec).call(lambda x: "loaded", 1) == "loaded"
    spec.close()


@pytest.mark.asyncio
async def test_async_path_on_redis(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=2)
    spec = CacheAside(60, key="k{x}", store=store)
    pipe = Pipeline(spec)
    n = [0]

    async def load(x: int) -> int:
        n[0] += 1
        await asyncio.sleep(0.01)
        return x

    try:
        assert await asyncio.gather(*(pipe.acall(load, 3) for _ in range(50))) == [3] * 50
        spec.local.clear()
        assert await pipe.acall(load, 3) == 3  # from Redis
        assert n[0] == 1
        await spec.ainvalidate("k3")
        assert await store.acache_get("cache", "k3") is None
    finally:
        spec.close()
        await store.aclose()
        store.close()


def test_unreachable_redis_at_start_up_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    from redis_fixture import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    events = RecordingListener()
    spec = CacheAside(60, key="k{x}", store=store)
    pipe = Pipeline(spec, listeners=[events])
    try:
        assert pipe.call(lambda x: x + 1, 1) == 2
        assert pipe.call(lambda x: x + 1, 1) == 2
        failed = events.of_type(StoreFailed)
        assert failed
        assert failed[0].store.startswith("redis://127.0.0.1:")
        assert any("failed during" in r.message for r in caplog.records)
        assert not events.of_type(StoreRecovered)
    finally:
        spec.close()
        store.close()
