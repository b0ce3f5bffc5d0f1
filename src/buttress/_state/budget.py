"""Retry budgets: how many retries (and hedges) a client may add to its load.

Two kinds, both shareable between any number of `Retry` and `Hedge` strategies and
pipelines (pass the same object):

* `TokenBucketBudget`: the AWS SDK "standard" retry quota (botocore ``retries/quota.py``):
  capacity 500 tokens, a retry costs 5 (10 after a timeout), a first-try success refunds 1,
  a success after a retry refunds that retry's cost. Under a sustained 100 % failure rate
  it allows 100 retries and then none until successes refill it.
* `RatioBudget`: Finagle's ``RetryBudget`` and the SRE book's rule: retries may be at most
  ``ratio`` (default 0.1) of recent requests, plus a floor of ``min_retries_per_second``
  so low-traffic clients can still retry. "Recent" is an exponentially decaying window of
  time constant ``window`` seconds (Finagle's ``ttl``, default 10 s).

Hot-path cost: recording a first-try outcome is one ``next()`` on an `itertools.count`
(atomic under the GIL, about 40 ns); the arithmetic is settled lazily, under a lock, only
when a retry asks for a withdrawal.

Shared budgets (``store=``, e.g. `buttress.stores.RedisStore`): first tries are still
counted locally for free; the running total of this process's deposits is handed to the
store with the next withdrawal (a running total, not an increment, so an exchange that timed
out after the server applied it is never counted twice), which the store settles atomically
on its own clock (one round trip per retry or hedge, none per first try). The local balance
is kept up to date as well and takes over while the store fails (fail-open, the default;
``fail_open=False`` raises `StoreError` instead). Store events (`StoreFailed`,
`StoreRecovered`) go to the global listeners (`buttress.add_listener`).
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import Any

from .._core.validate import check_duration, check_ratio
from .._exceptions import ConfigurationError

_UNAVAILABLE: Any = object()

__all__ = ["RatioBudget", "RetryBudget", "TokenBucketBudget"]


class RetryBudget:
    """Base class of retry budgets (see `RatioBudget` and `TokenBucketBudget`).

    Subclass it to write your own; a budget must be thread-safe.
    """

    name: str
    on_first_success: Any = None
    """Hot-path hook: a zero-argument callable for a first-try success, or ``None``."""
    on_first_failure: Any = None
    """Hot-path hook: a zero-argument callable for a handled first-try failure, or ``None``."""

    # -- hot path (no clock read) ---------------------------------------------------------
    def record_first_try(self, success: bool) -> None:  # pragma: no cover - abstract
        """Record the end of a first attempt (``success`` means not handled as failure)."""
        raise NotImplementedError

    # -- slow path -------------------------------------------------------------------------
    def try_withdraw(self, now: float, *, timeout: bool = False) -> bool:  # pragma: no cover
        """Take the cost of one retry or hedge at time ``now`` (seconds). ``False`` = refused."""
        raise NotImplementedError

    def record_retry_success(self, *, timeout: bool = False) -> None:
        """A retry succeeded (the token bucket refunds its cost)."""

    def level(self, now: float) -> float:  # pragma: no cover - abstract
        """Tokens currently available (retries for `RatioBudget`, tokens for the bucket)."""
        raise NotImplementedError

    # -- shared state (store=) ---------------------------------------------------------------
    store: Any = None
    _guard: Any = None
    _env: Any = None
    _sent_total: float = 0.0
    _client: str = ""

    def _init_store(self, owner: str, store: Any, fail_open: bool, store_retry: Any) -> None:
        if store is None:
            return
        if not (
            callable(getattr(store, "budget_withdraw", None))
            and callable(getattr(store, "budget_deposit", None))
        ):
            raise ConfigurationError.invalid(
                owner, "store", store, "None or a BudgetStore (e.g. buttress.stores.RedisStore)"
            )
        from .._core.env import Env
        from .._core.store_guard import StoreGuard

        retry = check_duration(owner, "store_retry", store_retry, strictly_positive=True)
        self.store = store
        self._guard = StoreGuard(store, self.name, fail_open=fail_open, retry_interval=retry)
        self._env = Env(f"budget:{self.name}")
        import uuid

        self._client = uuid.uuid4().hex[:16]

    def _shared(self, now: float, op: str, *args: Any) -> Any:
        """Run ``store.<op>(name, *args)`` through the guard; `_UNAVAILABLE` on failure."""
        guard = self._guard
        if not guard.usable(now):
            return _UNAVAILABLE
        try:
            result = getattr(self.store, op)(self.name, *args)
        except Exception as exc:
            guard.failed(self._env, op, exc, now)
            return _UNAVAILABLE
        if guard.down:
            guard.succeeded(self._env, now)
        return result


def _nonneg(owner: str, name: str, value: Any, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or math.isinf(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise ConfigurationError.invalid(
            owner, name, value, "a finite number > 0" if positive else "a finite number >= 0"
        )
    return float(value)


class RatioBudget(RetryBudget):
    """Retries limited to a fraction of recent requests, with a per-second floor.

    Args:
        ratio: Fraction of recent first attempts that may be retried, 0..1 (default 0.1).
        min_retries_per_second: Floor in retries per second, >= 0 (default 10, Finagle's).
        window: Time constant of "recent" in seconds, > 0 (default 10.0).
        name: Name used in events and metrics; with a store, also the shared state's key
            (processes using the same name share one budget).
        store: A `BudgetStore` (e.g. `buttress.stores.RedisStore`) sharing the balance
            between processes, or ``None`` (default: this process only).
        fail_open: With a store: on store errors use the local balance (default ``True``);
            ``False`` raises `StoreError`.
        store_retry: Seconds a failed store is skipped before being tried again (default 1).

    The balance starts at ``min_retries_per_second * window`` and is
    ``ratio * requests + min_retries_per_second * t`` with every deposit decaying as
    ``exp(-age / window)``; a retry needs one whole token.

    Raises:
        ConfigurationError: Out-of-range value, or a store without the budget operations.
    """

    def __init__(
        self,
        ratio: float = 0.1,
        *,
        min_retries_per_second: float = 10.0,
        window: float = 10.0,
        name: str = "retry-budget",
        store: Any = None,
        fail_open: bool = True,
        store_retry: float = 1.0,
    ) -> None:
        owner = "RatioBudget"
        self.ratio = check_ratio(owner, "ratio", ratio)
        self.min_retries_per_second = _nonneg(
            owner, "min_retries_per_second", min_retries_per_second
        )
        self.window = check_duration(owner, "window", window, strictly_positive=True)
        self.name = name
        self._requests = itertools.count()
        self.on_first_success = self.on_first_failure = self._requests.__next__
        self._settles = 0
        self._last_total = 0
        self._last_time: float | None = None
        self._balance = self.min_retries_per_second * self.window
        self._lock = threading.Lock()
        self._init_store(owner, store, fail_open, store_retry)

    def record_first_try(self, success: bool) -> None:
        """Count one request (both outcomes count as requests)."""
        next(self._requests)

    def _settle(self, now: float) -> None:
        total = next(self._requests) - self._settles
        self._settles += 1
        delta = total - self._last_total
        self._last_total = total
        self._sent_total += delta
        last = self._last_time
        self._last_time = now
        elapsed = 0.0 if last is None else max(0.0, now - last)
        deposit = self.ratio * delta + self.min_retries_per_second * elapsed
        if elapsed > 0.0:
            decay = math.exp(-elapsed / self.window)
            # deposits spread uniformly over the interval, each decayed by its own age
            self._balance = self._balance * decay + deposit * (1.0 - decay) * self.window / elapsed
        else:
            self._balance += deposit

    def try_withdraw(self, now: float, *, timeout: bool = False) -> bool:
        """Take one retry's worth (1 token) if available (from the store when shared).

        Raises:
            StoreError: The store failed and the budget is fail-closed.
        """
        with self._lock:
            self._settle(now)
            if self.store is not None:
                params = (self.ratio, self.min_retries_per_second, self.window)
                got = self._shared(
                    now, "budget_withdraw", "ratio", params, self._client, self._sent_total, 1.0
                )
                if got is not _UNAVAILABLE:
                    if got[0]:
                        self._balance = max(0.0, self._balance - 1.0)
                    return bool(got[0])
            if self._balance >= 1.0:
                self._balance -= 1.0
                return True
            return False

    def level(self, now: float) -> float:
        """Retries currently available (a float; one retry needs >= 1; shared if a store)."""
        with self._lock:
            self._settle(now)
            if self.store is not None:
                params = (self.ratio, self.min_retries_per_second, self.window)
                got = self._shared(
                    now, "budget_deposit", "ratio", params, self._client, self._sent_total
                )
                if got is not _UNAVAILABLE:
                    return float(got)
            return self._balance

    def __repr__(self) -> str:
        return (
            f"RatioBudget(ratio={self.ratio}, min_retries_per_second="
            f"{self.min_retries_per_second}, window={self.window}, name={self.name!r})"
        )


class TokenBucketBudget(RetryBudget):
    """The AWS SDK standard-mode retry quota.

    Args:
        capacity: Tokens when full and at start, > 0 (default 500).
        retry_cost: Tokens a retry takes, >= 0 (default 5).
        timeout_cost: Tokens a retry after a `TimeoutError` takes, >= 0 (default 10).
        success_refund: Tokens a first-try success returns, >= 0 (default 1).
        name: Name used in events and metrics; with a store, also the shared state's key
            (processes using the same name share one budget).
        store: A `BudgetStore` (e.g. `buttress.stores.RedisStore`) sharing the balance
            between processes, or ``None`` (default: this process only).
        fail_open: With a store: on store errors use the local balance (default ``True``);
            ``False`` raises `StoreError`.
        store_retry: Seconds a failed store is skipped before being tried again (default 1).

    Raises:
        ConfigurationError: Out-of-range value, or a store without the budget operations.
    """

    def __init__(
        self,
        capacity: float = 500.0,
        *,
        retry_cost: float = 5.0,
        timeout_cost: float = 10.0,
        success_refund: float = 1.0,
        name: str = "retry-budget",
        store: Any = None,
        fail_open: bool = True,
        store_retry: float = 1.0,
    ) -> None:
        owner = "TokenBucketBudget"
        self.capacity = _nonneg(owner, "capacity", capacity, positive=True)
        self.retry_cost = _nonneg(owner, "retry_cost", retry_cost)
        self.timeout_cost = _nonneg(owner, "timeout_cost", timeout_cost)
        self.success_refund = _nonneg(owner, "success_refund", success_refund)
        self.name = name
        self._successes = itertools.count()
        self.on_first_success = self._successes.__next__
        self._settles = 0
        self._last_total = 0
        self._balance = self.capacity
        self._lock = threading.Lock()
        self._init_store(owner, store, fail_open, store_retry)

    def record_first_try(self, success: bool) -> None:
        """A first-try success refunds ``success_refund`` (applied lazily)."""
        if success:
            next(self._successes)

    def _settle(self) -> None:
        total = next(self._successes) - self._settles
        self._settles += 1
        delta = total - self._last_total
        self._last_total = total
        if delta:
            self._balance = min(self.capacity, self._balance + delta * self.success_refund)
            self._sent_total += delta * self.success_refund

    def try_withdraw(self, now: float, *, timeout: bool = False) -> bool:
        """Take ``retry_cost`` (or ``timeout_cost``) tokens if that many are left."""
        cost = self.timeout_cost if timeout else self.retry_cost
        with self._lock:
            self._settle()
            if self.store is not None:
                got = self._shared(
                    now,
                    "budget_withdraw",
                    "bucket",
                    (self.capacity,),
                    self._client,
                    self._sent_total,
                    cost,
                )
                if got is not _UNAVAILABLE:
                    if got[0]:
                        self._balance = max(0.0, self._balance - cost)
                    return bool(got[0])
            if self._balance >= cost:
                self._balance -= cost
                return True
            return False

    def record_retry_success(self, *, timeout: bool = False) -> None:
        """Refund the cost of the retry that succeeded."""
        cost = self.timeout_cost if timeout else self.retry_cost
        with self._lock:
            self._settle()
            self._balance = min(self.capacity, self._balance + cost)
            if self.store is not None:
                self._sent_total += cost  # handed to the store with the next exchange

    def level(self, now: float) -> float:
        """Tokens available now (shared if a store)."""
        with self._lock:
            self._settle()
            if self.store is not None:
                got = self._shared(
                    now,
                    "budget_deposit",
                    "bucket",
                    (self.capacity,),
                    self._client,
                    self._sent_total,
                )
                if got is not _UNAVAILABLE:
                    return float(got)
            return self._balance

    def __repr__(self) -> str:
        return f"TokenBucketBudget(capacity={self.capacity}, name={self.name!r})"
