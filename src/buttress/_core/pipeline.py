"""`Pipeline`: an immutable, ordered stack of strategies (outermost first).

The pipeline never imports a concrete strategy: anything with ``build_sync`` and
``build_async`` (the `buttress.typing.Strategy` protocol) composes. The sync and async
chains are built once, on first use of each colour, into nested closures; a call then
costs one `ContextVar.set`/`reset` pair, one three-slot list, and the strategies' own
steps.

Call telemetry: when the pipeline has listeners (its own or global) at the moment a chain
is used, the chain is wrapped in one outer *call step* that emits `CallStarted` and
`CallCompleted` (duration, outcome). Adding or removing a global listener re-wraps (or
un-wraps) the chains of every live pipeline; the strategies' chain itself is built once and
kept, so strategy state is never rebuilt. With no listener there is no call step at all.
"""

from __future__ import annotations

import functools
import inspect
import random as _random
import types
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar, overload

from .._exceptions import ConfigurationError, RejectedError
from ..events import CallCompleted, CallStarted
from .clock import Clock
from .context import CURRENT, DEADLINE
from .env import Env, Listener
from .invoke import AwaitableGuard
from .invoke import ainvoke as _ainvoke
from .invoke import invoke as _invoke
from .naming import error_type as _error_type

__all__ = ["Pipeline"]

_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType
_CodeType = types.CodeType
_FunctionType = types.FunctionType
_MethodType = types.MethodType
_partial = functools.partial
_CO_COROUTINE = inspect.CO_COROUTINE

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class Pipeline:
    """Execute callables through strategies, outermost first.

    Args:
        *strategies: Strategy instances (`Retry`, `Timeout`, `Fallback`, ...), outermost
            first. A `Pipeline` given here contributes its strategies (flattened).
        name: Pipeline name for events, metrics and the context's ``operation_key``
            (default ``"default"``).
        clock: Time source (default the system monotonic clock; `buttress.testing.ManualClock`
            in tests).
        random: A `random.Random` for jitter and injection rates; seed it for reproducible
            runs. Default: a fresh unseeded `random.Random`.
        listeners: Callables receiving every `Event` of this pipeline.

    Use ``pipeline.call(fn, *args, **kwargs)``, ``await pipeline.acall(fn, ...)`` or
    ``@pipeline`` as a decorator (sync or async chosen by inspection).

    Each call publishes a `Context` (its operation key, attempt, deadline, idempotency
    key) for the code it runs, through a ``ContextVar``. A pipeline made only of
    *admission* strategies (`CircuitBreaker`, `Bulkhead` and `RateLimiter` without a
    ``key=`` or ``cost`` function) is transparent instead: it starts
    no operation of its own, so ``current_context()`` inside it returns the enclosing
    pipeline's Context (or ``None`` outside any), deadlines still pass through, and the
    call saves the ``ContextVar`` push (about 0.15 us, a third of such a call; Python
    3.11). Use `buttress.scope` (or add a `Timeout`/`Retry`) to name an operation there.

    Raises:
        ConfigurationError: A strategy does not implement the strategy protocol, or a
            parameter has the wrong type.
    """

    __slots__ = (
        "__weakref__",
        "_acall_fn",
        "_async_chain",
        "_async_inner",
        "_async_rest",
        "_env",
        "_publish",
        "_sync_chain",
        "_sync_inner",
        "_sync_rest",
        "strategies",
    )

    def __init__(
        self,
        *strategies: Any,
        name: str = "default",
        clock: Clock | None = None,
        random: _random.Random | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        flat: list[Any] = []
        for strategy in strategies:
            if isinstance(strategy, Pipeline):
                flat.extend(strategy.strategies)
            elif isinstance(strategy, type):
                # Pipeline(Retry) instead of Pipeline(Retry(...)): the class has the
                # methods, so it would only fail on the first call with a TypeError
                raise ConfigurationError.invalid(
                    "Pipeline",
                    "strategies",
                    strategy,
                    f"strategy instances, not classes: {strategy.__name__}(...)",
                )
            elif callable(getattr(strategy, "build_sync", None)) and callable(
                getattr(strategy, "build_async", None)
            ):
                flat.append(strategy)
            else:
                raise ConfigurationError.invalid(
                    "Pipeline",
                    "strategies",
                    strategy,
                    "strategy objects (Retry(...), Timeout(...), ...) with build_sync/build_async",
                )
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("Pipeline", "name", name, "a non-empty str")
        if clock is not None and not (
            callable(getattr(clock, "now", None)) and callable(getattr(clock, "sleep", None))
        ):
            raise ConfigurationError.invalid("Pipeline", "clock", clock, "a Clock (now, sleep)")
        if random is not None and not isinstance(random, _random.Random):
            raise ConfigurationError.invalid("Pipeline", "random", random, "a random.Random")
        listeners = tuple(listeners)
        for listener in listeners:
            if not callable(listener):
                raise ConfigurationError.invalid("Pipeline", "listeners", listener, "callables")
        self.strategies: tuple[Any, ...] = tuple(flat)
        self._env = Env(name, clock, random, listeners)
        self._sync_chain: Callable[..., Any] | None = None
        self._async_chain: Callable[..., Awaitable[Any]] | None = None
        self._sync_inner: Callable[..., Any] | None = None
        self._sync_rest: Callable[..., Any] | None = None
        self._async_inner: Callable[..., Awaitable[Any]] | None = None
        self._async_rest: Callable[..., Awaitable[Any]] | None = None
        # the last coroutine function (closure-free, so no reference cycle) seen by acall
        self._acall_fn: Any = None
        self._env._on_change = self._listeners_changed
        # unknown strategies are assumed to need their own execution record; a pipeline
        # without strategies exists to name an operation, so it publishes one
        self._publish = not flat or any(getattr(s, "_needs_context", True) for s in flat)

    # -- introspection ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self._env.name

    @property
    def clock(self) -> Clock:
        """The pipeline's clock."""
        return self._env.clock

    @property
    def publishes_context(self) -> bool:
        """Whether each call publishes a `Context` of its own (see the class docs)."""
        return self._publish

    @property
    def env(self) -> Env:
        """The environment handed to strategies (for strategy authors and integrations)."""
        return self._env

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.strategies)
        return f"Pipeline({inner}{', ' if inner else ''}name={self.name!r})"

    # -- chains ------------------------------------------------------------------------------

    def _listeners_changed(self) -> None:
        # Called by the Env when its listener set changes: drop the (possibly wrapped)
        # entry chains; the next call re-wraps the kept strategy chains as needed.
        self._sync_chain = None
        self._async_chain = None

    def _sync(self) -> Callable[..., Any]:
        inner = self._sync_inner
        if inner is None:
            inner = rest = _invoke
            for strategy in reversed(self.strategies):
                rest = inner
                inner = strategy.build_sync(inner, self._env)
            self._sync_rest = rest  # the chain below the outermost strategy
            self._sync_inner = inner
        chain = _timed_sync(inner, self._env) if self._env.listeners else inner
        self._sync_chain = chain
        return chain

    def _async(self) -> Callable[..., Awaitable[Any]]:
        inner = self._async_inner
        if inner is None:
            inner = rest = _ainvoke
            for strategy in reversed(self.strategies):
                rest = inner
                inner = strategy.build_async(inner, self._env)
            self._async_rest = rest  # the chain below the outermost strategy
            self._async_inner = inner
        chain = _timed_async(inner, self._env) if self._env.listeners else inner
        self._async_chain = chain
        return chain

    def _bind(self, fn: Any, generic: Any, bind_name: str, build_name: str) -> Any:
        """Fuse the decorator's wrapper with the outermost strategy, when it allows.

        Built-in strategies (`Retry`; `Timeout` for async; `CircuitBreaker` in a pipeline
        that publishes no context) offer a private
        ``_bind_async(fn, next_step, env, generic, publish=...)`` / ``_bind_sync(...)``
        returning the decorated function itself (or ``None`` to decline), which pushes the
        execution record, if ``publish``, in its own frame:
        one frame (sync) or coroutine layer (async) less per call, measured about
        0.05-0.1 us sync and 0.15-0.25 us async on Python 3.11 (bench/README.md). Used
        only when the same class defines both the bind and the build method (a subclass
        overriding ``build_*`` keeps the generic path). Builds that chain now; if building
        fails, the generic path reports the error on the first call, as before.
        """
        if not self.strategies:
            return None
        first = self.strategies[0]
        cls = type(first)
        if getattr(cls, bind_name, None) is None:
            return None
        owners = [
            next(c for c in cls.__mro__ if name in c.__dict__) for name in (bind_name, build_name)
        ]
        if owners[0] is not owners[1]:
            return None
        try:
            if bind_name == "_bind_async":
                self._async()
                rest: Any = self._async_rest
            else:
                self._sync()
                rest = self._sync_rest
        except ConfigurationError:
            return None
        return getattr(first, bind_name)(fn, rest, self._env, generic, publish=self._publish)

    # -- entry points ---------------------------------------------------------------------

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` synchronously through the strategies.

        Raises:
            ConfigurationError: ``fn`` is a coroutine function (use `acall`), or a
                strategy cannot run synchronously.
        """
        chain = self._sync_chain or self._sync()
        if self._publish:
            token = CURRENT.set(
                [self._env, parent := CURRENT.get(), None, parent and parent[DEADLINE]]
            )
            try:
                result = chain(fn, args, kwargs)
            finally:
                CURRENT.reset(token)
        else:
            result = chain(fn, args, kwargs)
        if result.__class__ is _GeneratorType:
            result.close()
            raise ConfigurationError(
                f"Pipeline {self.name!r}: call() got a generator function {fn!r}: a retry "
                "cannot replay a half-consumed stream; return the collected items instead",
                parameter="fn",
                value=fn,
                expected="a function returning a value",
            )
        if result.__class__ is _CoroutineType:
            # checked on the result (one class test) rather than with
            # inspect.iscoroutinefunction (about 1 us) before the call
            result.close()
            raise ConfigurationError(
                f"Pipeline {self.name!r}: call() got a coroutine from {fn!r} (an async "
                "function, or a function returning a coroutine); "
                "use `await pipeline.acall(...)`",
                parameter="fn",
                value=fn,
                expected="a sync callable",
            )
        return result  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` through the strategies (asyncio, trio or the lab).

        ``fn`` must be a coroutine function or a callable returning an awaitable (for
        example ``lambda: client.get(url)`` or a ``functools.partial`` of a coroutine
        function). A plain function returning anything else is a programming error: it is
        refused as soon as it returns, before any strategy sees the result, so a `Retry`
        does not run it again and a `CircuitBreaker` does not count it.

        Raises:
            ConfigurationError: ``fn`` returned something that cannot be awaited (use
                `call` for plain functions).
        """
        chain = self._async_chain or self._async()
        if fn is not self._acall_fn and (
            fn.__class__ is not _MethodType or fn.__func__ is not self._acall_fn
        ):
            fn = self._awaitable_fn(fn)
        if not self._publish:
            return await chain(fn, args, kwargs)  # type: ignore[no-any-return]
        token = CURRENT.set([self._env, parent := CURRENT.get(), None, parent and parent[DEADLINE]])
        try:
            return await chain(fn, args, kwargs)  # type: ignore[no-any-return]
        finally:
            CURRENT.reset(token)

    def _awaitable_fn(self, fn: Any) -> Any:
        """``fn`` when it is a coroutine function, else ``fn`` guarded by `AwaitableGuard`.

        Decided from the code flags of the function (through bound methods and
        ``functools.partial``; of ``__call__`` for other objects), about 0.1 us
        (`inspect.iscoroutinefunction` costs about 0.25 us). The last closure-free
        coroutine function is remembered, so calling it (or a method bound to it) again
        costs one or two identity tests in `acall`. Anything else (a lambda returning a
        coroutine, a plain function by mistake) is wrapped, about 0.3 us per call.
        """
        target = fn
        cls = fn.__class__
        while cls is _partial or cls is _MethodType:
            target = target.func if cls is _partial else target.__func__
            cls = target.__class__
        if cls is not _FunctionType:  # an object with ``async def __call__``
            target = getattr(cls, "__call__", None)  # noqa: B004 - the method is inspected
        code = getattr(target, "__code__", None)
        if code.__class__ is _CodeType and code.co_flags & _CO_COROUTINE:
            if cls is _FunctionType and target.__closure__ is None:
                self._acall_fn = target
            return fn
        return AwaitableGuard(fn, self._env.name)

    @overload
    def __call__(self, fn: F) -> F: ...
    @overload
    def __call__(self, fn: staticmethod[P, R]) -> staticmethod[P, R]: ...
    @overload
    def __call__(self, fn: classmethod[Any, P, R]) -> classmethod[Any, P, R]: ...
    def __call__(self, fn: Any) -> Any:
        """Decorate a function, method, staticmethod or classmethod.

        Coroutine functions get an async wrapper, everything else a sync one; the wrapper
        keeps ``functools.wraps`` metadata and the signature for type checkers.

        Raises:
            ConfigurationError: ``fn`` is a generator or async generator function (a retry
                cannot replay a half-consumed stream; decorate a function that returns a
                list, or apply the pipeline to each item's producer instead), or not callable.
        """
        if isinstance(fn, staticmethod):
            return staticmethod(self(fn.__func__))
        if isinstance(fn, classmethod):
            return classmethod(self(fn.__func__))
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigurationError(
                f"Pipeline {self.name!r} cannot decorate the generator function "
                f"{getattr(fn, '__qualname__', fn)!r}: a retry cannot replay a half-consumed "
                "stream. Decorate a function that returns the collected items (e.g. a list), "
                "or run the pipeline around each item's fetch.",
                parameter="fn",
                value=fn,
                expected="a function or coroutine function",
            )
        if not callable(fn):
            raise ConfigurationError.invalid("Pipeline", "fn", fn, "a callable to decorate")
        env = self._env
        cv = CURRENT
        # an instance with ``async def __call__`` is a coroutine function too (inspect does
        # not see it on 3.11/3.12): it must get the async path, or every attempt would
        # "succeed" by returning an un-awaited coroutine
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - the method itself is inspected
        ):
            pipeline = self

            async def generic(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if not pipeline._publish:
                    return await (pipeline._async_chain or pipeline._async())(fn, args, kwargs)
                token = cv.set([env, parent := cv.get(), None, parent and parent[DEADLINE]])
                try:
                    return await (pipeline._async_chain or pipeline._async())(fn, args, kwargs)
                finally:
                    cv.reset(token)

            bound = self._bind(fn, generic, "_bind_async", "build_async")
            if bound is not None:
                return functools.wraps(fn)(bound)

            if not self._publish:

                @functools.wraps(fn)
                async def async_transparent(*args: Any, **kwargs: Any) -> Any:
                    return await (pipeline._async_chain or pipeline._async())(fn, args, kwargs)

                return async_transparent

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = cv.set([env, parent := cv.get(), None, parent and parent[DEADLINE]])
                try:
                    return await (pipeline._async_chain or pipeline._async())(fn, args, kwargs)
                finally:
                    cv.reset(token)

            return async_wrapper

        pipeline = self

        def sync_generic(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if not pipeline._publish:
                return (pipeline._sync_chain or pipeline._sync())(fn, args, kwargs)
            token = cv.set([env, parent := cv.get(), None, parent and parent[DEADLINE]])
            try:
                return (pipeline._sync_chain or pipeline._sync())(fn, args, kwargs)
            finally:
                cv.reset(token)

        sync_bound = self._bind(fn, sync_generic, "_bind_sync", "build_sync")
        if sync_bound is not None:
            return functools.wraps(fn)(sync_bound)

        if not self._publish:

            @functools.wraps(fn)
            def sync_transparent(*args: Any, **kwargs: Any) -> Any:
                return (pipeline._sync_chain or pipeline._sync())(fn, args, kwargs)

            return sync_transparent

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            token = cv.set([env, parent := cv.get(), None, parent and parent[DEADLINE]])
            try:
                return (pipeline._sync_chain or pipeline._sync())(fn, args, kwargs)
            finally:
                cv.reset(token)

        return sync_wrapper


# -- call telemetry step (only installed when listeners exist) ------------------------------


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, RejectedError):
        return "rejected"
    if isinstance(exc, Exception):
        return "error"
    return "cancelled"


def _completed(
    env: Env, listeners: tuple[Listener, ...], start: float, exc: BaseException | None
) -> None:
    now = env.clock.now()
    env.emit(
        CallCompleted(
            pipeline=env.name,
            strategy="pipeline",
            time=now,
            duration=now - start,
            outcome="success" if exc is None else _outcome(exc),
            error_type=_error_type(exc),
        ),
        listeners,
    )


def _timed_sync(inner: Callable[..., Any], env: Env) -> Callable[..., Any]:
    clock = env.clock
    name = env.name

    def call_step(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        listeners = env.listeners  # the same listeners see the start and the end
        start = clock.now()
        env.emit(CallStarted(pipeline=name, strategy="pipeline", time=start), listeners)
        try:
            result = inner(fn, args, kwargs)
        except BaseException as exc:  # reported, then re-raised untouched
            _completed(env, listeners, start, exc)
            raise
        _completed(env, listeners, start, None)
        return result

    return call_step


def _timed_async(inner: Callable[..., Awaitable[Any]], env: Env) -> Callable[..., Awaitable[Any]]:
    clock = env.clock
    name = env.name

    async def call_step(
        fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        listeners = env.listeners  # the same listeners see the start and the end
        start = clock.now()
        env.emit(CallStarted(pipeline=name, strategy="pipeline", time=start), listeners)
        try:
            result = await inner(fn, args, kwargs)
        except BaseException as exc:  # reported, then re-raised untouched
            _completed(env, listeners, start, exc)
            raise
        _completed(env, listeners, start, None)
        return result

    return call_step
