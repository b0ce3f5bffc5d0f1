"""CacheAside / @cached on the local tier (and a shared in-memory store)."""

from __future__ import annotations

import asyncio
import math
import random
import threading
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress import CacheAside, ConfigurationError, Pipeline, StoreError, cached
from buttress._state.cache import (
    EARLY,
    FRESH,
    MISS,
    STALE,
    Entry,
    KeyBuilder,
    LocalCache,
    decide,
    jittered_ttl,
    xfetch_refresh,
)
from buttress.events import (
    CacheHit,
    CacheMiss,
    CacheRefreshed,
    CacheStaleServed,
    StoreFailed,
    StoreRecovered,
)
from buttress.stores import MemoryCacheStore
from buttress.testing import ManualClock, RecordingListener

# -- keys ---------------------------------------------------------------------------------------


def test_keys_are_normalised_through_the_signature() -> None:
    def f(a: int, b: int = 2, *, c: int = 3) -> int:
        return a

    k = KeyBuilder(f)
    assert k((1,), {}) == k((1, 2), {}) == k((), {"b": 2, "a": 1}) == k((1,), {"c": 3})
    assert k((1,), {}) != k((1, 3), {})


def test_fast_path_key_matches_the_bound_key() -> None:
    def f(a: int, b: int) -> int:
        return a

    k = KeyBuilder(f)
    assert k((1, 2), {}) == k((1,), {"b": 2}) == k((), {"b": 2, "a": 1})


def test_var_keyword_order_does_not_matter() -> None:
    def f(**kw: Any) -> int:
        return 0

    k = KeyBuilder(f)
    assert k((), {"a": 1, "b": 2}) == k((), {"b": 2, "a": 1})


def test_template_and_callable_keys() -> None:
    def load(user_id: int, verbose: bool = False) -> int:
        return user_id

    assert KeyBuilder(load, "user:{user_id}")((7,), {"verbose": True}) == "user:7"
    assert KeyBuilder(load, lambda user_id, verbose=False: f"u{user_id}")((8,), {}) == "u8"
    with pytest.raises(ValueError, match="nope"):
        KeyBuilder(load, "user:{nope}")
    with pytest.raises(ConfigurationError, match="key"):
        CacheAside(1, key="user:{nope}").key_for(load, 1)


def test_methods_are_keyed_without_the_instance_unless_asked() -> None:
    class Repo:
        def __init__(self) -> None:
            self.calls = 0

        @cached(10)
        def get(self, item: int) -> int:
            self.calls += 1
            return item * 10

    a, b = Repo(), Repo()
    assert a.get(1) == 10
    assert b.get(1) == 10
    assert (a.calls, b.calls) == (1, 0)  # shared across instances by default

    class Scoped:
        def __init__(self, tag: str) -> None:
            self.tag = tag
            self.calls = 0

        def __cache_key__(self) -> str:
            return self.tag

        @cached(10, per_instance=True)
        def get(self, item: int) -> str:
            self.calls += 1
            return f"{self.tag}{item}"

    x, y = Scoped("x"), Scoped("y")
    assert (x.get(1), y.get(1), x.get(1)) == ("x1", "y1", "x1")
    assert (x.calls, y.calls) == (1, 1)


@given(st.integers(), st.integers(), st.booleans())
def test_property_positional_and_keyword_forms_agree(a: int, b: int, swap: bool) -> None:
    def f(x: int, y: int = 0) -> int:
        return x

    k = KeyBuilder(f)
    kwargs = {"y": b, "x": a} if swap else {"x": a, "y": b}
    assert k((a, b), {}) == k((), kwargs) == k((a,), {"y": b})


# -- pure parts ---------------------------------------------------------------------------------


def test_xfetch_rule_and_probability() -> None:
    assert not xfetch_refresh(0.0, 10.0, 1.0, 1.0, 1.0)  # ln(1) = 0: never early
    assert xfetch_refresh(10.0, 10.0, 1.0, 1.0, 1.0)  # expired
    assert xfetch_refresh(9.0, 10.0, 1.0, 1.0, math.exp(-1.0) - 1e-9)
    assert not xfetch_refresh(9.0, 10.0, 1.0, 0.0, 1e-9)  # beta 0: off
    # empirical probability matches exp(-(expiry - now) / (beta * delta))
    rng = random.Random(7)
    entry = Entry("v", 10.0, 10.0, 10.0, delta=0.5, beta=1.0)
    n = 20_000
    fired = sum(decide(entry, 9.5, 1.0, rng) == EARLY for _ in range(n))
    assert abs(fired / n - math.exp(-1.0)) < 0.015
    fired2 = sum(decide(entry, 9.5, 2.0, rng) == EARLY for _ in range(n))
    assert abs(fired2 / n - math.exp(-0.5)) < 0.015


def test_decide_windows() -> None:
    rng = random.Random(1)
    entry = Entry("v", 10.0, 12.0, 15.0, delta=0.0, beta=1.0)
    assert decide(None, 0.0, 1.0, rng) == MISS
    assert decide(entry, 9.99, 1.0, rng) == FRESH
    assert decide(entry, 10.0, 1.0, rng) == STALE
    assert decide(entry, 12.0, 1.0, rng) == MISS
    # far from expiry no draw happens at all (early_at gate)
    far = Entry("v", 100.0, 100.0, 100.0, delta=1.0, beta=1.0)
    assert far.early_at == 70.0


def test_jittered_ttl_is_never_longer() -> None:
    rng = random.Random(3)
    values = [jittered_ttl(100.0, 0.2, rng) for _ in range(2000)]
    assert all(80.0 <= v <= 100.0 for v in values)
    assert max(values) - min(values) > 15.0
    assert jittered_ttl(100.0, 0.0, rng) == 100.0


@settings(max_examples=50)
@given(st.integers(1, 20), st.lists(st.sampled_from("abcdefghijklmnopqrstuvwxyz"), max_size=200))
def test_property_local_cache_is_bounded_lru(bound: int, keys: list[str]) -> None:
    cache = LocalCache(bound)
    model: list[str] = []
    for k in keys:
        if cache.get(k) is not None:
            model.remove(k)
            model.append(k)
        else:
            cache.put(k, Entry(k, 1, 1, 1, 0, 1))
            model.append(k)
            if len(model) > bound:
                model.pop(0)
        assert len(cache) <= bound
        assert list(cache._map) == model


# -- behaviour on a manual clock ----------------------------------------------------------------


def make(clock: ManualClock, events: RecordingListener | None = None, **opts: Any) -> Any:
    calls: list[Any] = []

    @cached(
        opts.pop("ttl", 10), clock=clock, listeners=[events] if events is not None else (), **opts
    )
    def load(item: int) -> Any:
        calls.append(item)
        return RESULTS.get(item, item * 2)

    return load, calls


RESULTS: dict[int, Any] = {}


def test_ttl_expiry_and_events(clock: ManualClock, events: RecordingListener) -> None:
    load, calls = make(clock, events, ttl=timedelta(seconds=10), beta=0)
    assert load(1) == 2
    clock.advance(9.9)
    assert load(1) == 2
    assert calls == [1]
    clock.advance(0.1)
    assert load(1) == 2
    assert calls == [1, 1]
    assert events.kinds() == [
        "cache.miss",
        "cache.refreshed",
        "cache.hit",
        "cache.miss",
        "cache.refreshed",
    ]


def test_ttl_zero_means_do_not_cache(clock: ManualClock) -> None:
    load, calls = make(clock, ttl=0)
    load(1)
    load(1)
    assert calls == [1, 1]
    assert len(load.cache.local) == 0


def test_negative_caching_has_its_own_ttl(clock: ManualClock) -> None:
    RESULTS[404] = None
    load, calls = make(clock, ttl=60, negative_ttl=1, beta=0)
    assert load(404) is None
    assert load(404) is None
    assert calls == [404]
    clock.advance(1)
    load(404)
    assert calls == [404, 404]
    load0, calls0 = make(clock, ttl=60, negative_ttl=0)
    load0(404)
    load0(404)
    assert calls0 == [404, 404]
    marker, mcalls = make(clock, ttl=60, negative_ttl=0, is_negative=lambda v: v == 6)
    marker(3)
    marker(3)
    assert mcalls == [3, 3]


def test_exceptions_are_never_cached(clock: ManualClock) -> None:
    n = [0]

    @cached(10, clock=clock)
    def boom(x: int) -> int:
        n[0] += 1
        if n[0] < 3:
            raise KeyError(x)
        return x

    for _ in range(2):
        with pytest.raises(KeyError):
            boom(1)
    assert boom(1) == 1
    assert boom(1) == 1
    assert n[0] == 3


def test_ttl_jitter_spreads_expiries(clock: ManualClock) -> None:
    spec = CacheAside(100, ttl_jitter=0.5, beta=0)
    pipe = Pipeline(spec, clock=clock, random=random.Random(5))
    for i in range(50):
        pipe.call(lambda i: i, i)
    expiries = [e.fresh_until for e in spec.local._map.values()]
    assert all(50.0 <= x <= 100.0 for x in expiries)
    assert max(expiries) - min(expiries) > 20.0


def test_stale_if_error_serves_stale_then_gives_up(
    clock: ManualClock, events: RecordingListener
) -> None:
    fail = [False]

    @cached(10, stale_if_error=5, beta=0, clock=clock, listeners=[events])
    def load(x: int) -> int:
        if fail[0]:
            raise ConnectionError("db down")
        return x + clock.now()

    assert load(1) == 1
    fail[0] = True
    clock.advance(12)
    assert load(1) == 1  # stale, served because the loader failed
    assert events.of_type(CacheStaleServed)[-1].reason == "error"
    clock.advance(3.5)  # 15.5 > 10 + 5
    with pytest.raises(ConnectionError):
        load(1)
    fail[0] = False
    assert load(1) == 1 + 15.5


def test_xfetch_refreshes_before_expiry(clock: ManualClock, events: RecordingListener) -> None:
    spec = CacheAside(10, beta=1.0)
    pipe = Pipeline(spec, clock=clock, random=random.Random(11), listeners=[events])

    def slow(x: int) -> float:
        clock.advance(1.0)  # the load takes 1 s: delta = 1
        return clock.now()

    first = pipe.call(slow, 1)
    assert first == 1.0  # fresh until 11.0
    clock.set(10.9)  # 0.1 s before expiry: refresh probability exp(-0.1) ~ 0.9
    values = {pipe.call(slow, 1) for _ in range(5)}
    refreshed = events.of_type(CacheRefreshed)
    assert any(e.early for e in refreshed)
    assert all(v > first for v in values if v != first)
    assert clock.now() < 11.0 + 5  # never hit a hard miss
    assert not [e for e in events.of_type(CacheMiss) if e.time >= 10.9]


# -- single flight ------------------------------------------------------------------------------


def test_single_flight_threads_one_load_everyone_gets_it() -> None:
    gate = threading.Event()
    loads = [0]

    @cached(60)
    def load(x: int) -> list[int]:
        loads[0] += 1
        gate.wait(5)
        return [x]

    results: list[Any] = []

    def worker() -> None:
        results.append(load(1))

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    while len(load.cache._flights) == 0:
        pass
    gate.set()
    for t in threads:
        t.join(5)
    assert loads[0] == 1
    assert len(results) == 32
    assert all(r is results[0] for r in results)


def test_single_flight_threads_share_the_exception() -> None:
    gate = threading.Event()
    loads = [0]

    @cached(60)
    def load(x: int) -> int:
        loads[0] += 1
        gate.wait(5)
        raise TimeoutError("slow db")

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            load(1)
        except TimeoutError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    while len(load.cache._flights) == 0:
        pass
    # let the waiters join the flight before releasing the loader
    for _ in range(200):
        if sum(t.is_alive() for t in threads) == 16:
            break
    gate.set()
    for t in threads:
        t.join(5)
    assert len(errors) == 16
    assert loads[0] <= 16
    assert loads[0] < 16 or len({id(e) for e in errors}) == 16


@pytest.mark.asyncio
async def test_single_flight_asyncio_one_load() -> None:
    loads = [0]

    @cached(60)
    async def load(x: int) -> int:
        loads[0] += 1
        await asyncio.sleep(0.01)
        return x * 3

    results = await asyncio.gather(*(load(2) for _ in range(200)))
    assert results == [6] * 200
    assert loads[0] == 1


@pytest.mark.asyncio
async def test_single_flight_asyncio_exception_reaches_every_waiter() -> None:
    loads = [0]

    @cached(60)
    async def load(x: int) -> int:
        loads[0] += 1
        await asyncio.sleep(0.01)
        raise LookupError(x)

    results = await asyncio.gather(*(load(2) for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert loads[0] == 1
    with pytest.raises(LookupError):  # not cached: a new load
        await load(2)
    assert loads[0] == 2


@pytest.mark.asyncio
async def test_cancelled_loader_hands_over_to_a_waiter() -> None:
    started = asyncio.Event()
    loads = [0]

    @cached(60)
    async def load(x: int) -> int:
        loads[0] += 1
        if loads[0] == 1:
            started.set()
            await asyncio.sleep(10)
        return x

    first = asyncio.ensure_future(load(1))
    await started.wait()
    second = asyncio.ensure_future(load(1))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 1
    with pytest.raises(asyncio.CancelledError):
        await first
    assert loads[0] == 2


def test_single_flight_trio() -> None:
    trio = pytest.importorskip("trio")
    loads = [0]

    @cached(60)
    async def load(x: int) -> int:
        loads[0] += 1
        await trio.sleep(0.01)
        return x + 1

    results: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(50):

                async def one() -> None:
                    results.append(await load(1))

                nursery.start_soon(one)

    trio.run(main)
    assert results == [2] * 50
    assert loads[0] == 1


def test_stale_while_revalidate_one_refreshes_others_get_stale(
    events: RecordingListener,
) -> None:
    clock = ManualClock()
    gate = threading.Event()
    entered = threading.Event()
    version = [0]

    @cached(10, stale_while_revalidate=30, beta=0, clock=clock, listeners=[events])
    def load(x: int) -> int:
        version[0] += 1
        if version[0] == 2:
            entered.set()
            gate.wait(5)
        return version[0]

    assert load(1) == 1
    clock.advance(15)  # stale, inside the revalidate window
    out: list[int] = []
    refresher = threading.Thread(target=lambda: out.append(load(1)))
    refresher.start()
    entered.wait(5)
    assert load(1) == 1  # served stale while the refresh runs
    assert events.of_type(CacheStaleServed)[-1].reason == "revalidating"
    gate.set()
    refresher.join(5)
    assert out == [2]
    assert load(1) == 2
    assert version[0] == 2


# -- pipeline, invalidation, LRU ----------------------------------------------------------------


def test_in_a_pipeline_keys_by_function(clock: ManualClock) -> None:
    spec = CacheAside(10, beta=0)
    pipe = Pipeline(spec, clock=clock)

    def a(x: int) -> str:
        return f"a{x}"

    def b(x: int) -> str:
        return f"b{x}"

    assert pipe.call(a, 1) == "a1"
    assert pipe.call(b, 1) == "b1"
    assert spec.key_for(a, 1) in spec.local
    assert spec.key_for(b, 1) in spec.local


@pytest.mark.asyncio
async def test_pipeline_async_path(clock: ManualClock) -> None:
    spec = CacheAside(10, key="k:{x}", beta=0)
    pipe = Pipeline(spec, clock=clock)
    n = [0]

    async def f(x: int) -> int:
        n[0] += 1
        return x

    assert await pipe.acall(f, 4) == 4
    assert await pipe.acall(f, 4) == 4
    assert n[0] == 1
    await spec.ainvalidate("k:4")
    assert await pipe.acall(f, 4) == 4
    assert n[0] == 2


def test_invalidate_key_and_prefix(clock: ManualClock) -> None:
    n = [0]

    @cached(60, key="user:{uid}:{part}", clock=clock)
    def load(uid: int, part: str) -> int:
        n[0] += 1
        return uid

    load(1, "a")
    load(1, "b")
    load(2, "a")
    load.invalidate(1, "a")
    load(1, "a")
    assert n[0] == 4
    load.cache.invalidate_prefix("user:1:")
    load(1, "a")
    load(1, "b")
    load(2, "a")
    assert n[0] == 6


def test_local_tier_is_bounded(clock: ManualClock) -> None:
    load, _ = make(clock, max_entries=3)
    for i in range(10):
        load(i)
    assert len(load.cache.local) == 3
    assert load.cache.local.evictions == 7


# -- shared store (in-memory stand-in for Redis) ------------------------------------------------


def test_two_processes_share_values_and_invalidations(clock: ManualClock) -> None:
    store = MemoryCacheStore(clock)
    n = [0]

    def loader(x: int) -> dict[str, int]:
        n[0] += 1
        return {"x": x}

    a = CacheAside(60, key="item:{x}", store=store, beta=0)
    b = CacheAside(60, key="item:{x}", store=store, beta=0)
    ev = RecordingListener()
    pa = Pipeline(a, clock=clock)
    pb = Pipeline(b, clock=clock, listeners=[ev])
    assert pa.call(loader, 1) == {"x": 1}
    assert pb.call(loader, 1) == {"x": 1}
    assert n[0] == 1
    assert ev.of_type(CacheHit)[0].tier == "remote"
    a.invalidate("item:1")  # reaches b's local tier through the subscription
    assert "item:1" not in b.local
    pb.call(loader, 1)
    assert n[0] == 2
    a.invalidate_prefix("item:")
    assert len(b.local) == 0
    a.close()
    b.close()


def test_local_copy_is_rechecked_after_local_ttl(clock: ManualClock) -> None:
    store = MemoryCacheStore(clock)
    spec = CacheAside(60, key="k{x}", store=store, local_ttl=2, beta=0)
    pipe = Pipeline(spec, clock=clock)
    pipe.call(lambda x: x, 1)
    gets = store.gets
    pipe.call(lambda x: x, 1)
    assert store.gets == gets  # served locally
    clock.advance(2)
    pipe.call(lambda x: x, 1)
    assert store.gets == gets + 1


def test_undecodable_store_value_is_a_miss(clock: ManualClock) -> None:
    store = MemoryCacheStore(clock)
    store.cache_set("cache", "k1", b"\xff not json", 60, 0, 0.0, 0)
    spec = CacheAside(60, key="k{x}", store=store)
    assert Pipeline(spec, clock=clock).call(lambda x: "fresh", 1) == "fresh"


def test_remote_lock_waiter_gets_the_winners_value(clock: ManualClock) -> None:
    store = MemoryCacheStore(clock)
    spec = CacheAside(60, key="k{x}", store=store, lock_lease=5, poll_interval=0.5)
    ok, token, _ = store.cache_lock("cache", "k1", 5)  # another process is loading
    assert ok

    def other_process_writes() -> None:
        store.cache_set("cache", "k1", b'"theirs"', 60, 0, 0.1, token)

    clock.call_at(1.2, other_process_writes)
    n = [0]

    def mine(x: int) -> str:
        n[0] += 1
        return "mine"

    assert Pipeline(spec, clock=clock).call(mine, 1) == "theirs"
    assert n[0] == 0
    assert 1.2 <= clock.now() <= 1.5 + 1e-9


def test_remote_lock_waiter_loads_after_the_lease(clock: ManualClock) -> None:
    store = MemoryCacheStore(clock)
    spec = CacheAside(60, key="k{x}", store=store, lock_lease=5, poll_interval=0.5)
    ok, old_token, _ = store.cache_lock("cache", "k1", 5)  # a loader that will die
    assert ok
    assert Pipeline(spec, clock=clock).call(lambda x: "mine", 1) == "mine"
    assert clock.now() == pytest.approx(5.0)
    # the dead loader wakes up and tries to write its old value: fenced out
    assert store.cache_set("cache", "k1", b'"old"', 60, 0, 0.1, old_token) is False
    assert store.cache_get("cache", "k1").payload == b'"mine"'  # type: ignore[union-attr]


class FlakyStore(MemoryCacheStore):
    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.broken = False

    def cache_get(self, ns: str, key: str) -> Any:
        if self.broken:
            raise ConnectionError("redis down")
        return super().cache_get(ns, key)

    def cache_lock(self, ns: str, key: str, lease: float) -> Any:
        if self.broken:
            raise ConnectionError("redis down")
        return super().cache_lock(ns, key, lease)

    def cache_set(self, *a: Any) -> bool:
        if self.broken:
            raise ConnectionError("redis down")
        return super().cache_set(*a)


def test_fail_open_keeps_answering_and_recovers(
    clock: ManualClock, events: RecordingListener, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(clock)
    spec = CacheAside(60, key="k{x}", store=store, store_retry=1, local_ttl=0.5)
    pipe = Pipeline(spec, clock=clock, listeners=[events])
    store.broken = True
    answers = []
    for i in range(5):
        answers.append(pipe.call(lambda x: x * 2, i))
        clock.advance(0.3)
    assert answers == [0, 2, 4, 6, 8]
    failed = events.of_type(StoreFailed)
    assert failed
    assert failed[0].fail_open
    assert len([r for r in caplog.records if "failed during" in r.message]) == 1
    store.broken = False
    clock.advance(1.0)
    pipe.call(lambda x: x * 2, 99)
    assert events.of_type(StoreRecovered)
    assert store.cache_get("cache", "k99") is not None


def test_fail_closed_raises_store_error(clock: ManualClock) -> None:
    store = FlakyStore(clock)
    store.broken = True
    spec = CacheAside(60, key="k{x}", store=store, fail_open=False)
    pipe = Pipeline(spec, clock=clock)
    with pytest.raises(StoreError, match="fail-closed"):
        pipe.call(lambda x: x, 1)
    with pytest.raises(StoreError):  # still down: fails fast without trying
        pipe.call(lambda x: x, 1)


def test_unserialisable_value_stays_local(clock: ManualClock) -> None:
    store = MemoryCacheStore(clock)
    spec = CacheAside(60, key="k{x}", store=store)
    pipe = Pipeline(spec, clock=clock)
    value = pipe.call(lambda x: {1, 2}, 1)  # a set is not JSON
    assert value == {1, 2}
    assert store.cache_get("cache", "k1") is None
    assert "k1" in spec.local


@pytest.mark.parametrize("serializer", ["json", "orjson", "msgspec", "pickle"])
def test_serializers_round_trip(clock: ManualClock, serializer: str) -> None:
    pytest.importorskip(serializer if serializer in ("orjson", "msgspec") else "json")
    store = MemoryCacheStore(clock)
    a = CacheAside(60, key="k{x}", store=store, serializer=serializer)
    b = CacheAside(60, key="k{x}", store=store, serializer=serializer)
    Pipeline(a, clock=clock).call(lambda x: {"v": [x, "é"]}, 1)
    assert Pipeline(b, clock=clock).call(lambda x: None, 1) == {"v": [1, "é"]}


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"ttl": -1}, "ttl"),
        ({"ttl": math.nan}, "ttl"),
        ({"ttl": 1, "ttl_jitter": 1.5}, "ttl_jitter"),
        ({"ttl": 1, "negative_ttl": -2}, "negative_ttl"),
        ({"ttl": 1, "beta": -1}, "beta"),
        ({"ttl": 1, "max_entries": 0}, "max_entries"),
        ({"ttl": 1, "name": "has space"}, "name"),
        ({"ttl": 1, "name": "a{b}"}, "name"),
        ({"ttl": 1, "serializer": "yaml"}, "serializer"),
        ({"ttl": 1, "serializer": object()}, "serializer"),
        ({"ttl": 1, "store": object()}, "store"),
        ({"ttl": 1, "key": 5}, "key"),
        ({"ttl": 1, "lock_lease": 0}, "lock_lease"),
        ({"ttl": 1, "local_ttl": 0}, "local_ttl"),
        ({"ttl": 1, "stale_if_error": -1}, "stale_if_error"),
    ],
)
def test_invalid_settings(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        CacheAside(**kwargs)
    assert info.value.parameter == parameter


def test_cached_rejects_generators() -> None:
    with pytest.raises(ConfigurationError):

        @cached(1)
        def gen() -> Any:
            yield 1


def test_bare_decorator() -> None:
    n = [0]

    @cached
    def f(x: int) -> int:
        n[0] += 1
        return x

    f(1)
    f(1)
    assert n[0] == 1
    assert f.cache.ttl == 60.0


@given(
    st.lists(st.integers(), max_size=4),
    st.dictionaries(st.sampled_from(["a", "b", "c", "z"]), st.integers(), max_size=4),
)
def test_property_fast_binding_matches_inspect(args: list[int], kwargs: dict[str, int]) -> None:
    import inspect

    def f(a: int, b: int = 1, *, c: int = 2) -> int:
        return a

    k = KeyBuilder(f)
    try:
        bound = inspect.signature(f).bind(*args, **kwargs)
    except TypeError:
        with pytest.raises(TypeError):
            k._bound(tuple(args), kwargs)
        return
    bound.apply_defaults()
    assert k._bound(tuple(args), kwargs) == dict(bound.arguments)
    assert list(k._bound(tuple(args), kwargs)) == list(bound.arguments)


def test_only_the_in_process_leader_talks_to_the_store() -> None:
    store = MemoryCacheStore()
    gate = threading.Event()
    loads = [0]

    @cached(60, key="k{x}", store=store)
    def load(x: int) -> int:
        loads[0] += 1
        gate.wait(5)
        return x

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(load(1))) for _ in range(40)]
    for t in threads:
        t.start()
    while not load.cache._flights:
        pass
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [1] * 40
    assert loads[0] == 1
    assert store.gets <= 2  # not one per caller
    assert store.sets == 1
    load.cache.close()


def test_stale_value_served_while_another_process_refreshes(
    clock: ManualClock, events: RecordingListener
) -> None:
    store = MemoryCacheStore(clock)
    spec = CacheAside(10, key="k{x}", store=store, stale_while_revalidate=30, beta=0)
    pipe = Pipeline(spec, clock=clock, listeners=[events])
    assert pipe.call(lambda x: "v1", 1) == "v1"
    clock.advance(12)  # stale, inside the revalidate window
    assert store.cache_lock("cache", "k1", 5)[0]  # another process is refreshing it
    n = [0]

    def load(x: int) -> str:
        n[0] += 1
        return "v2"

    assert pipe.call(load, 1) == "v1"  # no wait, no load: the stale value
    assert n[0] == 0
    assert events.of_type(CacheStaleServed)[-1].reason == "revalidating"


def test_cached_takes_ttl_by_keyword_too(clock: ManualClock) -> None:
    calls = [0]

    @cached(ttl=30, clock=clock)
    def load(n: int) -> int:
        calls[0] += 1
        return n

    assert load.cache.ttl == 30.0  # type: ignore[attr-defined]
    assert load(1) == load(1) == 1 and calls[0] == 1
    clock.advance(31)
    assert load(1) == 1 and calls[0] == 2
    with pytest.raises(ConfigurationError, match="ttl"):
        cached(30, ttl=20)
    assert cached()(lambda: 1).cache.ttl == 60.0  # type: ignore[attr-defined]


def test_async_single_flight_with_an_event_loop_per_thread() -> None:
    """Concurrent misses from two event loops (two threads) never wait on each other's
    loop (that hung): each loop's callers share one load, so at most one per loop."""
    loads: list[int] = []
    started = threading.Barrier(2)

    @cached(60)
    async def load(n: int) -> int:
        loads.append(threading.get_ident())
        await asyncio.sleep(0.05)
        return n * 2

    async def many() -> list[int]:
        started.wait(timeout=10)
        return list(await asyncio.gather(*(load(21) for _ in range(20))))

    results: list[Any] = []

    def worker() -> None:
        results.append(asyncio.run(many()))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads), "a loop waited on the other's"
    assert results == [[42] * 20, [42] * 20]
    assert 1 <= len(loads) <= 2  # one load per loop at most (1 if the second hit the cache)
