"""`RedisStore`: shared state on Redis (the ``redis`` extra: ``pip install 'buttress[redis]'``).

One store object serves sync calls (``redis.Redis``) and asyncio calls
(``redis.asyncio.Redis``, one client per event loop). Every operation is one Lua script
from `buttress.stores._redis_cmds` (one round trip, atomic, timed with the server's
``TIME``); this module only does I/O.

Failure behaviour: each command has a short socket timeout (``timeout``, default 0.25 s)
and redis-py's own retries are turned off, so a dead or paused server costs one timeout;
the strategy's `StoreGuard` then falls back to local state (or raises `StoreError` when
fail-closed) and skips the store until it is due for another try. Nothing connects at
construction: an unreachable server at start-up is reported by the first operation's
`StoreFailed` event and warning, and the strategy keeps working on local state.

Cross-process invalidation uses pub/sub; the subscriber is a daemon thread per
subscription (the one place buttress runs a thread outside `_runtime`: redis-py's pub/sub
needs a reader), which drops the whole local tier after a reconnection because messages
sent meanwhile are lost.
"""

from __future__ import annotations

import logging
import math
import threading
import urllib.parse
from collections.abc import Callable, Hashable
from typing import Any

from .._core.validate import check_duration
from .._exceptions import ConfigurationError
from . import _redis_cmds as cmd
from .base import CacheRecord

__all__ = ["RedisStore"]

_log = logging.getLogger("buttress.stores")
_SCHEMES = ("redis", "rediss", "unix")


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "buttress.stores.RedisStore needs redis-py: pip install 'buttress[redis]'"
        ) from exc
    return redis


def _validate_url(url: Any) -> str:
    expected = "a redis://, rediss:// or unix:// URL (e.g. redis://127.0.0.1:6379/0)"
    if not isinstance(url, str) or not url:
        raise ConfigurationError.invalid("RedisStore", "url", url, expected)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError.invalid("RedisStore", "url", url, expected)
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError.invalid("RedisStore", "url", url, expected)
        return url
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError.invalid("RedisStore", "url", url, expected) from None
    if not parts.hostname or (port is not None and not 0 < port < 65536):
        raise ConfigurationError.invalid("RedisStore", "url", url, expected)
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigurationError.invalid("RedisStore", "url", url, expected + " (db a number)")
    return url


def _describe(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or ''}"


class _Subscriber:
    """Reads one invalidation channel in a daemon thread; reconnects by itself."""

    def __init__(
        self, store: RedisStore, channel: str, callback: Callable[[str, str], None]
    ) -> None:
        self._store = store
        self._channel = channel
        self._callback = callback
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"buttress-invalidate-{channel}", daemon=True
        )
        self._thread.start()

    def _dispatch(self, data: Any) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        kind, _, key = text.partition(":")
        if kind == "k":
            self._callback("key", key)
        elif kind == "p":
            self._callback("prefix", key)

    def _run(self) -> None:
        pubsub: Any = None
        lost = False
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._store._sync().pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self._channel)
                    if lost:
                        self._callback("reset", "")
                        lost = False
                    self.ready.set()
                message = pubsub.get_message(timeout=0.1)
                if message and message.get("type") == "message":
                    self._dispatch(message.get("data"))
            except Exception as exc:
                lost = True
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # pragma: no cover - best effort
                        pass
                    pubsub = None
                _log.debug("buttress: invalidation subscriber lost %s: %s", self._channel, exc)
                self._stop.wait(0.2)
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # pragma: no cover - best effort
                pass

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(2.0)


class RedisStore:
    """Shared state on Redis: `CacheAside`, retry budgets and circuit breakers.

    Args:
        url: ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
            ``unix:///path/to/socket`` (default ``redis://127.0.0.1:6379/0``).
        prefix: First part of every key (default ``"buttress"``): letters, digits,
            ``_ . -``.
        timeout: Socket connect and read timeout of every command in seconds, > 0
            (default 0.25). Keep it short: the strategy falls back to local state when it
            expires.
        client: A ready ``redis.Redis`` to use for sync calls instead of building one
            from ``url`` (the store then does not close it).
        max_connections: Pool size of each client (default 64).
        fail_open: For circuit breakers using this store (they have no setting of their
            own): on Redis errors decide on local state (default ``True``) or raise
            `StoreError` (``False``). Caches and budgets have their own ``fail_open``.

    Raises:
        ConfigurationError: Invalid URL, prefix or timeout.
        ImportError: redis-py is not installed (with the install command).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "buttress",
        timeout: float = 0.25,
        client: Any = None,
        max_connections: int = 64,
        fail_open: bool = True,
    ) -> None:
        self.url = _validate_url(url)
        if (
            not isinstance(prefix, str)
            or not prefix
            or any(not (c.isalnum() or c in "_.-") for c in prefix)
        ):
            raise ConfigurationError.invalid(
                "RedisStore", "prefix", prefix, "a non-empty str of letters, digits, '_', '.', '-'"
            )
        self.prefix = prefix
        self.timeout = check_duration("RedisStore", "timeout", timeout, strictly_positive=True)
        self.max_connections = max_connections
        self.fail_open = bool(fail_open)
        self._redis = _import_redis()
        self.description = _describe(url)
        self.keys = cmd.Keys(prefix)
        self._client = client
        self._own_client = client is None
        self._aclients: dict[Any, Any] = {}
        self._scripts: dict[str, Any] = {}
        self._ascripts: dict[tuple[Any, str], Any] = {}
        self._mutex = threading.Lock()
        self._subscribers: list[_Subscriber] = []

    local = False
    """Circuits live on the server (the breaker asks it on every call)."""

    def __repr__(self) -> str:
        return f"RedisStore({self.description!r}, prefix={self.prefix!r})"

    # -- circuit breaker (CircuitStore) -----------------------------------------------------------

    def circuit(self, name: str, key: Hashable | None, policy: Any) -> Any:
        """A `RedisCircuit` for breaker ``name`` and partition ``key`` (see `CircuitStore`);
        count and time windows alike."""
        from .redis_circuit import RedisCircuit

        return RedisCircuit(self, name, key, policy)

    # -- clients -------------------------------------------------------------------------------

    def _pool_options(self) -> dict[str, Any]:
        return {
            "max_connections": self.max_connections,
            "timeout": self.timeout,  # wait at most this long for a free connection
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }

    def _sync(self) -> Any:
        client = self._client
        if client is None:
            with self._mutex:
                if self._client is None:
                    from redis.backoff import NoBackoff
                    from redis.retry import Retry

                    redis = self._redis
                    pool = redis.BlockingConnectionPool.from_url(
                        self.url, retry=Retry(NoBackoff(), 0), **self._pool_options()
                    )
                    self._client = redis.Redis.from_pool(pool)
                client = self._client
        return client

    def _async(self) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            aredis = self._redis.asyncio
            pool = aredis.BlockingConnectionPool.from_url(
                self.url, retry=Retry(NoBackoff(), 0), **self._pool_options()
            )
            client = aredis.Redis.from_pool(pool)
            self._aclients[loop] = client
        return client

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._sync().register_script(source)
        return script

    def _ascript(self, source: str) -> Any:
        client = self._async()
        script = self._ascripts.get((client, source))
        if script is None:
            script = self._ascripts[(client, source)] = client.register_script(source)
        return script

    def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script synchronously (one round trip; EVALSHA with a fallback)."""
        return self._script(source)(keys=keys, args=args)

    async def arun(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script on this event loop's asyncio client."""
        return await self._ascript(source)(keys=keys, args=args)

    def ping(self) -> bool:
        """``True`` when the server answers within ``timeout`` (never raises)."""
        try:
            return bool(self._sync().ping())
        except Exception:
            return False

    def close(self) -> None:
        """Stop subscribers and close the sync client (if the store built it)."""
        for sub in self._subscribers:
            sub.close()
        self._subscribers.clear()
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None and self._own_client:
            client.close()

    async def aclose(self) -> None:
        """Close the asyncio client of the running event loop (and forget it)."""
        import asyncio

        client = self._aclients.pop(asyncio.get_running_loop(), None)
        self._ascripts = {k: v for k, v in self._ascripts.items() if k[0] is not client}
        if client is not None:
            await client.aclose()

    # -- cache (CacheStore) --------------------------------------------------------------------

    def _set_args(
        self, payload: bytes, ttl: float, keep: float, delta: float, token: int
    ) -> list[Any]:
        return [payload, int(ttl * 1e6), int(keep * 1e6), cmd.fmt(delta), token]

    def cache_get(self, ns: str, key: str) -> CacheRecord | None:
        """See `CacheStore.cache_get`."""
        return cmd.decode_record(self.run(cmd.CACHE_GET, [self.keys.value(ns, key)], []))

    async def acache_get(self, ns: str, key: str) -> CacheRecord | None:
        """Async `cache_get`."""
        return cmd.decode_record(await self.arun(cmd.CACHE_GET, [self.keys.value(ns, key)], []))

    def cache_set(
        self, ns: str, key: str, payload: bytes, ttl: float, keep: float, delta: float, token: int
    ) -> bool:
        """See `CacheStore.cache_set`."""
        args = self._set_args(payload, ttl, keep, delta, token)
        return bool(self.run(cmd.CACHE_SET, [self.keys.value(ns, key)], args))

    async def acache_set(
        self, ns: str, key: str, payload: bytes, ttl: float, keep: float, delta: float, token: int
    ) -> bool:
        """Async `cache_set`."""
        args = self._set_args(payload, ttl, keep, delta, token)
        return bool(await self.arun(cmd.CACHE_SET, [self.keys.value(ns, key)], args))

    def cache_delete(self, ns: str, key: str) -> None:
        """See `CacheStore.cache_delete` (deletes and publishes in one script)."""
        self.run(cmd.CACHE_DELETE, [self.keys.value(ns, key)], [self.keys.channel(ns), f"k:{key}"])

    async def acache_delete(self, ns: str, key: str) -> None:
        """Async `cache_delete`."""
        await self.arun(
            cmd.CACHE_DELETE, [self.keys.value(ns, key)], [self.keys.channel(ns), f"k:{key}"]
        )

    def cache_delete_prefix(self, ns: str, prefix: str) -> int:
        """See `CacheStore.cache_delete_prefix` (SCAN + UNLINK in batches: O(keys))."""
        client = self._sync()
        pattern = cmd.glob_escape(self.keys.value(ns, prefix)) + "*"
        count = 0
        batch: list[Any] = []
        for name in client.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) >= 500:
                count += client.unlink(*batch)
                batch = []
        if batch:
            count += client.unlink(*batch)
        client.publish(self.keys.channel(ns), f"p:{prefix}")
        return int(count)

    async def acache_delete_prefix(self, ns: str, prefix: str) -> int:
        """Async `cache_delete_prefix`."""
        client = self._async()
        pattern = cmd.glob_escape(self.keys.value(ns, prefix)) + "*"
        count = 0
        batch: list[Any] = []
        async for name in client.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) >= 500:
                count += await client.unlink(*batch)
                batch = []
        if batch:
            count += await client.unlink(*batch)
        await client.publish(self.keys.channel(ns), f"p:{prefix}")
        return int(count)

    def cache_lock(self, ns: str, key: str, lease: float) -> tuple[bool, int, float]:
        """See `CacheStore.cache_lock`."""
        reply = self.run(
            cmd.CACHE_LOCK,
            [self.keys.lock(ns, key), self.keys.fence(ns)],
            [max(1, int(lease * 1000))],
        )
        return bool(reply[0]), int(reply[1]), max(0.0, int(reply[2]) / 1000.0)

    async def acache_lock(self, ns: str, key: str, lease: float) -> tuple[bool, int, float]:
        """Async `cache_lock`."""
        reply = await self.arun(
            cmd.CACHE_LOCK,
            [self.keys.lock(ns, key), self.keys.fence(ns)],
            [max(1, int(lease * 1000))],
        )
        return bool(reply[0]), int(reply[1]), max(0.0, int(reply[2]) / 1000.0)

    def cache_unlock(self, ns: str, key: str, token: int) -> None:
        """See `CacheStore.cache_unlock`."""
        self.run(cmd.CACHE_UNLOCK, [self.keys.lock(ns, key)], [token])

    async def acache_unlock(self, ns: str, key: str, token: int) -> None:
        """Async `cache_unlock`."""
        await self.arun(cmd.CACHE_UNLOCK, [self.keys.lock(ns, key)], [token])

    def cache_subscribe(self, ns: str, callback: Callable[[str, str], None]) -> _Subscriber:
        """See `CacheStore.cache_subscribe` (a daemon reader thread; `close` stops it)."""
        sub = _Subscriber(self, self.keys.channel(ns), callback)
        self._subscribers.append(sub)
        return sub

    # -- rate limiter (BucketStore) --------------------------------------------------------------

    def _bucket_args(self, permits: float, rate: float, burst: float, max_wait: float) -> list[Any]:
        wait = -1.0 if math.isinf(max_wait) else max_wait
        return [cmd.fmt(permits), cmd.fmt(rate), cmd.fmt(burst), cmd.fmt(wait)]

    def bucket_take(
        self, name: str, key: str, permits: float, rate: float, burst: float, max_wait: float
    ) -> float:
        """GCRA take-or-reserve on the server's clock (see `BucketStore.bucket_take`)."""
        reply = self.run(
            cmd.BUCKET,
            [self.keys.bucket(name, key)],
            self._bucket_args(permits, rate, burst, max_wait),
        )
        return float(reply)

    async def abucket_take(
        self, name: str, key: str, permits: float, rate: float, burst: float, max_wait: float
    ) -> float:
        """Async `bucket_take`."""
        reply = await self.arun(
            cmd.BUCKET,
            [self.keys.bucket(name, key)],
            self._bucket_args(permits, rate, burst, max_wait),
        )
        return float(reply)

    # -- retry budget (BudgetStore) --------------------------------------------------------------

    def _budget_args(
        self, kind: str, params: tuple[float, ...], client: str, total: float, cost: float
    ) -> list[Any]:
        padded = [*params, 0.0, 0.0, 0.0][:3]
        return [kind, *(cmd.fmt(p) for p in padded), cmd.fmt(total), cmd.fmt(cost), client]

    def budget_withdraw(
        self,
        name: str,
        kind: str,
        params: tuple[float, ...],
        client: str,
        total: float,
        cost: float,
    ) -> tuple[bool, float]:
        """See `BudgetStore.budget_withdraw`."""
        args = self._budget_args(kind, params, client, total, cost)
        reply = self.run(cmd.BUDGET, [self.keys.budget(name)], args)
        return bool(reply[0]), float(reply[1])

    def budget_deposit(
        self, name: str, kind: str, params: tuple[float, ...], client: str, total: float
    ) -> float:
        """See `BudgetStore.budget_deposit`."""
        args = self._budget_args(kind, params, client, total, 0.0)
        reply = self.run(cmd.BUDGET, [self.keys.budget(name)], args)
        return float(reply[1])
