"""`StoreGuard`: what a strategy does when its shared store fails.

Every store operation a strategy makes goes through a guard. On an error (a timeout, a
refused connection, a script error) the guard:

* marks the store *down* for ``retry_interval`` seconds, so the following calls do not
  each pay a timeout (they go straight to the fallback);
* emits `StoreFailed` (when listeners are installed) and logs a warning on the
  ``buttress.stores`` logger at most once per ``log_interval`` seconds;
* fail-open (the default): tells the strategy to use its local, in-process state instead;
  fail-closed: raises `StoreError` (chained to the original error).

After ``retry_interval`` the next operation tries the store again; its first success emits
`StoreRecovered` and logs the recovery. No background thread is involved.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .._exceptions import StoreError
from ..events import StoreFailed, StoreRecovered
from .env import Env

__all__ = ["StoreGuard"]

_log = logging.getLogger("buttress.stores")


class StoreGuard:
    """Failure state of one store as seen by one strategy.

    Args:
        store: The store (its ``description`` names it in events and logs).
        strategy: Name of the strategy using it.
        fail_open: ``True`` (default): fall back to local state on errors; ``False``:
            raise `StoreError`.
        retry_interval: Seconds the store is skipped after a failure, > 0 (default 1.0).
        log_interval: Least seconds between two warnings about this store (default 30).
    """

    __slots__ = (
        "_lock",
        "_logged_at",
        "_suppressed",
        "down",
        "fail_open",
        "failures",
        "log_interval",
        "retry_at",
        "retry_interval",
        "store",
        "strategy",
    )

    def __init__(
        self,
        store: Any,
        strategy: str,
        *,
        fail_open: bool = True,
        retry_interval: float = 1.0,
        log_interval: float = 30.0,
    ) -> None:
        self.store = store
        self.strategy = strategy
        self.fail_open = fail_open
        self.retry_interval = retry_interval
        self.log_interval = log_interval
        self.down = False
        self.retry_at = 0.0
        self.failures = 0
        self._logged_at: float | None = None
        self._suppressed = 0
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        """The store's description."""
        return str(getattr(self.store, "description", type(self.store).__name__))

    def usable(self, now: float) -> bool:
        """Should the next operation try the store? Raises when down and fail-closed.

        Raises:
            StoreError: The store is down, not yet due for a retry, and fail-closed.
        """
        if not self.down or now >= self.retry_at:
            return True
        if not self.fail_open:
            raise StoreError(
                f"store {self.description} is unavailable (failing since recently; "
                f"next attempt in {self.retry_at - now:.3f}s) and {self.strategy!r} is "
                "configured fail-closed"
            )
        return False

    def failed(self, env: Env, operation: str, exc: Exception, now: float) -> None:
        """Record a failed ``operation``; raises `StoreError` when fail-closed.

        Raises:
            StoreError: The guard is fail-closed (chained to ``exc``).
        """
        with self._lock:
            self.down = True
            self.retry_at = now + self.retry_interval
            self.failures += 1
            log = self._logged_at is None or now - self._logged_at >= self.log_interval
            if log:
                self._logged_at = now
                suppressed, self._suppressed = self._suppressed, 0
            else:
                self._suppressed += 1
        error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        if env.listeners:
            env.emit(
                StoreFailed(
                    pipeline=env.name,
                    strategy=self.strategy,
                    time=now,
                    store=self.description,
                    operation=operation,
                    error_type=error_type,
                    fail_open=self.fail_open,
                )
            )
        if log:
            _log.warning(
                "buttress: store %s failed during %s for %r (%s: %s); %s; retrying it in %.3gs%s",
                self.description,
                operation,
                self.strategy,
                error_type,
                exc,
                "using local state (fail-open)" if self.fail_open else "raising StoreError",
                self.retry_interval,
                f" ({suppressed} similar failures not logged)" if suppressed else "",
            )
        if not self.fail_open:
            raise StoreError(
                f"store {self.description} failed during {operation} for {self.strategy!r} "
                f"({error_type}: {exc}); configured fail-closed"
            ) from exc

    def succeeded(self, env: Env, now: float) -> None:
        """Record a success; the first after failures emits `StoreRecovered`."""
        with self._lock:
            was_down, self.down = self.down, False
        if not was_down:
            return
        _log.warning(
            "buttress: store %s answers again; %r uses it", self.description, self.strategy
        )
        if env.listeners:
            env.emit(
                StoreRecovered(
                    pipeline=env.name, strategy=self.strategy, time=now, store=self.description
                )
            )
