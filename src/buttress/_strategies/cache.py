"""`CacheAside` and `@cached`: check the cache, load on a miss, store with a TTL.

Flow design. The hot path (a fresh local hit) is: build the key, one dict lookup, one
clock read, one comparison against `Entry.early_at`, ``move_to_end`` for the LRU. Every
other case goes to the slow path, written once as a sequence of small decisions
(`buttress._state.cache.decide`):

* FRESH: serve it. EARLY (XFetch fired): the caller refreshes inline unless someone
  already is, then everyone else keeps getting the (still fresh) value.
* STALE inside ``stale_while_revalidate``: one caller refreshes inline, the others are
  served the stale value (`CacheStaleServed`, reason ``"revalidating"``).
* MISS: single-flight per key in this process: the first caller loads, the others wait
  for its result or its exception. With a shared store, the loader first takes the
  store's lock (lease + fencing token): a process that does not get it polls the store
  for the winner's value until the lease runs out, then loads by itself. A loader whose
  lease ran out cannot overwrite a newer value: the store refuses writes with a smaller
  token.
* A failed load with a value inside ``stale_if_error`` serves that value
  (`CacheStaleServed`, reason ``"error"``). Exceptions are never cached.

No background refresh task or thread is spawned: refreshes run in the caller that
triggers them, so cancellation, deadlines and context propagate as for any call.

Two tiers: the local LRU (``max_entries``, values kept as Python objects) in front of an
optional shared `CacheStore` (values serialised, JSON by default). Invalidation reaches
other processes by the store's pub/sub: chosen over key versioning because versioning
needs a round trip to the store on every local hit (to read the version), which defeats
the local tier. Pub/sub is at-most-once, so a local copy also lives at most
``local_ttl`` seconds before it is re-read from the store, and a subscriber that lost its
connection drops the whole local tier when it reconnects.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import random as _random
import re
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast, overload

from .._core.clock import Clock
from .._core.env import Env, Listener
from .._core.invoke import AwaitableGuard, ainvoke, invoke
from .._core.store_guard import StoreGuard
from .._core.validate import check_count, check_duration, check_optional_duration, check_ratio
from .._exceptions import ConfigurationError
from .._state.cache import (
    FRESH,
    MISS,
    STALE,
    Entry,
    KeyBuilder,
    LocalCache,
    decide,
    jittered_ttl,
)
from ..events import CacheHit, CacheMiss, CacheRefreshed, CacheStaleServed
from ..stores.serializers import resolve_serializer
from ..typing import AsyncStep, SyncStep

__all__ = ["CacheAside", "cached"]

_log = logging.getLogger("buttress.cache")
_FAILED: Any = object()
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
F = TypeVar("F", bound=Callable[..., Any])

# flight states
_RUNNING = 0
_DONE = 1
_ERROR = 2
_ABANDONED = 3


def _is_none(value: Any) -> bool:
    return value is None


class _Flight:
    """One in-progress load of one key (sync: a `threading.Event`; async: a runtime event)."""

    __slots__ = ("error", "event", "state", "value")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.state = _RUNNING
        self.value: Any = None
        self.error: BaseException | None = None

    def finish(self, state: int, value: Any = None, error: BaseException | None = None) -> None:
        if self.state == _RUNNING:
            self.state = state
            self.value = value
            self.error = error
            self.event.set()


class CacheAside:
    """Cache-aside: serve a cached value, load on a miss, store it with a TTL.

    Put it in a `Pipeline` (usually outermost, so a hit skips every other strategy) or use
    the `cached` decorator.

    Args:
        ttl: Seconds a value stays fresh, >= 0 (float or timedelta). ``0`` means *do not
            cache*: every call runs the loader (the strategy is a pass-through).
        key: How a call becomes a key: ``None`` (default: ``module.qualname(args)`` with
            arguments normalised through the signature, so ``f(1, b=2)`` and ``f(1, 2)``
            share a key), a `str.format` template over parameter names
            (``"user:{user_id}"``), or a callable taking the call's arguments and returning
            a str. Methods leave ``self``/``cls`` out of the key unless ``per_instance``.
        per_instance: Key methods by instance identity (``id()``, or the instance's
            ``__cache_key__``), default ``False``.
        ttl_jitter: Ratio 0..1: each stored TTL is shortened by a uniform random fraction
            up to this much, so keys loaded together do not expire together (default 0).
        negative_ttl: Seconds a "not found" result (see ``is_negative``) stays cached;
            ``None`` (default) uses ``ttl``; ``0`` never caches it.
        is_negative: Predicate over a result marking "not found" (default: ``is None``).
        stale_while_revalidate: Seconds after expiry during which the stale value is served
            while one caller refreshes it, >= 0 (default 0: off).
        stale_if_error: Seconds after expiry during which the stale value is served when
            the loader raises, >= 0 (default 0: off).
        beta: XFetch eagerness, >= 0 (default 1.0, the paper's optimum; 0 disables early
            refresh). Early refresh probability is ``exp(-(expiry - now) / (beta * delta))``
            with ``delta`` the measured load time (Vattani et al., VLDB 2015).
        max_entries: Bound of the local LRU tier, an int >= 1 (default 10,000).
        store: A shared `buttress.stores.base.CacheStore` (e.g.
            `buttress.stores.RedisStore`) behind the local tier, or ``None`` (default:
            local only).
        serializer: For the store: ``"json"`` (default), ``"orjson"``, ``"msgspec"``,
            ``"pickle"`` (unsafe if others can write to the store: unpickling runs code) or
            an object with ``dumps``/``loads``. Values that fail to decode are misses.
        local_ttl: With a store, the longest seconds a local copy is served before it is
            re-read from the store, > 0 (default 5.0); bounds staleness if an invalidation
            message is lost.
        lock_lease: With a store, the loader lock's lease in seconds, > 0 (default 10.0).
            Waiting processes poll for the winner's value and load by themselves once the
            lease has run out; never block forever.
        poll_interval: Seconds between polls while another process loads, > 0 (default 0.05).
        fail_open: On store errors use the local tier only (default ``True``); ``False``
            raises `StoreError`.
        store_retry: Seconds a failed store is skipped before being tried again, > 0
            (default 1.0).
        name: Strategy name and key namespace in the store (``buttress:{name}:...``);
            letters, digits, ``_ . -`` (default ``"cache"``).

    Events: `CacheHit`, `CacheMiss`, `CacheStaleServed`, `CacheRefreshed`, `StoreFailed`,
    `StoreRecovered`.

    Raises:
        ConfigurationError: An invalid setting (negative TTL, jitter outside 0..1, a bad
            name, serializer or store).
    """

    def __init__(
        self,
        ttl: float | Any,
        *,
        key: str | Callable[..., str] | None = None,
        per_instance: bool = False,
        ttl_jitter: float = 0.0,
        negative_ttl: float | Any | None = None,
        is_negative: Callable[[Any], bool] = _is_none,
        stale_while_revalidate: float | Any = 0.0,
        stale_if_error: float | Any = 0.0,
        beta: float = 1.0,
        max_entries: int = 10_000,
        store: Any = None,
        serializer: Any = None,
        local_ttl: float | Any = 5.0,
        lock_lease: float | Any = 10.0,
        poll_interval: float | Any = 0.05,
        fail_open: bool = True,
        store_retry: float | Any = 1.0,
        name: str = "cache",
    ) -> None:
        owner = "CacheAside"
        self.ttl = check_duration(owner, "ttl", ttl)
        if not (key is None or isinstance(key, str) or callable(key)):
            raise ConfigurationError.invalid(
                owner, "key", key, "None, a format template str or a callable returning str"
            )
        if isinstance(key, str) and not key:
            raise ConfigurationError.invalid(owner, "key", key, "a non-empty template")
        self.key = key
        self.per_instance = bool(per_instance)
        self.ttl_jitter = check_ratio(owner, "ttl_jitter", ttl_jitter)
        self.negative_ttl = check_optional_duration(owner, "negative_ttl", negative_ttl)
        if not callable(is_negative):
            raise ConfigurationError.invalid(owner, "is_negative", is_negative, "a predicate")
        self.is_negative = is_negative
        self.stale_while_revalidate = check_duration(
            owner, "stale_while_revalidate", stale_while_revalidate
        )
        self.stale_if_error = check_duration(owner, "stale_if_error", stale_if_error)
        if (
            isinstance(beta, bool)
            or not isinstance(beta, (int, float))
            or not math.isfinite(beta)
            or beta < 0
        ):
            raise ConfigurationError.invalid(owner, "beta", beta, "a finite number >= 0")
        self.beta = float(beta)
        self.max_entries = check_count(owner, "max_entries", max_entries)
        if store is not None and not all(
            callable(getattr(store, m, None))
            for m in ("cache_get", "cache_set", "cache_lock", "acache_get", "acache_set")
        ):
            raise ConfigurationError.invalid(
                owner, "store", store, "None or a CacheStore (e.g. buttress.stores.RedisStore)"
            )
        self.store = store
        self.serializer = resolve_serializer(owner, serializer)
        self.local_ttl = check_duration(owner, "local_ttl", local_ttl, strictly_positive=True)
        self.lock_lease = check_duration(owner, "lock_lease", lock_lease, strictly_positive=True)
        self.poll_interval = check_duration(
            owner, "poll_interval", poll_interval, strictly_positive=True
        )
        if not isinstance(fail_open, bool):
            raise ConfigurationError.invalid(owner, "fail_open", fail_open, "a bool")
        self.fail_open = fail_open
        self.store_retry = check_duration(owner, "store_retry", store_retry, strictly_positive=True)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError.invalid(
                owner, "name", name, "1-100 letters, digits, '_', '.', '-'"
            )
        self.name = name
        self.local = LocalCache(self.max_entries)
        self.guard = (
            StoreGuard(store, name, fail_open=self.fail_open, retry_interval=self.store_retry)
            if store is not None
            else None
        )
        self._keyers: dict[Any, KeyBuilder] = {}
        self._flights: dict[str, _Flight] = {}
        # async flights per thread: a waiter can only wait on an event of its own event
        # loop, and a thread runs one loop at a time (asyncio, trio and the simulator alike)
        self._aflights: dict[int, dict[str, _Flight]] = {}
        self._mutex = threading.Lock()
        self._subscription: Any = None
        self._warned_encode = False
        self.loads = 0
        """How many times a loader ran (for tests and benchmarks)."""

    def __repr__(self) -> str:
        return (
            f"CacheAside(ttl={self.ttl}, key={self.key!r}, store={self.store!r}, "
            f"name={self.name!r})"
        )

    # -- keys -----------------------------------------------------------------------------------

    def keyer(self, fn: Callable[..., Any]) -> KeyBuilder:
        """The `KeyBuilder` used for calls of ``fn`` (built once per function).

        Raises:
            ConfigurationError: The key template names a parameter ``fn`` lacks.
        """
        keyer = self._keyers.get(fn)
        if keyer is None:
            if fn.__class__ is AwaitableGuard:
                # Pipeline.acall's per-call guard around a sync callable: key by the
                # function itself (same keys as the decorator, and one builder per function)
                return self.keyer(fn.__wrapped__)
            try:
                keyer = KeyBuilder(fn, self.key, per_instance=self.per_instance)
            except ValueError as exc:
                raise ConfigurationError.invalid("CacheAside", "key", self.key, str(exc)) from None
            if len(self._keyers) > 1024:
                self._keyers.clear()
            self._keyers[fn] = keyer
        return keyer

    def key_for(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> str:
        """The cache key of the call ``fn(*args, **kwargs)``."""
        return self.keyer(fn)(args, kwargs)

    # -- invalidation ---------------------------------------------------------------------------

    def _on_message(self, kind: str, key: str) -> None:
        if kind == "key":
            self.local.pop(key)
        elif kind == "prefix":
            self.local.pop_prefix(key)
        else:
            self.local.clear()

    def _subscribe(self) -> None:
        if self.store is None or self._subscription is not None:
            return
        subscribe = getattr(self.store, "cache_subscribe", None)
        if subscribe is None:
            return
        with self._mutex:
            if self._subscription is None:
                self._subscription = subscribe(self.name, self._on_message)

    def close(self) -> None:
        """Stop listening for invalidations from other processes (idempotent)."""
        sub, self._subscription = self._subscription, None
        if sub is not None:
            sub.close()

    def invalidate(self, key: str) -> None:
        """Drop ``key`` here, from the store, and from other processes' local tiers.

        Raises:
            StoreError: The store failed and the cache is fail-closed.
        """
        self.local.pop(key)
        if self.store is not None:
            self._sync_remote(_ENV, "delete", self.store.cache_delete, self.name, key)

    def invalidate_prefix(self, prefix: str) -> None:
        """Drop every key starting with ``prefix`` (here, in the store, everywhere).

        Raises:
            StoreError: The store failed and the cache is fail-closed.
        """
        self.local.pop_prefix(prefix)
        if self.store is not None:
            self._sync_remote(
                _ENV, "delete_prefix", self.store.cache_delete_prefix, self.name, prefix
            )

    async def ainvalidate(self, key: str) -> None:
        """Async `invalidate`."""
        self.local.pop(key)
        if self.store is not None:
            await self._async_remote(_ENV, "delete", self.store.acache_delete, self.name, key)

    async def ainvalidate_prefix(self, prefix: str) -> None:
        """Async `invalidate_prefix`."""
        self.local.pop_prefix(prefix)
        if self.store is not None:
            await self._async_remote(
                _ENV, "delete_prefix", self.store.acache_delete_prefix, self.name, prefix
            )

    # -- shared pieces --------------------------------------------------------------------------

    def _sync_remote(self, env: Env, op: str, fn: Callable[..., Any], *args: Any) -> Any:
        guard = self.guard
        assert guard is not None
        now = env.clock.now()
        if not guard.usable(now):
            return _FAILED
        try:
            result = fn(*args)
        except Exception as exc:
            guard.failed(env, op, exc, env.clock.now())
            return _FAILED
        if guard.down:
            guard.succeeded(env, now)
        return result

    async def _async_remote(self, env: Env, op: str, fn: Callable[..., Any], *args: Any) -> Any:
        guard = self.guard
        assert guard is not None
        now = env.clock.now()
        if not guard.usable(now):
            return _FAILED
        try:
            result = await fn(*args)
        except Exception as exc:
            guard.failed(env, op, exc, env.clock.now())
            return _FAILED
        if guard.down:
            guard.succeeded(env, now)
        return result

    def _from_record(self, env: Env, key: str, record: Any, now: float) -> Entry | None:
        if record is None or record is _FAILED:
            return None
        try:
            value = self.serializer.loads(record.payload)
        except Exception:
            _log.debug("buttress cache %r: undecodable value for %r: a miss", self.name, key)
            return None
        fresh_until = now + record.fresh_for
        return Entry(
            value,
            fresh_until,
            fresh_until + self.stale_while_revalidate,
            fresh_until + self.stale_if_error,
            record.delta,
            self.beta,
            recheck_at=now + self.local_ttl,
            token=record.token,
        )

    def _ttl_of(self, value: Any, rng: _random.Random) -> float:
        ttl = self.ttl
        if self.negative_ttl is not None and self.is_negative(value):
            ttl = self.negative_ttl
        return jittered_ttl(ttl, self.ttl_jitter, rng)

    def _entry(self, value: Any, ttl: float, delta: float, now: float, token: int) -> Entry:
        fresh_until = now + ttl
        return Entry(
            value,
            fresh_until,
            fresh_until + self.stale_while_revalidate,
            fresh_until + self.stale_if_error,
            delta,
            self.beta,
            recheck_at=now + self.local_ttl if self.store is not None else math.inf,
            token=token,
        )

    def _payload(self, key: str, value: Any) -> bytes | None:
        try:
            return cast(bytes, self.serializer.dumps(value))
        except Exception as exc:
            if not self._warned_encode:
                self._warned_encode = True
                _log.warning(
                    "buttress cache %r: cannot serialise the value of %r (%s: %s); it is "
                    "cached locally only (choose another serializer=)",
                    self.name,
                    key,
                    type(exc).__name__,
                    exc,
                )
            return None

    def _join(self, table: dict[str, _Flight], key: str, make_event: Any) -> tuple[_Flight, bool]:
        with self._mutex:
            flight = table.get(key)
            if flight is not None:
                return flight, False
            flight = table[key] = _Flight(make_event())
            return flight, True

    def _async_table(self) -> dict[str, _Flight]:
        """This thread's table of async flights (see ``_aflights``)."""
        ident = threading.get_ident()
        table = self._aflights.get(ident)
        if table is None:
            with self._mutex:
                table = self._aflights.setdefault(ident, {})
        return table

    def _leave(self, table: dict[str, _Flight], key: str, flight: _Flight) -> None:
        with self._mutex:
            if table.get(key) is flight:
                del table[key]
        flight.finish(_ABANDONED)

    def _hit(self, env: Env, key: str, tier: str) -> None:
        env.emit(
            CacheHit(
                pipeline=env.name, strategy=self.name, time=env.clock.now(), key=key, tier=tier
            )
        )

    def _stale(self, env: Env, key: str, reason: str) -> None:
        env.emit(
            CacheStaleServed(
                pipeline=env.name, strategy=self.name, time=env.clock.now(), key=key, reason=reason
            )
        )

    def _refreshed(self, env: Env, key: str, early: bool, delta: float) -> None:
        env.emit(
            CacheRefreshed(
                pipeline=env.name,
                strategy=self.name,
                time=env.clock.now(),
                key=key,
                early=early,
                duration=delta,
            )
        )

    def _served(self, env: Env, key: str, decision: int, tier: str) -> None:
        """Events for a value served without loading (fresh/early: hit; stale: stale)."""
        if env.listeners:
            if decision == STALE:
                self._stale(env, key, "revalidating")
            else:
                self._hit(env, key, tier)

    def _merge_remote(
        self, env: Env, key: str, record: Any, entry: Entry | None, now: float
    ) -> Entry | None:
        """The entry to use after reading the store (the local one if the store failed)."""
        if record is _FAILED:
            return entry
        remote = self._from_record(env, key, record, now)
        if remote is not None:
            self.local.put(key, remote)
            return remote
        if entry is not None and now < entry.fresh_until:
            self.local.pop(key)  # gone from the store: invalidated elsewhere
            return None
        return entry

    def _after_fetch(
        self,
        env: Env,
        key: str,
        entry: Entry | None,
        now: float,
        flight: _Flight,
        table: dict[str, _Flight],
    ) -> tuple[bool, Any]:
        """Leader after reading the store: ``(True, value)`` served, ``(False, early)`` load."""
        decision = decide(entry, now, self.beta, env.random)
        if entry is not None and decision == FRESH:
            self._served(env, key, FRESH, "remote")
            flight.finish(_DONE, entry.value)
            self._leave(table, key, flight)
            return True, entry.value
        if (entry is None or decision == MISS) and env.listeners:
            env.emit(CacheMiss(pipeline=env.name, strategy=self.name, time=now, key=key))
        return False, entry is not None and decision != MISS

    def _fallback(self, entry: Entry | None, early: bool, now: float) -> Entry | None:
        """The value to serve when a load failed: a still-fresh one, or stale-if-error."""
        if entry is None:
            return None
        if early and now < entry.fresh_until:
            return entry
        if now < entry.sie_until:
            return entry
        return None

    # -- sync -----------------------------------------------------------------------------------

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        """The sync step (see the class docstring)."""
        return self._build_sync(next_step, env, None)

    def _build_sync(self, next_step: SyncStep, env: Env, fixed: KeyBuilder | None) -> SyncStep:
        if self.ttl == 0.0:
            return next_step
        self._subscribe()
        get = self.local._map.get
        touch = self.local._map.move_to_end
        now = env.clock.now
        keyer = self.keyer
        slow = functools.partial(self._sync_slow, next_step, env)
        hit = self._hit

        if fixed is not None:

            def cache_step_fixed(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                key = fixed(args, kwargs)
                entry = get(key)
                if entry is not None and now() < entry.early_at:
                    try:
                        touch(key)
                    except KeyError:
                        pass
                    if env.listeners:
                        hit(env, key, "local")
                    return entry.value
                return slow(fn, args, kwargs, key, entry)

            return cache_step_fixed

        def cache_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key = keyer(fn)(args, kwargs)
            entry = get(key)
            if entry is not None and now() < entry.early_at:
                try:
                    touch(key)
                except KeyError:
                    pass
                if env.listeners:
                    hit(env, key, "local")
                return entry.value
            return slow(fn, args, kwargs, key, entry)

        return cache_step

    def _sync_slow(
        self,
        next_step: SyncStep,
        env: Env,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        entry: Entry | None,
    ) -> Any:
        try:
            while True:
                now = env.clock.now()
                store = self.store
                if store is None or not (
                    entry is None or now >= entry.recheck_at or now >= entry.fresh_until
                ):
                    decision = decide(entry, now, self.beta, env.random)
                    if entry is not None and decision == FRESH:
                        if env.listeners:
                            self._hit(env, key, "local")
                        return entry.value
                    flight, lead = self._join(self._flights, key, threading.Event)
                    if entry is not None and decision != MISS:
                        if not lead:
                            self._served(env, key, decision, "local")
                            return entry.value
                        return self._sync_lead(
                            next_step, env, fn, args, kwargs, key, entry, flight, True
                        )
                    if env.listeners:
                        env.emit(
                            CacheMiss(pipeline=env.name, strategy=self.name, time=now, key=key)
                        )
                    if lead:
                        return self._sync_lead(
                            next_step, env, fn, args, kwargs, key, entry, flight, False
                        )
                else:
                    # The local copy must be (re)read from the store: only the in-process leader
                    # talks to the store; the others serve a usable local copy or wait.
                    flight, lead = self._join(self._flights, key, threading.Event)
                    if lead:
                        try:
                            record = self._sync_remote(env, "get", store.cache_get, self.name, key)
                        except BaseException:
                            self._leave(self._flights, key, flight)
                            raise
                        entry = self._merge_remote(env, key, record, entry, now)
                        served, result = self._after_fetch(
                            env, key, entry, now, flight, self._flights
                        )
                        if served:
                            return result
                        return self._sync_lead(
                            next_step, env, fn, args, kwargs, key, entry, flight, result
                        )
                    if entry is not None and now < entry.swr_until:
                        self._served(env, key, FRESH if now < entry.fresh_until else STALE, "local")
                        return entry.value
                    if env.listeners:
                        env.emit(
                            CacheMiss(pipeline=env.name, strategy=self.name, time=now, key=key)
                        )
                flight.event.wait()
                if flight.state == _DONE:
                    return flight.value
                if flight.state == _ERROR:
                    raise cast(BaseException, flight.error)
                # the loader was cancelled: start over (one waiter becomes the loader)
                entry = self.local.get(key)
        finally:
            # this frame is in the traceback of a failed load, whose exception the
            # flight keeps for the waiters: drop the frame's reference to the flight, or
            # frame -> flight -> exception -> traceback -> frame is a reference cycle
            flight = None  # type: ignore[assignment]

    def _sync_lead(
        self,
        next_step: SyncStep,
        env: Env,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        entry: Entry | None,
        flight: _Flight,
        early: bool,
    ) -> Any:
        try:
            store = self.store
            clock = env.clock
            token = 0
            locked = False
            try:
                if store is not None:
                    got = self._sync_remote(
                        env, "lock", store.cache_lock, self.name, key, self.lock_lease
                    )
                    if got is not _FAILED:
                        locked, token, wait = got
                        if not locked:
                            if early and entry is not None:
                                # another process refreshes: keep serving what we have
                                stale = clock.now() >= entry.fresh_until
                                self._served(env, key, STALE if stale else FRESH, "remote")
                                flight.finish(_DONE, entry.value)
                                return entry.value
                            found = self._sync_wait_remote(env, key, wait)
                            if found is not None:
                                flight.finish(_DONE, found.value)
                                return found.value
                started = clock.now()
                self.loads += 1
                try:
                    value = (
                        next_step(fn, args, kwargs)
                        if next_step is not invoke
                        else fn(*args, **kwargs)
                    )
                except Exception as exc:
                    backup = self._fallback(entry, early, clock.now())
                    if backup is None:
                        flight.finish(_ERROR, None, exc)
                        raise
                    if env.listeners and clock.now() >= backup.fresh_until:
                        self._stale(env, key, "error")
                    flight.finish(_DONE, backup.value)
                    return backup.value
                if value.__class__ is _CoroutineType or value.__class__ is _GeneratorType:
                    # call() with an async or generator function: never a value to store
                    # or to hand to waiters (Pipeline.call would refuse it afterwards)
                    error = _not_a_value(self.name, fn, value)
                    flight.finish(_ERROR, None, error)
                    raise error
                finished = clock.now()
                delta = finished - started
                ttl = self._ttl_of(value, env.random)
                if ttl > 0.0:
                    self.local.put(key, self._entry(value, ttl, delta, finished, token))
                    if store is not None:
                        payload = self._payload(key, value)
                        if payload is not None:
                            keep = max(self.stale_while_revalidate, self.stale_if_error)
                            self._sync_remote(
                                env,
                                "set",
                                store.cache_set,
                                self.name,
                                key,
                                payload,
                                ttl,
                                keep,
                                delta,
                                token,
                            )
                else:
                    self.local.pop(key)
                if env.listeners:
                    self._refreshed(env, key, early, delta)
                flight.finish(_DONE, value)
                return value
            finally:
                if locked:
                    assert store is not None
                    self._sync_remote(env, "unlock", store.cache_unlock, self.name, key, token)
                self._leave(self._flights, key, flight)
        finally:
            # this frame is in the traceback of a failed load, whose exception the
            # flight keeps for the waiters: drop the frame's reference to the flight, or
            # frame -> flight -> exception -> traceback -> frame is a reference cycle
            flight = None  # type: ignore[assignment]

    def _sync_wait_remote(self, env: Env, key: str, wait: float) -> Entry | None:
        """Poll the store while another process loads ``key``, at most ``wait`` seconds."""
        assert self.store is not None
        clock = env.clock
        rt = env.sync_runtime()
        deadline = clock.now() + min(wait, self.lock_lease)
        while True:
            now = clock.now()
            if now >= deadline:
                return None
            rt.sleep(min(self.poll_interval, deadline - now))
            record = self._sync_remote(env, "get", self.store.cache_get, self.name, key)
            if record is _FAILED:
                return None
            now = clock.now()
            entry = self._from_record(env, key, record, now)
            if entry is not None and now < entry.fresh_until:
                self.local.put(key, entry)
                return entry

    # -- async ----------------------------------------------------------------------------------

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        """The async step (see the class docstring)."""
        return self._build_async(next_step, env, None)

    def _build_async(self, next_step: AsyncStep, env: Env, fixed: KeyBuilder | None) -> AsyncStep:
        if self.ttl == 0.0:
            return next_step
        self._subscribe()
        get = self.local._map.get
        touch = self.local._map.move_to_end
        now = env.clock.now
        keyer = self.keyer
        slow = functools.partial(self._async_slow, next_step, env)
        hit = self._hit

        async def cache_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key = fixed(args, kwargs) if fixed is not None else keyer(fn)(args, kwargs)
            entry = get(key)
            if entry is not None and now() < entry.early_at:
                try:
                    touch(key)
                except KeyError:
                    pass
                if env.listeners:
                    hit(env, key, "local")
                return entry.value
            return await slow(fn, args, kwargs, key, entry)

        return cache_step

    async def _async_slow(
        self,
        next_step: AsyncStep,
        env: Env,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        entry: Entry | None,
    ) -> Any:
        try:
            rt = env.async_runtime()
            flights = self._async_table()  # this thread's: the loop does not change
            while True:
                now = env.clock.now()
                store = self.store
                if store is None or not (
                    entry is None or now >= entry.recheck_at or now >= entry.fresh_until
                ):
                    decision = decide(entry, now, self.beta, env.random)
                    if entry is not None and decision == FRESH:
                        if env.listeners:
                            self._hit(env, key, "local")
                        return entry.value
                    flight, lead = self._join(flights, key, rt.new_event)
                    if entry is not None and decision != MISS:
                        if not lead:
                            self._served(env, key, decision, "local")
                            return entry.value
                        return await self._async_lead(
                            next_step, env, fn, args, kwargs, key, entry, flight, True
                        )
                    if env.listeners:
                        env.emit(
                            CacheMiss(pipeline=env.name, strategy=self.name, time=now, key=key)
                        )
                    if lead:
                        return await self._async_lead(
                            next_step, env, fn, args, kwargs, key, entry, flight, False
                        )
                else:
                    flight, lead = self._join(flights, key, rt.new_event)
                    if lead:
                        try:
                            record = await self._async_remote(
                                env, "get", store.acache_get, self.name, key
                            )
                        except BaseException:
                            self._leave(flights, key, flight)
                            raise
                        entry = self._merge_remote(env, key, record, entry, now)
                        served, result = self._after_fetch(env, key, entry, now, flight, flights)
                        if served:
                            return result
                        return await self._async_lead(
                            next_step, env, fn, args, kwargs, key, entry, flight, result
                        )
                    if entry is not None and now < entry.swr_until:
                        self._served(env, key, FRESH if now < entry.fresh_until else STALE, "local")
                        return entry.value
                    if env.listeners:
                        env.emit(
                            CacheMiss(pipeline=env.name, strategy=self.name, time=now, key=key)
                        )
                await flight.event.wait()
                if flight.state == _DONE:
                    return flight.value
                if flight.state == _ERROR:
                    raise cast(BaseException, flight.error)
                entry = self.local.get(key)
        finally:
            # this frame is in the traceback of a failed load, whose exception the
            # flight keeps for the waiters: drop the frame's reference to the flight, or
            # frame -> flight -> exception -> traceback -> frame is a reference cycle
            flight = None  # type: ignore[assignment]

    async def _async_lead(
        self,
        next_step: AsyncStep,
        env: Env,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        entry: Entry | None,
        flight: _Flight,
        early: bool,
    ) -> Any:
        try:
            store = self.store
            clock = env.clock
            token = 0
            locked = False
            try:
                if store is not None:
                    got = await self._async_remote(
                        env, "lock", store.acache_lock, self.name, key, self.lock_lease
                    )
                    if got is not _FAILED:
                        locked, token, wait = got
                        if not locked:
                            if early and entry is not None:
                                stale = clock.now() >= entry.fresh_until
                                self._served(env, key, STALE if stale else FRESH, "remote")
                                flight.finish(_DONE, entry.value)
                                return entry.value
                            found = await self._async_wait_remote(env, key, wait)
                            if found is not None:
                                flight.finish(_DONE, found.value)
                                return found.value
                started = clock.now()
                self.loads += 1
                try:
                    if next_step is ainvoke:
                        value = await fn(*args, **kwargs)
                    else:
                        value = await next_step(fn, args, kwargs)
                except Exception as exc:
                    backup = self._fallback(entry, early, clock.now())
                    if backup is None:
                        flight.finish(_ERROR, None, exc)
                        raise
                    if env.listeners and clock.now() >= backup.fresh_until:
                        self._stale(env, key, "error")
                    flight.finish(_DONE, backup.value)
                    return backup.value
                finished = clock.now()
                delta = finished - started
                ttl = self._ttl_of(value, env.random)
                if ttl > 0.0:
                    self.local.put(key, self._entry(value, ttl, delta, finished, token))
                    if store is not None:
                        payload = self._payload(key, value)
                        if payload is not None:
                            keep = max(self.stale_while_revalidate, self.stale_if_error)
                            await self._async_remote(
                                env,
                                "set",
                                store.acache_set,
                                self.name,
                                key,
                                payload,
                                ttl,
                                keep,
                                delta,
                                token,
                            )
                else:
                    self.local.pop(key)
                if env.listeners:
                    self._refreshed(env, key, early, delta)
                flight.finish(_DONE, value)
                return value
            finally:
                if locked:
                    assert store is not None
                    await self._async_remote(
                        env, "unlock", store.acache_unlock, self.name, key, token
                    )
                self._leave(self._async_table(), key, flight)
        finally:
            # this frame is in the traceback of a failed load, whose exception the
            # flight keeps for the waiters: drop the frame's reference to the flight, or
            # frame -> flight -> exception -> traceback -> frame is a reference cycle
            flight = None  # type: ignore[assignment]

    async def _async_wait_remote(self, env: Env, key: str, wait: float) -> Entry | None:
        assert self.store is not None
        clock = env.clock
        rt = env.async_runtime()
        deadline = clock.now() + min(wait, self.lock_lease)
        while True:
            now = clock.now()
            if now >= deadline:
                return None
            await rt.sleep(min(self.poll_interval, deadline - now))
            record = await self._async_remote(env, "get", self.store.acache_get, self.name, key)
            if record is _FAILED:
                return None
            now = clock.now()
            entry = self._from_record(env, key, record, now)
            if entry is not None and now < entry.fresh_until:
                self.local.put(key, entry)
                return entry


_ENV = Env("cache-admin")
"""Environment for invalidations made outside any call (no listeners of its own)."""


# -- the decorator --------------------------------------------------------------------------------


_TTL_DEFAULT: Any = object()  # `cached` without a ttl: 60 s


@overload
def cached(fn: F, /) -> F: ...
@overload
def cached(
    ttl: float | Any = ...,
    /,
    *,
    clock: Clock | None = ...,
    random: _random.Random | None = ...,
    listeners: Iterable[Listener] = ...,
    **options: Any,
) -> Callable[[F], F]: ...
def cached(
    ttl: Any = _TTL_DEFAULT,
    /,
    *,
    clock: Clock | None = None,
    random: _random.Random | None = None,
    listeners: Iterable[Listener] = (),
    **options: Any,
) -> Any:
    """Decorate a function (sync or ``async``) with cache-aside.

    ``@cached`` (TTL 60 s), ``@cached(30)``, ``@cached(ttl=30)`` or
    ``@cached(30, key="user:{user_id}", store=redis_store)``; every keyword of `CacheAside`
    is accepted, plus:

    Args:
        ttl: Seconds a value stays fresh (see `CacheAside`); default 60.
        clock: Clock of the cache (default: the system monotonic clock).
        random: Random source for jitter and XFetch draws (seedable).
        listeners: Event listeners of this cache.

    The wrapper has ``.cache`` (the `CacheAside`), ``.invalidate(*args, **kwargs)``
    (drops the key of those arguments) and ``.key(*args, **kwargs)``.

    Raises:
        ConfigurationError: An invalid setting, or a generator function.
    """
    if callable(ttl) and not isinstance(ttl, (int, float)) and not options:
        return cached()(ttl)
    if "ttl" in options:  # ``@cached(ttl=30)``: the keyword form of the positional ``ttl``
        if ttl is not _TTL_DEFAULT:
            raise ConfigurationError.invalid(
                "cached", "ttl", options["ttl"], "ttl given once, by position or by keyword"
            )
        ttl = options.pop("ttl")
    elif ttl is _TTL_DEFAULT:
        ttl = 60.0
    options.setdefault("name", "cache")
    unknown = sorted(set(options) - set(_CACHE_OPTIONS))
    if unknown:
        raise ConfigurationError.invalid(
            "cached",
            unknown[0],
            options[unknown[0]],
            "a CacheAside option (" + ", ".join(_CACHE_OPTIONS) + ") or clock, random, listeners",
        )
    spec = CacheAside(ttl, **options)
    env = Env(spec.name, clock, random, listeners)

    def decorate(fn: Any) -> Any:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigurationError.invalid(
                "cached", "fn", fn, "a function or coroutine function (not a generator)"
            )
        keyer = spec.keyer(fn)
        wrapper: Any
        if inspect.iscoroutinefunction(fn):
            achain = spec._build_async(ainvoke, env, keyer)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await achain(fn, args, kwargs)

            wrapper = async_wrapper

            async def ainvalidate(*args: Any, **kwargs: Any) -> None:
                await spec.ainvalidate(keyer(args, kwargs))

            wrapper.ainvalidate = ainvalidate
        else:
            chain = spec._build_sync(invoke, env, keyer)

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                return chain(fn, args, kwargs)

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> None:
            spec.invalidate(keyer(args, kwargs))

        def key(*args: Any, **kwargs: Any) -> str:
            return keyer(args, kwargs)

        wrapper.cache = spec
        wrapper.invalidate = invalidate
        wrapper.key = key
        return wrapper

    return decorate


_CACHE_OPTIONS = tuple(
    name
    for name in inspect.signature(CacheAside.__init__).parameters
    if name not in ("self", "ttl")
)
_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType


def _not_a_value(name: str, fn: Any, value: Any) -> ConfigurationError:
    kind = "coroutine" if value.__class__ is _CoroutineType else "generator"
    value.close()
    return ConfigurationError(
        f"CacheAside {name!r}: the loader {fn!r} returned a {kind}, which is never cached: "
        + (
            "call async functions with `await pipeline.acall(...)`"
            if kind == "coroutine"
            else "return the collected items (e.g. a list) instead of a generator"
        ),
        parameter="fn",
        value=fn,
        expected="a function returning a value",
    )
