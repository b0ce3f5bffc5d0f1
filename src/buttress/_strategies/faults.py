"""Fault injection (chaos): `InjectFault`, `InjectLatency`, `InjectResult`.

Each strategy decides per call, in this order:

1. ``enabled``: a bool fixed at construction, or a zero-argument callable evaluated on
   every call (a feature flag, an environment check, a test toggle). ``enabled=False``
   builds no step at all: the strategy costs nothing in the chain.
2. ``injection_rate``: a ratio 0..1, or a zero-argument callable returning one (evaluated
   per call, after ``enabled``). One number is drawn from the pipeline's seeded
   ``random.Random`` (``Pipeline(random=...)``) and the fault is injected when it is below
   the rate. A rate of exactly 0 or 1 draws nothing (never / always), so a seeded run stays
   reproducible whatever the other strategies draw. Values a callable returns outside 0..1
   are clamped; NaN means 0.

Every injection emits `FaultInjected` (only when listeners are installed).

Place chaos strategies **innermost** (last in the pipeline), so the real strategies around
them (retry, timeout, breaker, hedge) react to the injected faults as to real ones.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from datetime import timedelta
from random import Random
from typing import Any

from .._core.env import Env
from .._core.invoke import ainvoke
from .._core.naming import type_name as _type_name
from .._core.validate import check_duration, check_ratio
from .._exceptions import ConfigurationError, InjectedFaultError
from ..events import FaultInjected
from ..typing import AsyncStep, SyncStep

__all__ = ["InjectFault", "InjectLatency", "InjectResult"]

_UNSET: Any = object()

Enabled = bool | Callable[[], bool]
Rate = float | Callable[[], float]


class _Injection:
    """Shared spec handling for the three injectors: ``enabled`` and ``injection_rate``."""

    __slots__ = ("enabled", "injection_rate", "name")

    _owner = "Inject"
    _fault = ""

    def __init__(self, injection_rate: Rate, enabled: Enabled, name: str) -> None:
        owner = self._owner
        if callable(injection_rate):
            self.injection_rate: Rate = injection_rate
        else:
            self.injection_rate = check_ratio(owner, "injection_rate", injection_rate)
        if not (isinstance(enabled, bool) or callable(enabled)):
            raise ConfigurationError.invalid(
                owner, "enabled", enabled, "a bool or a zero-argument callable returning a bool"
            )
        self.enabled: Enabled = enabled
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid(owner, "name", name, "a non-empty str")
        self.name = name

    def _decider(self, env: Env) -> Callable[[], bool] | None:
        """A zero-argument "inject now?" function, or ``None`` when it can never inject."""
        enabled = self.enabled
        rate = self.injection_rate
        draw = env.random.random
        if enabled is False:
            return None
        if not callable(rate):
            if rate <= 0.0:
                return None
            if enabled is True:
                if rate >= 1.0:
                    return _always
                return lambda: draw() < rate
            flag = enabled
            if rate >= 1.0:
                return lambda: bool(flag())
            return lambda: bool(flag()) and draw() < rate
        rate_fn = rate
        flag_fn = None if enabled is True else enabled

        def decide() -> bool:
            if flag_fn is not None and not flag_fn():
                return False
            r = float(rate_fn())
            if not r > 0.0:  # also NaN
                return False
            if r >= 1.0:
                return True
            return draw() < r

        return decide

    def _emit(self, env: Env, detail: str) -> None:
        env.emit(
            FaultInjected(
                pipeline=env.name,
                strategy=self.name,
                time=env.clock.now(),
                fault=self._fault,
                detail=detail,
            )
        )

    def _describe(self) -> str:
        rate = self.injection_rate
        return f"injection_rate={rate!r}, enabled={self.enabled!r}, name={self.name!r}"


def _always() -> bool:
    return True


class InjectFault(_Injection):
    """Raise an exception instead of calling the function, at ``injection_rate``.

    Args:
        exception: What to raise (default `InjectedFaultError`):

            * an exception **type**: instantiated per injection with a message naming the
              strategy (the type must accept one positional argument);
            * an exception **instance**: a shallow copy (`copy.copy`) is raised per
              injection, so tracebacks and notes never pile up on a shared object and
              concurrent injections do not race on it;
            * a zero-argument **factory** returning an exception instance (called per
              injection; use it for types needing other arguments, or to vary the error).

            `BaseException` subclasses are allowed (e.g. to rehearse a cancellation), and
            like real ones they pass through every strategy unhandled.
        injection_rate: Ratio 0..1 of calls that fail, or a zero-argument callable
            returning it per call (required: state how often, there is no silent default).
        enabled: ``True`` (default), ``False`` (the strategy is skipped entirely, zero
            cost) or a zero-argument callable checked on every call, so injection can be
            switched at run time.
        name: Strategy name for events (default ``"inject-fault"``).

    Events: `FaultInjected` with ``fault="exception"`` and ``detail`` the exception's
    qualified type name.

    Raises:
        ConfigurationError: ``injection_rate`` outside 0..1 or NaN; ``exception`` neither
            an exception type, instance nor callable; ``enabled`` neither a bool nor
            callable; empty ``name``.
        TypeError: (at call time) a factory returned something that is not an exception.

    Example:
        >>> chaos_on = lambda: settings.CHAOS  # doctest: +SKIP
        >>> Pipeline(Retry(on=ConnectionError),
        ...          InjectFault(exception=ConnectionError, injection_rate=0.05,
        ...                      enabled=chaos_on))  # doctest: +SKIP
    """

    __slots__ = ("_make", "exception")

    _owner = "InjectFault"
    _fault = "exception"

    def __init__(
        self,
        *,
        injection_rate: Rate,
        exception: BaseException | type[BaseException] | Callable[[], BaseException] = (
            InjectedFaultError
        ),
        enabled: Enabled = True,
        name: str = "inject-fault",
    ) -> None:
        super().__init__(injection_rate, enabled, name)
        self.exception = exception
        self._make: Callable[[], BaseException]
        if isinstance(exception, type) and issubclass(exception, BaseException):
            cls = exception
            message = f"fault injected by {name!r}"
            self._make = lambda: cls(message)
        elif isinstance(exception, BaseException):
            instance = exception
            self._make = lambda: _copy_exception(instance)
        elif callable(exception):
            factory = exception

            def make() -> BaseException:
                exc = factory()
                if not isinstance(exc, BaseException):
                    raise TypeError(
                        f"InjectFault {name!r}: the exception factory returned {exc!r}, "
                        "not an exception instance"
                    )
                return exc

            self._make = make
        else:
            raise ConfigurationError.invalid(
                "InjectFault",
                "exception",
                exception,
                "an exception type, an exception instance, or a zero-argument factory "
                "returning an exception",
            )

    def __repr__(self) -> str:
        return f"InjectFault(exception={self.exception!r}, {self._describe()})"

    def _raise(self, env: Env) -> BaseException:
        exc = self._make()
        if env.listeners:
            self._emit(env, _type_name(type(exc)))
        return exc

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        decide = self._decider(env)
        if decide is None:
            return next_step
        fault = self._raise

        def inject_fault_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if decide():
                raise fault(env)
            return next_step(fn, args, kwargs)

        return inject_fault_step

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        decide = self._decider(env)
        if decide is None:
            return next_step
        fault = self._raise
        direct = next_step is ainvoke

        async def inject_fault_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if decide():
                raise fault(env)
            return await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))

        return inject_fault_step


def _copy_exception(instance: BaseException) -> BaseException:
    try:
        exc = copy.copy(instance)
    except Exception:  # an exotic exception that cannot be copied: reuse it, cleaned
        exc = instance
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None
    if hasattr(exc, "__notes__") and exc is not instance:
        exc.__notes__ = list(getattr(instance, "__notes__", []))
    return exc


class InjectLatency(_Injection):
    """Delay the call by ``latency`` seconds before running it, at ``injection_rate``.

    The delay goes through the pipeline's runtime: a real sleep with the system clock, an
    instant advance with `buttress.testing.ManualClock`, simulated time in the lab. On
    asyncio and trio the delay is a normal await, so an enclosing `Timeout` cancels it like
    real slowness; in sync code it blocks the calling thread (a cooperative `Timeout`
    outside then rejects the late call).

    Args:
        latency: Seconds (float or `timedelta`, >= 0, finite), or a callable taking the
            pipeline's `random.Random` and returning seconds, for a seeded distribution,
            e.g. ``lambda rng: rng.expovariate(1 / 0.2)``. A negative or NaN value returned
            by the callable raises `ValueError` at call time.
        injection_rate: Ratio 0..1 of calls delayed, or a zero-argument callable returning
            it per call (required).
        enabled: ``True`` (default), ``False`` (skipped entirely) or a zero-argument
            callable checked on every call.
        name: Strategy name for events (default ``"inject-latency"``).

    Events: `FaultInjected` with ``fault="latency"`` and ``detail`` the delay in seconds
    (``repr`` of the float), emitted before the delay starts.

    Raises:
        ConfigurationError: ``latency`` negative, NaN, infinite or of the wrong type;
            ``injection_rate`` outside 0..1; invalid ``enabled`` or ``name``.
    """

    __slots__ = ("latency",)

    _owner = "InjectLatency"
    _fault = "latency"

    def __init__(
        self,
        *,
        latency: float | timedelta | Callable[[Random], float],
        injection_rate: Rate,
        enabled: Enabled = True,
        name: str = "inject-latency",
    ) -> None:
        super().__init__(injection_rate, enabled, name)
        if callable(latency):
            self.latency: float | Callable[[Random], float] = latency
        else:
            self.latency = check_duration("InjectLatency", "latency", latency)

    def __repr__(self) -> str:
        return f"InjectLatency(latency={self.latency!r}, {self._describe()})"

    def _delay(self, env: Env) -> float:
        latency = self.latency
        if callable(latency):
            seconds = float(latency(env.random))
            if not seconds >= 0.0 or math.isinf(seconds):
                raise ValueError(
                    f"InjectLatency {self.name!r}: latency callable returned {seconds!r}; "
                    "expected finite seconds >= 0"
                )
        else:
            seconds = latency
        if env.listeners:
            self._emit(env, repr(seconds))
        return seconds

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        decide = self._decider(env)
        if decide is None:
            return next_step
        delay = self._delay

        def inject_latency_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if decide():
                env.sync_runtime().sleep(delay(env))
            return next_step(fn, args, kwargs)

        return inject_latency_step

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        decide = self._decider(env)
        if decide is None:
            return next_step
        delay = self._delay
        direct = next_step is ainvoke

        async def inject_latency_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if decide():
                await env.async_runtime().sleep(delay(env))
            return await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))

        return inject_latency_step


class InjectResult(_Injection):
    """Return a value instead of calling the function, at ``injection_rate``.

    Args:
        result: The value to return. Give exactly one of ``result`` and ``factory``.
        factory: A zero-argument (sync) callable producing the value per injection, for
            values that must be fresh each time (mutable objects, responses).
        injection_rate: Ratio 0..1 of calls answered with the injected value, or a
            zero-argument callable returning it per call (required).
        enabled: ``True`` (default), ``False`` (skipped entirely) or a zero-argument
            callable checked on every call.
        name: Strategy name for events (default ``"inject-result"``).

    The function is **not** called when a result is injected. An injected result goes
    through the outer strategies like a real one (a `Retry` with ``on_result`` may retry
    it, a `Fallback` may replace it).

    Events: `FaultInjected` with ``fault="result"`` and ``detail`` the value's ``repr``
    (cut to 80 characters).

    Raises:
        ConfigurationError: Neither or both of ``result`` and ``factory``; a ``factory``
            that is not callable; invalid ``injection_rate``, ``enabled`` or ``name``.
    """

    __slots__ = ("factory", "result")

    _owner = "InjectResult"
    _fault = "result"

    def __init__(
        self,
        *,
        injection_rate: Rate,
        result: Any = _UNSET,
        factory: Callable[[], Any] | None = None,
        enabled: Enabled = True,
        name: str = "inject-result",
    ) -> None:
        super().__init__(injection_rate, enabled, name)
        if (result is _UNSET) == (factory is None):
            raise ConfigurationError.invalid(
                "InjectResult",
                "result/factory",
                (None if result is _UNSET else result, factory),
                "exactly one of result= or factory=",
            )
        if factory is not None and not callable(factory):
            raise ConfigurationError.invalid("InjectResult", "factory", factory, "a callable")
        self.result = None if result is _UNSET else result
        self.factory = factory

    def __repr__(self) -> str:
        what = (
            f"factory={self.factory!r}" if self.factory is not None else f"result={self.result!r}"
        )
        return f"InjectResult({what}, {self._describe()})"

    def _value(self, env: Env) -> Any:
        value = self.factory() if self.factory is not None else self.result
        if env.listeners:
            text = repr(value)
            self._emit(env, text if len(text) <= 80 else text[:77] + "...")
        return value

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        decide = self._decider(env)
        if decide is None:
            return next_step
        value = self._value

        def inject_result_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if decide():
                return value(env)
            return next_step(fn, args, kwargs)

        return inject_result_step

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        decide = self._decider(env)
        if decide is None:
            return next_step
        value = self._value
        direct = next_step is ainvoke

        async def inject_result_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if decide():
                return value(env)
            return await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))

        return inject_result_step
