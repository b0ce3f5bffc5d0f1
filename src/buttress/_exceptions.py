"""The buttress exception hierarchy (ARCHITECTURE.md section 6).

```
ButtressError(Exception)
  ConfigurationError(ButtressError, ValueError)
  RejectedError(ButtressError)                 .strategy, .retry_after
    CircuitOpenError -> CircuitIsolatedError
    BulkheadFullError
    RateLimitedError
    RetryBudgetExhaustedError
    TimeoutRejectedError(RejectedError, TimeoutError)
  InjectedFaultError
  StoreError
```

Cancellation (`asyncio.CancelledError`, trio's `Cancelled`, `KeyboardInterrupt`,
`SystemExit`, `GeneratorExit`) is never one of these and is never handled by any strategy.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "BulkheadFullError",
    "ButtressError",
    "CircuitIsolatedError",
    "CircuitOpenError",
    "ConfigurationError",
    "InjectedFaultError",
    "RateLimitedError",
    "RejectedError",
    "RetryBudgetExhaustedError",
    "StoreError",
    "TimeoutRejectedError",
]


class ButtressError(Exception):
    """Base class of every error buttress raises itself."""


class ConfigurationError(ButtressError, ValueError):
    """A strategy, pipeline or store was configured with an invalid value.

    Raised at construction time, never during a call. The message names the parameter,
    the value given and the valid range.

    Attributes:
        parameter: Name of the offending parameter (for example ``"attempts"``), or
            ``None`` when the problem is not tied to one parameter.
        value: The rejected value.
        expected: Human-readable description of what is valid.
    """

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        value: Any = None,
        expected: str | None = None,
    ) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value
        self.expected = expected

    @classmethod
    def invalid(cls, owner: str, parameter: str, value: Any, expected: str) -> ConfigurationError:
        """Build the standard message: ``Retry(attempts=0): expected an int >= 1``."""
        return cls(
            f"{owner}({parameter}={value!r}): expected {expected}",
            parameter=parameter,
            value=value,
            expected=expected,
        )


class RejectedError(ButtressError):
    """A strategy refused to start or to finish a call.

    Attributes:
        strategy: Name of the strategy instance that rejected the call.
        retry_after: Seconds after which a new call may be admitted, or ``None`` when
            unknown. Never negative.
    """

    def __init__(
        self,
        message: str = "",
        *,
        strategy: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or self.__class__.__name__)
        self.strategy = strategy
        if retry_after is not None and (math.isnan(retry_after) or retry_after < 0):
            retry_after = 0.0
        self.retry_after = retry_after


class CircuitOpenError(RejectedError):
    """The circuit breaker is open (or half-open with every trial slot taken)."""


class CircuitIsolatedError(CircuitOpenError):
    """The circuit breaker was isolated by hand (``breaker.isolate()``)."""


class BulkheadFullError(RejectedError):
    """The bulkhead has no free slot and no room (or time) left in its queue."""


class RateLimitedError(RejectedError):
    """The rate limiter has no permit now and cannot wait long enough for one."""


class RetryBudgetExhaustedError(RejectedError):
    """A retry budget refused a retry or a hedge.

    A `Retry` whose budget is exhausted re-raises the last original error (with a note);
    this error is raised only by code that asks a budget directly.
    """


class TimeoutRejectedError(RejectedError, TimeoutError):
    """A `Timeout` strategy's own deadline expired.

    Also a builtin `TimeoutError`, so existing ``except TimeoutError`` clauses catch it.
    An outer cancellation or an outer timeout is never reported as this error.

    Attributes:
        timeout: The configured timeout in seconds.
    """

    def __init__(
        self,
        message: str = "",
        *,
        strategy: str | None = None,
        retry_after: float | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(message, strategy=strategy, retry_after=retry_after)
        self.timeout = timeout


class InjectedFaultError(ButtressError):
    """Default exception raised by the `InjectFault` strategy."""


class StoreError(ButtressError):
    """A shared-state store failed and the strategy is configured fail-closed."""


for _cls in (
    ButtressError,
    ConfigurationError,
    RejectedError,
    CircuitOpenError,
    CircuitIsolatedError,
    BulkheadFullError,
    RateLimitedError,
    RetryBudgetExhaustedError,
    TimeoutRejectedError,
    InjectedFaultError,
    StoreError,
):
    _cls.__module__ = "buttress"  # show the public path in tracebacks and events
del _cls
