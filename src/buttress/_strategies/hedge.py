"""`Hedge`: start backup attempts when the first is slow; the first accepted outcome wins.

Dean and Barroso, "The Tail at Scale" (CACM 2013): send a second copy of a request once
the first has been outstanding longer than (about) the p95 latency, use whichever answers
first and cancel the other. Extra load is about 5 % at p95, and the tail shrinks sharply.

Flow (shared by sync and async through `_Call`; waiting goes through the runtime's
``race()`` primitive, see `buttress._runtime.base.AsyncRace`):

1. The primary attempt starts at once, in its own child `Context` record.
2. Each time ``delay`` passes without an accepted outcome, one more attempt starts (at
   most ``max_hedged``), each asking the budget first when one is configured.
3. An attempt that fails with an outcome handled by ``on=`` (not accepted) triggers the
   next hedge immediately, without waiting for the delay (as gRPC hedging does).
4. The first accepted outcome ends the call; the attempts still running are cancelled
   (asyncio, trio) or abandoned (sync threads). When every attempt failed, the
   **primary's** outcome is returned or raised (never an exception group).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .._core.context import CTX, CURRENT, DEADLINE, Record, materialize
from .._core.env import Env
from .._core.handle import Handle, HandleLike, compile_handle
from .._core.invoke import ainvoke
from .._core.validate import check_count, check_duration, check_ratio
from .._exceptions import ConfigurationError, TimeoutRejectedError
from .._state.budget import RetryBudget
from .._state.latency import LatencyTracker
from ..events import HedgeStarted, RetryBudgetExhausted
from ..typing import AsyncStep, SyncStep

__all__ = ["Hedge", "PercentileDelay"]


class PercentileDelay:
    """An adaptive hedging delay: a percentile of recently observed attempt latencies.

    Build it with `Hedge.percentile`. Every finished attempt of every call through the
    `Hedge` records its latency; an attempt cancelled or abandoned as a loser records the
    time it had been running when it lost (a lower bound, which still counts it correctly
    as slower than the delay, so hedging does not bias the estimate downwards).

    Args:
        q: Quantile as a ratio in (0, 1) (0.95 hedges the slowest 5 %).
        window: Samples kept, an int >= 1 (default 1000; memory about 40 bytes each).
        min_samples: Samples needed before the percentile is trusted, an int >= 1
            (default 20).
        initial: Delay in seconds used until ``min_samples`` samples exist, or ``None``
            (default): no timed hedge until then (failed attempts still trigger hedges).
        min_delay: Lower clamp in seconds, >= 0 (default 0).
        max_delay: Upper clamp in seconds, or ``None`` (default) for none.
        max_age: Seconds after which a sample is forgotten, or ``None`` (default).

    Attributes:
        tracker: The `LatencyTracker` (pure, thread-safe) holding the samples.

    Raises:
        ConfigurationError: Any value outside its range, or ``max_delay < min_delay``.
    """

    __slots__ = ("initial", "max_delay", "min_delay", "min_samples", "q", "tracker")

    def __init__(
        self,
        q: float,
        *,
        window: int = 1000,
        min_samples: int = 20,
        initial: float | timedelta | None = None,
        min_delay: float | timedelta = 0.0,
        max_delay: float | timedelta | None = None,
        max_age: float | timedelta | None = None,
    ) -> None:
        owner = "Hedge.percentile"
        self.q = check_ratio(owner, "q", q, low_open=True, high_open=True)
        self.min_samples = check_count(owner, "min_samples", min_samples)
        self.initial = None if initial is None else check_duration(owner, "initial", initial)
        self.min_delay = check_duration(owner, "min_delay", min_delay)
        self.max_delay = (
            None if max_delay is None else check_duration(owner, "max_delay", max_delay)
        )
        if self.max_delay is not None and self.max_delay < self.min_delay:
            raise ConfigurationError.invalid(
                owner, "max_delay", max_delay, f"a duration >= min_delay ({self.min_delay:g}s)"
            )
        max_age_s = (
            None
            if max_age is None
            else check_duration(owner, "max_age", max_age, strictly_positive=True)
        )
        self.tracker = LatencyTracker(check_count(owner, "window", window), max_age=max_age_s)

    def delay(self, now: float) -> float | None:
        """The hedging delay in seconds at ``now``, or ``None`` for "no timed hedge"."""
        value = self.tracker.percentile(self.q, now, min_samples=self.min_samples)
        if value is None:
            value = self.initial
            if value is None:
                return None
        if value < self.min_delay:
            return self.min_delay
        if self.max_delay is not None and value > self.max_delay:
            return self.max_delay
        return value

    def __repr__(self) -> str:
        return (
            f"Hedge.percentile({self.q}, window={self.tracker.window}, "
            f"min_samples={self.min_samples}, initial={self.initial!r}, "
            f"min_delay={self.min_delay!r}, max_delay={self.max_delay!r})"
        )


class Hedge:
    """Start up to ``max_hedged`` extra attempts when the first is slow; first accepted wins.

    Args:
        delay: When to start each extra attempt, counted from the start of the previous
            one: seconds (float or `timedelta`, >= 0; ``0`` starts every attempt at once;
            ``math.inf`` hedges only after a failure), or an adaptive
            ``Hedge.percentile(q, ...)`` (see `PercentileDelay`). Required.
        max_hedged: Extra attempts at most, an int >= 1 (default 1, so at most 2 calls).
        on: Outcomes that are **not accepted**: they do not end the call, and they start
            the next hedge at once (without waiting for ``delay``). Default `Exception`:
            any exception. Any ``on=`` form works (types, ``on_result``, predicates); an
            exception outside ``on`` is accepted and raised as the call's outcome.
        budget: A `RetryBudget` each hedge withdraws from (``try_withdraw(now)``); a
            refusal stops hedging for the call and emits `RetryBudgetExhausted`. ``None``
            (default): no budget. Each call is also counted as one request in it (see
            the docs page when sharing one budget with a `Retry`).
        name: Strategy name for events (default ``"hedge"``).

    Outcome: the first accepted outcome, whichever attempt produced it. When no attempt
    is accepted, the **primary's** outcome (its exception, with a note, or its result).
    A cancellation or other `BaseException` from an attempt ends the call at once and
    propagates.

    Each attempt runs in its own child `Context`: the primary keeps the enclosing attempt
    number, the k-th hedge adds k; all share the idempotency key and see the enclosing
    properties and deadline. Properties set by the winning attempt are copied to the
    enclosing context.

    asyncio / trio: one task per attempt; the losers are cancelled and awaited before the
    call returns. Sync: attempts run on shared daemon worker threads; losers are
    **abandoned** (they run to completion in the background, their results dropped), and
    their context's deadline is set to "now" so code that checks
    ``current_context().remaining()`` can stop early. The function must be thread-safe,
    must not mutate its arguments (every attempt gets the same objects), and should be
    idempotent. A sync call also stops waiting at the enclosing context deadline and
    raises `TimeoutRejectedError`.

    Events: `HedgeStarted` per extra attempt; `RetryBudgetExhausted` on a refusal.

    Raises:
        ConfigurationError: Invalid ``delay``, ``max_hedged`` < 1, invalid ``on``, a
            ``budget`` that is not a `RetryBudget`, empty ``name``.
    """

    __slots__ = ("budget", "delay", "handle", "max_hedged", "name")

    percentile = PercentileDelay
    """Build an adaptive delay: ``Hedge(delay=Hedge.percentile(0.95))``."""

    def __init__(
        self,
        *,
        delay: float | timedelta | PercentileDelay,
        max_hedged: int = 1,
        on: HandleLike = Exception,
        budget: RetryBudget | None = None,
        name: str = "hedge",
    ) -> None:
        if isinstance(delay, PercentileDelay):
            self.delay: float | PercentileDelay = delay
        else:
            self.delay = check_duration("Hedge", "delay", delay, allow_inf=True)
        self.max_hedged = check_count("Hedge", "max_hedged", max_hedged)
        self.handle: Handle = compile_handle(on, "Hedge")
        if budget is not None and not isinstance(budget, RetryBudget):
            raise ConfigurationError.invalid(
                "Hedge", "budget", budget, "a buttress.RetryBudget or None"
            )
        self.budget = budget
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("Hedge", "name", name, "a non-empty str")
        self.name = name

    def __repr__(self) -> str:
        return (
            f"Hedge(delay={self.delay!r}, max_hedged={self.max_hedged}, "
            f"on={self.handle.source!r}, budget={self.budget!r}, name={self.name!r})"
        )

    # -- flows ---------------------------------------------------------------------------

    def build_sync(self, next_step: SyncStep, env: Env) -> SyncStep:
        cv = CURRENT
        cv_set = cv.set

        def hedge_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            call = _Call(self, env, cv.get(), sync=True)

            def make(record: Record) -> Callable[[], Any]:
                def attempt() -> Any:
                    cv_set(record)  # in the worker's private copy of the context
                    return next_step(fn, args, kwargs)

                return attempt

            with env.sync_runtime().race() as race:
                try:
                    call.launch(race, make, call.start)
                    while not call.decided:
                        item = race.wait(call.wait_until())
                        if item is None:
                            call.on_timer(race, make)
                        else:
                            call.on_finished(item)
                except Exception as exc:  # a raising predicate or budget: the call's outcome
                    call.fail(exc)
                finally:
                    call.abandon()
            try:
                return call.finish()
            finally:
                # a failed call's exception has this frame in its traceback, and the call
                # object holds that exception: no frame -> call -> exception -> frame cycle
                call = None  # type: ignore[assignment]

        return hedge_step

    def build_async(self, next_step: AsyncStep, env: Env) -> AsyncStep:
        cv = CURRENT
        cv_set = cv.set
        direct = next_step is ainvoke

        async def hedge_step(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            call = _Call(self, env, cv.get(), sync=False)

            def make(record: Record) -> Callable[[], Any]:
                async def attempt() -> Any:
                    cv_set(record)  # in the attempt task's own copy of the context
                    return await (fn(*args, **kwargs) if direct else next_step(fn, args, kwargs))

                return attempt

            async with env.async_runtime().race() as race:
                try:
                    call.launch(race, make, call.start)
                    while not call.decided:
                        item = await race.wait(call.next_at)
                        if item is None:
                            call.on_timer(race, make)
                        else:
                            call.on_finished(item)
                except Exception as exc:  # a raising predicate or budget: the call's outcome
                    call.fail(exc)
            try:
                return call.finish()
            finally:
                # a failed call's exception has this frame in its traceback, and the call
                # object holds that exception: no frame -> call -> exception -> frame cycle
                call = None  # type: ignore[assignment]

        return hedge_step


def _next_at(delay: float | PercentileDelay, now: float) -> float | None:
    """When the next timed hedge starts, or ``None`` for no timed hedge."""
    seconds = delay if isinstance(delay, float) else delay.delay(now)
    if seconds is None or seconds == math.inf:
        return None
    return now + seconds


class _Call:
    """Per-call hedging state, shared by the sync and async loops (decisions only)."""

    __slots__ = (
        "all_failed",
        "deadline",
        "decided",
        "env",
        "finished",
        "hedges_left",
        "next_at",
        "parent",
        "primary",
        "records",
        "running",
        "spec",
        "start",
        "starts",
        "sync",
        "winner",
    )

    def __init__(self, spec: Hedge, env: Env, parent: Record | None, *, sync: bool) -> None:
        self.spec = spec
        self.env = env
        self.parent = parent
        self.sync = sync
        now = self.start = env.clock.now()
        self.next_at: float | None = _next_at(spec.delay, now)
        self.deadline: float | None = parent[DEADLINE] if parent is not None else None
        self.hedges_left = spec.max_hedged
        self.records: list[Record] = []
        self.starts: list[float] = []
        self.finished: list[bool] = []
        self.running = 0
        self.decided = False
        self.all_failed = False
        self.primary: tuple[Any, BaseException | None] | None = None
        self.winner: tuple[int, Any, BaseException | None] | None = None

    # -- attempts --------------------------------------------------------------------------

    def _child(self, k: int) -> Record:
        parent = self.parent
        record: Record = [self.env, parent, None, self.deadline]
        parent_ctx = parent[CTX] if parent is not None else None
        if k or parent_ctx is not None:
            ctx = materialize(record)
            ctx.attempt = (parent_ctx.attempt if parent_ctx is not None else 1) + k
        return record

    def launch(self, race: Any, make: Callable[[Record], Callable[[], Any]], now: float) -> None:
        k = len(self.records)
        record = self._child(k)
        self.records.append(record)
        self.starts.append(now)
        self.finished.append(False)
        self.running += 1
        race.start(make(record))

    def wait_until(self) -> float | None:
        """Sync only: the next hedge time or the enclosing deadline, whichever is first."""
        until = self.next_at
        deadline = self.deadline
        if deadline is not None and (until is None or deadline < until):
            return deadline
        return until

    def on_timer(self, race: Any, make: Callable[[Record], Callable[[], Any]]) -> None:
        env = self.env
        spec = self.spec
        now = env.clock.now()
        if self.sync and self.deadline is not None and now >= self.deadline:
            self._decide(
                -1,
                None,
                TimeoutRejectedError(
                    f"{env.name}: the deadline passed while hedging ({spec.name})",
                    strategy=spec.name,
                ),
            )
            return
        if self.next_at is None or now < self.next_at:
            return  # woken early (a clock moved oddly): wait again
        if self.hedges_left <= 0:
            self.next_at = None
            return
        budget = spec.budget
        if budget is not None and not budget.try_withdraw(now):
            self.hedges_left = 0
            self.next_at = None
            if env.listeners:
                env.emit(
                    RetryBudgetExhausted(
                        pipeline=env.name,
                        strategy=spec.name,
                        time=now,
                        attempt=len(self.records) + 1,
                        budget=budget.name,
                    )
                )
            if self.running == 0:
                self._all_failed()
            return
        self.hedges_left -= 1
        hedge = len(self.records)
        self.launch(race, make, now)
        self.next_at = _next_at(spec.delay, now) if self.hedges_left > 0 else None
        if env.listeners:
            env.emit(
                HedgeStarted(
                    pipeline=env.name,
                    strategy=spec.name,
                    time=now,
                    hedge=hedge,
                    delay=now - self.start,
                )
            )

    def on_finished(self, item: tuple[int, Any, BaseException | None]) -> None:
        index, value, error = item
        self.running -= 1
        self.finished[index] = True
        spec = self.spec
        delay = spec.delay
        now: float | None = None
        if not isinstance(delay, float):
            now = self.env.clock.now()
            delay.tracker.record(now, now - self.starts[index])
        handle = spec.handle
        if error is None:
            if not handle.checks_results or handle.result(value) is False:
                self._decide(index, value, None)
                return
        elif not isinstance(error, Exception) or handle.exception(error) is False:
            self._decide(index, value, error)
            return
        # not accepted
        if index == 0:
            self.primary = (value, error)
        if self.hedges_left > 0:
            self.next_at = now if now is not None else self.env.clock.now()
        elif self.running == 0:
            self._all_failed()

    def _all_failed(self) -> None:
        primary = self.primary
        assert primary is not None  # the primary finished (running == 0)
        self.all_failed = True
        self._decide(0, primary[0], primary[1])

    def _decide(self, index: int, value: Any, error: BaseException | None) -> None:
        self.winner = (index, value, error)
        self.decided = True

    def fail(self, exc: Exception) -> None:
        self._decide(-1, None, exc)

    def abandon(self) -> None:
        """Sync: tell abandoned attempts their time is up (their context deadline = now)."""
        if self.running:
            now = self.env.clock.now()
            for record, done in zip(self.records, self.finished):
                if not done:
                    record[DEADLINE] = now

    # -- result ----------------------------------------------------------------------------

    def finish(self) -> Any:
        spec = self.spec
        delay = spec.delay
        if self.running and not isinstance(delay, float):
            now = self.env.clock.now()
            for start, done in zip(self.starts, self.finished):
                if not done:  # censored: slower than this, at least
                    delay.tracker.record(now, now - start)
        winner = self.winner
        assert winner is not None
        self.winner = self.primary = None  # the call object keeps no outcome (no cycles)
        index, value, error = winner
        budget = spec.budget
        accepted = not self.all_failed and error is None
        if budget is not None:
            hook = budget.on_first_success if accepted else budget.on_first_failure
            if hook is not None:
                hook()
        if index >= 0:
            ctx = self.records[index][CTX]
            if ctx is not None and ctx._props:
                parent = self.parent
                if parent is not None:
                    target = materialize(parent)
                    for key, item in ctx._props.items():
                        target.set(key, item)
        if error is not None:
            if self.all_failed and isinstance(error, Exception):
                error.add_note(
                    f"buttress: Hedge {spec.name!r}: all {len(self.records)} attempt(s) failed; "
                    "this is the primary attempt's exception"
                )
            try:
                raise error
            finally:
                error = winner = None  # no frame -> exception -> traceback -> frame cycle
        return value
