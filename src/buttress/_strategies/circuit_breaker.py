"""`CircuitBreaker`: stop calling a dependency that keeps failing, probe it, resume.

Flow design. The decisions live in the pure `buttress._state.circuit.CircuitState`; the
state lives in a store (`buttress.stores.base.CircuitStore`, in memory by default).
With the in-memory store, a closed breaker's successful call costs two attribute reads,
one ``try`` and one ``next()`` on a counter: no lock, no clock read (unless slow calls or
a time window are configured), no allocation. Every other path (a failure, a slow call,
a rejection, a half-open trial) takes the circuit's lock for its bookkeeping only; the
lock is never held across the protected call. With a shared store, each call asks the
store for permission and reports its outcome.

Counting: an outcome handled by ``on=`` is a failure; any other result is a success;
an exception that ``on=`` does not handle, and cancellation (`asyncio.CancelledError`,
trio's ``Cancelled``, `KeyboardInterrupt`, ...), is neither. A half-open trial that ends
without a verdict (cancelled, unhandled exception) gives its slot back for the next
caller, so the breaker can never be left half-open with a slot nobody holds; a trial
that hangs is bounded by ``half_open_max_duration``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Any, cast

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.context import CURRENT, Context, materialize
from .._core.env import Env
from .._core.gauges import register_gauge
from .._core.handle import Handle, HandleLike, compile_handle, on_exception
from .._core.invoke import ainvoke, invoke
from .._core.validate import check_count
from .._exceptions import (
    CircuitIsolatedError,
    CircuitOpenError,
    ConfigurationError,
    RejectedError,
    TimeoutRejectedError,
)
from .._state.circuit import STATE_NAMES, Admission, CircuitPolicy, CircuitSnapshot
from .._state.partitions import Partitions
from ..backoff import Backoff
from ..events import CallRejected, CircuitStateChanged
from ..stores.base import Circuit, CircuitAction, CircuitStore, FastCircuit
from ..typing import AsyncStep, SyncStep

__all__ = ["CircuitBreaker", "default_failure"]

_DEFAULT: Any = object()


def default_failure(exc: Exception) -> bool:
    """The default ``on=`` of `CircuitBreaker`: every `Exception` is a failure except a
    `RejectedError` that is not a timeout.

    Rejections by other strategies (a full bulkhead, a rate limit, an inner breaker that
    is open) are local decisions that say nothing about the dependency's health;
    `TimeoutRejectedError` (an inner `Timeout` expired) does, so it counts.
    """
    return not isinstance(exc, RejectedError) or isinstance(exc, TimeoutRejectedError)


_DEFAULT_ON = on_exception(default_failure)


class CircuitBreaker:
    """Reject calls to a dependency while it is failing; probe it; resume when healthy.

    States: ``closed`` (calls flow, outcomes are counted), ``open`` (calls are rejected
    with `CircuitOpenError` until the break ends), ``half_open`` (up to
    ``half_open_calls`` trial calls probe the dependency; everything else is rejected),
    ``isolated`` (held open by `isolate`, rejected with `CircuitIsolatedError`).

    Args:
        on: What counts as a failure: an exception type, a tuple, a predicate over
            `Outcome`, ``on_result(pred)``, ``on_exception(pred)``. Default: every
            `Exception` except `RejectedError`\\ s other than `TimeoutRejectedError`
            (see `default_failure`); results never count unless you add
            ``on_result``. Unhandled exceptions and cancellation count neither way.
        failure_ratio: Open when failures / calls in the window reach this ratio, in
            (0, 1] (default 0.5); ``None`` disables the ratio trip.
        window: Count window: the last ``window`` calls, int >= 1 (default 100 unless
            ``window_duration`` is given).
        window_duration: Time window in seconds (float or `timedelta`, > 0) split into
            ``window_buckets`` rolling buckets; excludes ``window``.
        window_buckets: Buckets of the time window, int >= 1 (default 10).
        min_throughput: Calls the window must hold before a ratio may open the breaker,
            int >= 1 and <= ``window`` (default ``min(20, window)``, or 20 for a time
            window).
        consecutive_failures: Open after this many failures in a row (int >= 1),
            whatever ``min_throughput``; ``None`` (default) disables it.
        slow_call_duration: Seconds after which a call counts as slow (> 0); ``None``
            (default) disables slow-call tracking and its two clock reads per call.
        slow_call_ratio: Open when slow calls / calls in the window reach this ratio, in
            (0, 1] (default 1.0; resilience4j's default too).
        break_duration: Seconds the breaker stays open, >= 0 (float or `timedelta`;
            default 5.0), or a `buttress.backoff` schedule (or ``f(opens) -> seconds``)
            evaluated at the number of consecutive opens, e.g.
            ``backoff.exponential(5, 2, cap=300, jitter="none")``.
        break_reset_after: Seconds closed after which the count of consecutive opens
            returns to zero, so the next break starts from the schedule's first value
            (>= 0, default 60.0).
        half_open_calls: Trial calls per half-open round, int >= 1 (default 1). Never
            more than this many are in flight, whatever the number of threads or tasks.
        half_open_successes: Healthy trials (succeeded, not slow) needed to close,
            1..``half_open_calls`` (default: all). The breaker reopens as soon as closing
            has become impossible.
        half_open_success_ratio: The same as a share of ``half_open_calls`` in (0, 1];
            excludes ``half_open_successes``.
        half_open_max_duration: Seconds a half-open round may keep a slot without an
            answer before the next caller reopens the breaker (> 0, default 60.0), so a
            hung trial cannot hold it half-open forever; ``None`` disables the bound.
        key: Per-key breakers: ``key(context) -> hashable`` (e.g. the host or tenant,
            read from a `Context` property); each key has an independent breaker.
            ``None`` (default): one breaker.
        max_keys: Most keys kept (LRU), int >= 1 (default 10,000); an evicted key starts
            fresh when it returns.
        store: A `buttress.stores.base.CircuitStore`; default: in memory.
        name: Strategy name for events, errors and metrics (default ``"circuit_breaker"``).

    A breaker object holds state: share it between pipelines to share the state; use
    it with one clock (the pipeline's; `state`, `metrics` and the manual controls read
    the clock of the pipeline it was last built into).

    Events: `CircuitStateChanged` on every transition (a manual one goes to every
    pipeline the breaker was built into), `CallRejected` for each rejection.

    Raises:
        ConfigurationError: Any setting out of range (ratios outside their range,
            ``window`` < 1, ``half_open_calls`` < 1, negative durations, ...).
    """

    __slots__ = (
        "__weakref__",
        "_all_isolated",
        "_cell",
        "_clock",
        "_envs",
        "_parts",
        "handle",
        "key",
        "local",
        "max_keys",
        "name",
        "policy",
        "store",
    )

    default_failure = staticmethod(default_failure)
    """The default ``on=`` predicate (see `default_failure`), to combine with your own:
    ``on=(on_exception(CircuitBreaker.default_failure), on_result(pred))``."""

    def __init__(
        self,
        *,
        on: HandleLike = _DEFAULT,
        failure_ratio: float | None = 0.5,
        window: int | None = None,
        window_duration: float | timedelta | None = None,
        window_buckets: int = 10,
        min_throughput: int | None = None,
        consecutive_failures: int | None = None,
        slow_call_duration: float | timedelta | None = None,
        slow_call_ratio: float = 1.0,
        break_duration: float | timedelta | Backoff | Callable[[int], float] = 5.0,
        break_reset_after: float | timedelta = 60.0,
        half_open_calls: int = 1,
        half_open_successes: int | None = None,
        half_open_success_ratio: float | None = None,
        half_open_max_duration: float | timedelta | None = 60.0,
        key: Callable[[Context], Hashable] | None = None,
        max_keys: int = 10_000,
        store: CircuitStore | None = None,
        name: str = "circuit_breaker",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("CircuitBreaker", "name", name, "a non-empty str")
        self.name = name
        self.handle: Handle = compile_handle(
            _DEFAULT_ON if on is _DEFAULT else on, "CircuitBreaker"
        )
        self.policy = CircuitPolicy(
            failure_ratio=failure_ratio,
            consecutive_failures=consecutive_failures,
            window=window,
            window_duration=window_duration,
            window_buckets=window_buckets,
            min_throughput=min_throughput,
            slow_call_duration=slow_call_duration,
            slow_call_ratio=slow_call_ratio,
            break_duration=break_duration,
            break_reset_after=break_reset_after,
            half_open_calls=half_open_calls,
            half_open_successes=half_open_successes,
            half_open_success_ratio=half_open_success_ratio,
            half_open_max_duration=half_open_max_duration,
        )
        if key is not None and not callable(key):
            raise ConfigurationError.invalid(
                "CircuitBreaker", "key", key, "a callable key(context) -> hashable, or None"
            )
        self.key = key
        self.max_keys = check_count("CircuitBreaker", "max_keys", max_keys)
        if store is None:
            from ..stores.memory import MemoryCircuitStore  # the default store (layer 4)

            store = MemoryCircuitStore()
        elif not callable(getattr(store, "circuit", None)):
            raise ConfigurationError.invalid(
                "CircuitBreaker", "store", store, "a CircuitStore (with .circuit(...)) or None"
            )
        self.store: CircuitStore = store
        self.local = bool(getattr(store, "local", False))
        self._all_isolated = False
        self._clock: Clock = SYSTEM_CLOCK
        self._envs: weakref.WeakSet[Env] = weakref.WeakSet()
        if key is None:
            self._cell: Circuit | None = store.circuit(name, None, self.policy)
            self._parts: Partitions[Hashable, Circuit] | None = None
        else:
            self._cell = None
            self._parts = Partitions(self._new_cell, self.max_keys)

    def _new_cell(self, key: Hashable) -> Circuit:
        cell = self.store.circuit(self.name, key, self.policy)
        if self._all_isolated:
            cell.transition("isolate", self._clock.now())
        return cell

    @property
    def _needs_context(self) -> bool:
        """Whether calls need an execution record of their own.

        Private protocol with `Pipeline`: only when a ``key=`` function reads the context.
        Admission alone never does, so a pipeline made only of admission strategies
        publishes no Context (see `Pipeline`).
        """
        return self.key is not None

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(on={self.handle.source!r}, policy={self.policy!r}, "
            f"key={self.key!r}, store={self.store!r}, name={self.name!r})"
        )

    # -- reading and manual control --------------------------------------------------------

    def _cell_for(self, key: Hashable | None, create: bool = True) -> Circuit | None:
        if self._parts is None:
            if key is not None:
                raise TypeError(f"circuit breaker {self.name!r} is not per-key; omit key=")
            return self._cell
        if key is None:
            raise TypeError(
                f"circuit breaker {self.name!r} is per-key: pass the key, "
                "e.g. state_of(key) / metrics_of(key)"
            )
        return self._parts.get(key) if create else self._parts.peek(key)

    @property
    def state(self) -> str:
        """The state name: ``"closed"``, ``"open"``, ``"half_open"`` or ``"isolated"``.

        An open breaker whose break has elapsed reads ``"half_open"``. Per-key breakers:
        use `state_of`.

        Raises:
            TypeError: The breaker is per-key.
        """
        return self.metrics.state

    @property
    def metrics(self) -> CircuitSnapshot:
        """A `CircuitSnapshot`: state, calls/failures/slow calls in the window and their
        ratios, consecutive failures, opens, ``retry_after``, half-open counters.

        Raises:
            TypeError: The breaker is per-key (use `metrics_of`).
        """
        cell = self._cell_for(None)
        assert cell is not None
        return cell.snapshot(self._clock.now())

    def state_of(self, key: Hashable) -> str:
        """The state name of ``key``'s breaker (``"closed"`` for an unknown key)."""
        return self.metrics_of(key).state

    def metrics_of(self, key: Hashable) -> CircuitSnapshot:
        """The `CircuitSnapshot` of ``key``'s breaker (created closed if unknown)."""
        cell = self._cell_for(key)
        assert cell is not None
        return cell.snapshot(self._clock.now())

    def keys(self) -> list[Hashable]:
        """The keys currently held by a per-key breaker, least recently used first."""
        if self._parts is None:
            return []
        return [k for k, _ in self._parts.items()]

    def isolate(self, key: Hashable | None = None) -> None:
        """Hold the breaker open (`CircuitIsolatedError`) until `close` or `reset`.

        For a per-key breaker without ``key``: every key, including keys seen later.
        """
        self._manual("isolate", key)

    def close(self, key: Hashable | None = None) -> None:
        """Close the breaker: clear the window and the failure streak (the count of
        consecutive opens is kept until ``break_reset_after`` passes closed).

        For a per-key breaker without ``key``: every key, and ends a global isolation.
        """
        self._manual("close", key)

    def reset(self, key: Hashable | None = None) -> None:
        """Return to the initial state: closed, empty window, no open history.

        For a per-key breaker without ``key``: every key, and ends a global isolation.
        """
        self._manual("reset", key)

    def _manual(self, action: CircuitAction, key: Hashable | None) -> None:
        now = self._clock.now()
        targets: list[tuple[Hashable | None, Circuit]]
        if self._parts is not None and key is None:
            self._all_isolated = action == "isolate"
            targets = list(self._parts.items())
        else:
            cell = self._cell_for(key)
            assert cell is not None
            targets = [(key, cell)]
        for k, cell in targets:
            snap = cell.transition(action, now)
            if snap.previous_state is not None:
                for env in list(self._envs):
                    if env.listeners:
                        self._emit_change(env, k, snap.previous_state, snap.state, snap, now)

    # -- events and errors ------------------------------------------------------------------

    def _emit_change(
        self,
        env: Env,
        key: Hashable | None,
        previous: str,
        state: str,
        snap: CircuitSnapshot | Admission | None,
        now: float,
    ) -> None:
        ratio: float | None = None
        brk: float | None = None
        if snap is not None:
            ratio = snap.failure_ratio
            brk = snap.break_duration if state == "open" else None
        env.emit(
            CircuitStateChanged(
                pipeline=env.name,
                strategy=self.name,
                time=now,
                from_state=previous,
                to_state=state,
                key=None if key is None else str(key),
                failure_ratio=ratio,
                break_duration=brk,
            )
        )

    def _rejected(
        self, env: Env, key: Hashable | None, admission: Admission, now: float
    ) -> RejectedError:
        if admission.previous_state is not None and env.listeners:
            self._emit_change(env, key, admission.previous_state, admission.state, admission, now)
        isolated = admission.state == "isolated"
        retry_after = admission.retry_after
        if env.listeners:
            env.emit(
                CallRejected(
                    pipeline=env.name,
                    strategy=self.name,
                    time=now,
                    reason="circuit_isolated" if isolated else "circuit_open",
                    retry_after=retry_after,
                    key=None if key is None else str(key),
                )
            )
        where = self.name if key is None else f"{self.name}[{key!r}]"
        if isolated:
            return CircuitIsolatedError(
                f"{env.name}: circuit {where} is isolated", strategy=self.name
            )
        if retry_after is None:
            detail = "is half-open and every trial slot is taken"
        else:
            detail = f"is open; retry after {retry_after:.3f}s"
        return CircuitOpenError(
            f"{env.name}: circuit {where} {detail}", strategy=self.name, retry_after=retry_after
        )

    def _recorded(
        self,
        env: Env,
        key: Hashable | None,
        cell: Circuit,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
    ) -> None:
        """Record an outcome through the store's generic operation and emit on change."""
        if self.local:
            previous = cast(FastCircuit, cell).record_fast(token, failed, duration, now, env.random)
            if previous is not None and env.listeners:
                snap = cell.snapshot(now)
                self._emit_change(env, key, previous, snap.state, snap, now)
            return
        snap = cell.record(token, failed, duration, now, env.random)
        if snap.previous_state is not None and env.listeners:
            self._emit_change(env, key, snap.previous_state, snap.state, snap, now)

    def _bind(self, env: Env) -> None:
        self._clock = env.clock
        self._envs.add(env)
        if self._parts is None:
            register_gauge(self, env.name, env.clock, _read_state)

    def _key_of(self) -> Hashable:
        record = CURRENT.get()
        if record is None:  # pragma: no cover - a strategy always runs inside a pipeline
            raise RuntimeError("CircuitBreaker with key= must run inside a pipeline")
        assert self.key is not None
        return self.key(materialize(record))

    # -- flows ------------------------------------------------------------------------------

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        self._bind(env)
        if not self.local:
            return self._build_sync_generic(next_step, env)
        decide_exc = self.handle.exception
        decide_res = self.handle.result if self.handle.checks_results else None
        policy = self.policy
        slow_s = policy.slow_call_duration
        timed = slow_s is not None
        windowed = policy.window_duration is not None
        now = env.clock.now
        single = self._cell
        parts = self._parts
        key_of = self._key_of
        direct = next_step is invoke
        recorded = self._recorded
        admit = self._admit_sync

        if single is not None and not timed and not windowed and decide_res is None:
            cell: Any = single
            count = cell.count_success

            # The common case, specialised: count window, no slow calls, no result checks.
            def breaker_step(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                gen = cell.closed_gen
                if gen < 0:
                    return admit(env, next_step, fn, args, kwargs, cell, None)
                try:
                    result = fn(*args, **kwargs) if direct else next_step(fn, args, kwargs)
                except Exception as exc:
                    if decide_exc(exc) is not False:
                        recorded(env, None, cell, gen, True, None, now())
                    raise
                if cell.closed_gen == gen:
                    count()
                return result

            return breaker_step

        def breaker_step_general(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key = None if parts is None else key_of()
            cell: Any = single if parts is None else parts.get(key)
            gen = cell.closed_gen
            if gen < 0:
                return admit(env, next_step, fn, args, kwargs, cell, key)
            start = now() if timed else 0.0
            try:
                result = fn(*args, **kwargs) if direct else next_step(fn, args, kwargs)
            except Exception as exc:
                if decide_exc(exc) is not False:
                    end = now()
                    recorded(env, key, cell, gen, True, end - start if timed else None, end)
                raise
            if decide_res is not None and decide_res(result) is not False:
                end = now()
                recorded(env, key, cell, gen, True, end - start if timed else None, end)
                return result
            if timed or windowed:
                end = now()
                if (
                    cell.closed_gen == gen
                    and end < cell.batch_until
                    and (slow_s is None or end - start <= slow_s)
                ):
                    count_ok = cell.count_success
                    count_ok()
                else:
                    recorded(env, key, cell, gen, False, end - start if timed else None, end)
            elif cell.closed_gen == gen:
                cell.count_success()
            return result

        return breaker_step_general

    def _admit_sync(
        self,
        env: Env,
        next_step: SyncStep,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        cell: Circuit,
        key: Hashable | None,
    ) -> Any:
        """Every call that is not a closed breaker's fast path: ask, call, report."""
        clock = env.clock
        start = clock.now()
        admission = cell.try_acquire(start, env.random)
        if not admission.permitted:
            raise self._rejected(env, key, admission, start)
        if admission.previous_state is not None and env.listeners:
            self._emit_change(env, key, admission.previous_state, admission.state, admission, start)
        token = admission.token
        settled = not admission.trial  # a trial's slot must be recorded or released
        try:
            try:
                result = next_step(fn, args, kwargs)
            except Exception as exc:
                end = clock.now()
                if self.handle.exception(exc) is not False:
                    settled = True
                    self._recorded(env, key, cell, token, True, end - start, end)
                raise
            end = clock.now()
            failed = self.handle.checks_results and self.handle.result(result) is not False
            settled = True
            self._recorded(env, key, cell, token, failed, end - start, end)
            return result
        finally:
            if not settled:
                # no verdict (unhandled exception, cancellation, a raising predicate):
                # give the trial slot back for the next caller
                cell.release(token, clock.now())

    def _build_sync_generic(self, next_step: SyncStep, env: Env) -> SyncStep:
        parts = self._parts
        single = self._cell
        key_of = self._key_of
        admit = self._admit_sync

        def breaker_step_store(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key = None if parts is None else key_of()
            cell = single if parts is None else parts.get(key)
            assert cell is not None
            return admit(env, next_step, fn, args, kwargs, cell, key)

        return breaker_step_store

    def _fusable(self, publish: bool) -> bool:
        """Whether the decorator may fuse with this breaker (see `_bind_sync`).

        Only the plain form (in memory, no ``key=``, a count window, no slow-call or result
        checks): the other forms read the clock or run checks per call, and fusing them
        would repeat the general step's logic for one frame (about 30 ns) less; they run
        as the generic step under the pipeline's transparent wrapper.
        """
        policy = self.policy
        return not (
            publish
            or not self.local
            or self._cell is None
            or policy.slow_call_duration is not None
            or policy.window_duration is not None
            or self.handle.checks_results
        )

    def _bind_sync(
        self,
        fn: Callable[..., Any],
        next_step: SyncStep,
        env: Env,
        generic: Callable[[tuple[Any, ...], dict[str, Any]], Any],
        publish: bool = True,
    ) -> Callable[..., Any] | None:
        """The decorator form of the specialised `build_sync` step, when outermost.

        Private protocol with `Pipeline.__call__` (as `Retry._bind_sync`): the returned
        function *is* the decorated function, one Python frame less per call. Only when the
        pipeline publishes no Context (``publish`` false: admission strategies only) and
        for the plain form (see `_fusable`); ``None`` otherwise, and the generic path
        serves. With listeners installed it defers to ``generic`` (which adds call
        telemetry).
        """
        if not self._fusable(publish):
            return None
        cell: Any = self._cell
        count = cell.count_success
        decide_exc = self.handle.exception
        recorded = self._recorded
        admit = self._admit_sync
        now = env.clock.now
        direct = next_step is invoke

        def bound(*args: Any, **kwargs: Any) -> Any:
            if env.listeners:
                return generic(args, kwargs)
            gen = cell.closed_gen
            if gen < 0:
                return admit(env, next_step, fn, args, kwargs, cell, None)
            try:
                result = fn(*args, **kwargs) if direct else next_step(fn, args, kwargs)
            except Exception as exc:
                if decide_exc(exc) is not False:
                    recorded(env, None, cell, gen, True, None, now())
                raise
            if cell.closed_gen == gen:
                count()
            return result

        return bound

    def _bind_async(
        self,
        fn: Callable[..., Any],
        next_step: AsyncStep,
        env: Env,
        generic: Callable[[tuple[Any, ...], dict[str, Any]], Any],
        publish: bool = True,
    ) -> Callable[..., Any] | None:
        """The async twin of `_bind_sync` (same conditions)."""
        if not self._fusable(publish):
            return None
        cell: Any = self._cell
        count = cell.count_success
        decide_exc = self.handle.exception
        recorded = self._recorded
        admit = self._admit_async
        now = env.clock.now
        direct = next_step is ainvoke

        async def bound(*args: Any, **kwargs: Any) -> Any:
            if env.listeners:
                return await generic(args, kwargs)
            gen = cell.closed_gen
            if gen < 0:
                return await admit(env, next_step, fn, args, kwargs, cell, None)
            try:
                result = await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
            except Exception as exc:
                if decide_exc(exc) is not False:
                    recorded(env, None, cell, gen, True, None, now())
                raise
            if cell.closed_gen == gen:
                count()
            return result

        return bound

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        self._bind(env)
        decide_exc = self.handle.exception
        decide_res = self.handle.result if self.handle.checks_results else None
        policy = self.policy
        slow_s = policy.slow_call_duration
        timed = slow_s is not None
        windowed = policy.window_duration is not None
        now = env.clock.now
        single = self._cell
        parts = self._parts
        key_of = self._key_of
        direct = next_step is ainvoke
        recorded = self._recorded
        admit = self._admit_async
        local = self.local

        if not local:

            async def breaker_step_store(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                key = None if parts is None else key_of()
                cell = single if parts is None else parts.get(key)
                assert cell is not None
                return await admit(env, next_step, fn, args, kwargs, cell, key)

            return breaker_step_store

        if single is not None and not timed and not windowed and decide_res is None:
            cell: Any = single
            count = cell.count_success

            async def breaker_step(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                gen = cell.closed_gen
                if gen < 0:
                    return await admit(env, next_step, fn, args, kwargs, cell, None)
                try:
                    result = await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
                except Exception as exc:
                    if decide_exc(exc) is not False:
                        recorded(env, None, cell, gen, True, None, now())
                    raise
                if cell.closed_gen == gen:
                    count()
                return result

            return breaker_step

        async def breaker_step_general(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key = None if parts is None else key_of()
            cell: Any = single if parts is None else parts.get(key)
            gen = cell.closed_gen
            if gen < 0:
                return await admit(env, next_step, fn, args, kwargs, cell, key)
            start = now() if timed else 0.0
            try:
                result = await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))
            except Exception as exc:
                if decide_exc(exc) is not False:
                    end = now()
                    recorded(env, key, cell, gen, True, end - start if timed else None, end)
                raise
            if decide_res is not None and decide_res(result) is not False:
                end = now()
                recorded(env, key, cell, gen, True, end - start if timed else None, end)
                return result
            if timed or windowed:
                end = now()
                if (
                    cell.closed_gen == gen
                    and end < cell.batch_until
                    and (slow_s is None or end - start <= slow_s)
                ):
                    count_ok = cell.count_success
                    count_ok()
                else:
                    recorded(env, key, cell, gen, False, end - start if timed else None, end)
            elif cell.closed_gen == gen:
                cell.count_success()
            return result

        return breaker_step_general

    async def _admit_async(
        self,
        env: Env,
        next_step: AsyncStep,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        cell: Circuit,
        key: Hashable | None,
    ) -> Any:
        """Async twin of `_admit_sync` (awaits the store only when it does I/O)."""
        clock = env.clock
        local = self.local
        start = clock.now()
        if local:
            admission = cell.try_acquire(start, env.random)
        else:
            admission = await cell.atry_acquire(start, env.random)
        if not admission.permitted:
            raise self._rejected(env, key, admission, start)
        if admission.previous_state is not None and env.listeners:
            self._emit_change(env, key, admission.previous_state, admission.state, admission, start)
        token = admission.token
        settled = not admission.trial
        try:
            try:
                result = await next_step(fn, args, kwargs)
            except Exception as exc:
                end = clock.now()
                if self.handle.exception(exc) is not False:
                    settled = True
                    await self._arecorded(env, key, cell, token, True, end - start, end)
                elif not local:
                    settled = True
                    await cell.arelease(token, end)
                raise
            end = clock.now()
            failed = self.handle.checks_results and self.handle.result(result) is not False
            settled = True
            await self._arecorded(env, key, cell, token, failed, end - start, end)
            return result
        finally:
            if not settled:
                # no verdict: unhandled exception, cancellation, a raising predicate. No
                # await here (the task may be being cancelled): a store doing I/O gets the
                # synchronous release, which must not block for long.
                cell.release(token, clock.now())

    async def _arecorded(
        self,
        env: Env,
        key: Hashable | None,
        cell: Circuit,
        token: int,
        failed: bool,
        duration: float | None,
        now: float,
    ) -> None:
        if self.local:
            self._recorded(env, key, cell, token, failed, duration, now)
            return
        snap = await cell.arecord(token, failed, duration, now, env.random)
        if snap.previous_state is not None and env.listeners:
            self._emit_change(env, key, snap.previous_state, snap.state, snap, now)


def _read_state(breaker: CircuitBreaker, now: float) -> list[tuple[str, float, dict[str, str]]]:
    """Gauge reader: ``buttress.circuit.state``, one-hot over the four states (unkeyed
    breakers only: per-key breakers would make one series per key)."""
    cell = breaker._cell
    assert cell is not None
    state = cell.snapshot(now).state
    return [
        (
            "buttress.circuit.state",
            1.0 if name == state else 0.0,
            {"strategy": breaker.name, "state": name},
        )
        for name in STATE_NAMES
    ]
