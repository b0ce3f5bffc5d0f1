"""The lab's engine: a deterministic discrete-event scheduler of coroutines.

Tasks are plain coroutines (``async def``) stepped by `Scheduler`. A task suspends by
awaiting one of three things, and the scheduler resumes it later:

* `sleep` (a ``float`` yielded to the scheduler): a timer on the heap;
* a `Future`: resumed when someone resolves it;
* a `Timed` wait: a `Future` with a deadline, resumed by whichever comes first.

When no task can run, the virtual clock jumps to the earliest timer. Nothing here reads
the wall clock or draws from a global random source, so the same inputs replay exactly.

Each task runs in its own copy of a base `contextvars.Context` in which
`buttress._runtime.detect.RUNTIME_OVERRIDE` is set to a `SimRuntime`: every
`Pipeline.acall` made by a task detects the simulator, and the strategies (`Retry`,
`Timeout`, ...) sleep and set deadlines in virtual time, unchanged.

Design notes (measured on the 2-core reference machine):

* A yielded ``float`` is a sleep: no allocation per sleep besides the heap entry.
* Every resume bumps the task's *token*; a wake-up carries the token it was issued for,
  so when two sources may wake one suspension (a future and its timeout, a deadline's
  cancellation and a reply) the loser is skipped in O(1) instead of being removed.
* Timers are ``(when, seq, fn, arg)`` tuples on one binary heap; ``seq`` makes ties
  deterministic (FIFO in order of scheduling).
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import math
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from .._runtime.detect import RUNTIME_OVERRIDE

__all__ = [
    "Cancelled",
    "Future",
    "STALL_EVENTS",
    "Scheduler",
    "SimClock",
    "SimulationStalled",
    "SimRuntime",
    "Task",
    "Timed",
    "sleep",
]


class Cancelled(BaseException):
    """A simulated task was cancelled (the simulator's ``asyncio.CancelledError``).

    Like every cancellation it derives from `BaseException`, so strategies never retry,
    fall back on or count it.
    """


STALL_EVENTS = 1_000_000
"""Timer events the scheduler runs at one virtual instant before it gives up (a livelock).

A healthy run at its busiest handles a few thousand events per instant (a burst of
arrivals, a fan-out, every waiter of a released lock); a million means something
re-schedules itself with no delay and the clock can never reach the end of the run."""


class SimulationStalled(BaseException):
    """The virtual clock stopped advancing: the run is livelocked.

    Derives from `BaseException` so that no strategy (and no `except Exception` in a
    simulated task) swallows it: it stops the whole run.

    Attributes:
        at: Virtual time (seconds) at which the clock stuck.
        events: Events (or requests) run at that instant before giving up.
    """

    def __init__(self, at: float, events: int, what: str = "events") -> None:
        self.at = at
        self.events = events
        super().__init__(
            f"the simulation stalled at t={at:g}s: {events} {what} without the virtual "
            "clock advancing (something retries or re-issues calls with no delay)"
        )


class SimClock:
    """The virtual clock: ``now()`` reads the scheduler's time in seconds.

    ``sleep()`` (the blocking sleep of sync pipelines) is not supported inside the
    simulator: a blocking call would stop every simulated task.
    """

    __slots__ = ("t",)

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        """Virtual time in seconds since the start of the run."""
        return self.t

    def sleep(self, seconds: float) -> None:
        """Not available: simulated pipelines are called with ``acall``.

        Raises:
            RuntimeError: Always.
        """
        raise RuntimeError(
            "the lab runs pipelines asynchronously (Pipeline.acall); a blocking sleep "
            "cannot run in virtual time"
        )

    def __repr__(self) -> str:
        return f"SimClock(t={self.t!r})"


class Task:
    """One simulated coroutine."""

    __slots__ = ("cancel_entry", "coro", "ctx", "done", "exception", "on_done", "result", "token")

    def __init__(self, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context) -> None:
        self.coro = coro
        self.ctx = ctx
        self.token = 0
        self.done = False
        self.result: Any = None
        self.exception: BaseException | None = None
        self.on_done: Callable[[Task], object] | None = None
        self.cancel_entry: list[Any] | None = None


class Future:
    """A value that will be set once; awaiting it suspends until then.

    With a finite ``deadline`` (absolute virtual seconds), an awaiting task gives up at
    the deadline: `abandon` runs and ``error()`` is raised in the task. `abandon` also
    runs when the waiting task is cancelled. Subclasses (the dependency's requests)
    override `abandon`.
    """

    __slots__ = ("callbacks", "deadline", "done", "error", "exc", "value", "waiters")

    def __init__(
        self,
        deadline: float = math.inf,
        error: Callable[[], BaseException] | None = None,
    ) -> None:
        self.done = False
        self.value: Any = None
        self.exc: BaseException | None = None
        self.waiters: list[tuple[Task, int]] = []
        self.callbacks: list[Callable[[Future], object]] | None = None
        self.deadline = deadline
        self.error = error

    def abandon(self) -> None:
        """Hook: the awaiting task stopped waiting (deadline or cancellation)."""

    def __await__(self) -> Generator[Any, Any, Any]:
        if not self.done:
            try:
                expired = yield self
            except BaseException:
                self.abandon()
                raise
            if expired is _EXPIRED:
                self.abandon()
                error = self.error
                raise error() if error is not None else TimeoutError()
        if self.exc is not None:
            raise self.exc
        return self.value


class Timed:
    """Await a `Future` until an absolute ``deadline``; on expiry raise ``error()``.

    ``on_expire`` (optional) runs when the deadline wins or when the waiting task is
    cancelled, e.g. to mark the request abandoned at the server.
    """

    __slots__ = ("deadline", "error", "future", "on_expire")

    def __init__(
        self,
        future: Future,
        deadline: float,
        error: Callable[[], BaseException],
        on_expire: Callable[[], object] | None = None,
    ) -> None:
        self.future = future
        self.deadline = deadline
        self.error = error
        self.on_expire = on_expire

    def __await__(self) -> Generator[Any, Any, Any]:
        fut = self.future
        if not fut.done:
            try:
                expired = yield self
            except BaseException:
                if self.on_expire is not None:
                    self.on_expire()
                raise
            if expired is _EXPIRED:
                if self.on_expire is not None:
                    self.on_expire()
                raise self.error()
        if fut.exc is not None:
            raise fut.exc
        return fut.value


_EXPIRED: Any = object()
_INF = float("inf")


@types.coroutine
def sleep(seconds: float) -> Generator[Any, Any, None]:
    """Suspend the current simulated task for ``seconds`` of virtual time."""
    yield float(seconds) if seconds > 0.0 else 0.0


class Scheduler:
    """Deterministic single-threaded scheduler with a virtual clock.

    Args:
        clock: The `SimClock` to advance (a new one by default).

    Attributes:
        now: Virtual time in seconds (also ``clock.t``).
        current: The running `Task`, or ``None`` between steps.
    """

    def __init__(self, clock: SimClock | None = None) -> None:
        self.clock = clock if clock is not None else SimClock()
        self.now = 0.0
        self.current: Task | None = None
        self._heap: list[tuple[float, int, Callable[[Any], object], Any]] = []
        self._seq = itertools.count()
        self._ready: deque[tuple[Task, int, Any, BaseException | None]] = deque()
        # Timers scheduled in non-decreasing time order (client timeouts, most sleeps) go
        # to this FIFO "lane" in O(1); the rest to the heap. The next timer is the earlier
        # of the two heads (ties: the heap first), so the order stays deterministic.
        self._lane: deque[tuple[float, int, Callable[[Any], object], Any]] = deque()
        self.runtime = SimRuntime(self)
        base = contextvars.copy_context()
        base.run(RUNTIME_OVERRIDE.set, self.runtime)
        self._base = base
        self.steps = 0
        self.live: set[Task] = set()

    # -- timers ----------------------------------------------------------------------------

    def call_at(self, when: float, fn: Callable[[Any], object], arg: Any = None) -> None:
        """Run ``fn(arg)`` when virtual time reaches ``when`` (seconds)."""
        heapq.heappush(self._heap, (when, next(self._seq), fn, arg))

    def call_later(self, delay: float, fn: Callable[[Any], object], arg: Any = None) -> None:
        """Run ``fn(arg)`` after ``delay`` seconds of virtual time."""
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), fn, arg))

    # -- tasks -----------------------------------------------------------------------------

    def start(self, coro: Coroutine[Any, Any, Any]) -> Task:
        """Start ``coro`` as a task and run it to its first suspension now.

        Only for timer callbacks (never from inside a running task).
        """
        task = Task(coro, self._base.copy())
        self.live.add(task)
        self._resume(task, None, None)
        return task

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        on_done: Callable[[Task], object] | None = None,
        ctx: contextvars.Context | None = None,
    ) -> Task:
        """Start ``coro`` as a task at the current virtual time; returns the `Task`.

        Args:
            coro: The coroutine to run.
            on_done: Called with the task when it finishes (returns or raises).
            ctx: The task's contextvars (default: a copy of the simulator's base context,
                in which the runtime override is set).
        """
        task = Task(coro, ctx if ctx is not None else self._base.copy())
        task.on_done = on_done
        self._ready.append((task, 0, None, None))
        self.live.add(task)
        return task

    def cancel(self, task: Task) -> None:
        """Deliver `Cancelled` to ``task`` at its current suspension point."""
        if task.done:
            return
        task.token += 1
        self._ready.append((task, task.token, None, Cancelled()))

    def resolve(self, fut: Future, value: Any = None, exc: BaseException | None = None) -> None:
        """Set ``fut``'s outcome and wake its waiters (no-op if already resolved)."""
        if fut.done:
            return
        fut.done = True
        fut.value = value
        fut.exc = exc
        if fut.waiters:
            ready = self._ready
            for task, token in fut.waiters:
                ready.append((task, token, None, None))
            fut.waiters = []
        if fut.callbacks:
            for cb in fut.callbacks:
                cb(fut)

    def _wake(self, arg: tuple[Task, int]) -> None:
        task, token = arg
        if token == task.token:
            self._resume(task, None, None)

    def _expire(self, arg: tuple[Task, int]) -> None:
        task, token = arg
        if token == task.token:
            self._resume(task, _EXPIRED, None)

    def _resume(self, task: Task, value: Any, exc: BaseException | None) -> None:
        task.token += 1
        self.current = task
        self.steps += 1
        try:
            if exc is None:
                y = task.ctx.run(task.coro.send, value)
            else:
                y = task.ctx.run(task.coro.throw, exc)
        except StopIteration as stop:
            self.current = None
            task.done = True
            self.live.discard(task)
            task.result = stop.value
            if task.on_done is not None:
                task.on_done(task)
            return
        except (KeyboardInterrupt, SystemExit, SimulationStalled):
            raise
        except BaseException as error:
            self.current = None
            task.done = True
            self.live.discard(task)
            task.exception = error
            if task.on_done is not None:
                task.on_done(task)
            return
        self.current = None
        cls = y.__class__
        if cls is float:
            when = self.now + y
            lane = self._lane
            if not lane or when >= lane[-1][0]:
                lane.append((when, 0, self._wake, (task, task.token)))
            else:
                heapq.heappush(self._heap, (when, next(self._seq), self._wake, (task, task.token)))
        elif isinstance(y, Future):
            key = (task, task.token)
            y.waiters.append(key)
            when = y.deadline
            if when < _INF:
                lane = self._lane
                if not lane or when >= lane[-1][0]:
                    lane.append((when, 0, self._expire, key))
                else:
                    heapq.heappush(self._heap, (when, next(self._seq), self._expire, key))
        elif cls is Timed:
            fut = y.future
            key = (task, task.token)
            fut.waiters.append(key)
            if y.deadline < _INF:
                heapq.heappush(self._heap, (y.deadline, next(self._seq), self._expire, key))
        else:
            task.coro.close()
            raise RuntimeError(f"simulated task awaited an unsupported object: {y!r}")

    # -- running ---------------------------------------------------------------------------

    def run(self, until: float = float("inf")) -> None:
        """Run tasks and timers until nothing is left or the next timer is past ``until``.

        The clock ends at ``until`` when it is finite and the run stopped early, else at
        the time of the last event.

        Raises:
            SimulationStalled: `STALL_EVENTS` timer events ran at one virtual instant (a
                livelock: without the guard the run would spin forever).
        """
        heap = self._heap
        lane = self._lane
        ready = self._ready
        pop = heapq.heappop
        popleft = ready.popleft
        lanepop = lane.popleft
        resume = self._resume
        clock = self.clock
        # livelock guard: task steps at the instant the clock last moved (one compare per
        # event that does not advance the clock; nothing for those that do)
        mark = self.steps
        limit = STALL_EVENTS
        while True:
            while ready:
                task, token, value, exc = popleft()
                if token == task.token:
                    resume(task, value, exc)
            if lane and (not heap or lane[0][0] < heap[0][0]):
                if lane[0][0] > until:
                    self.now = clock.t = until
                    break
                when, _, fn, arg = lanepop()
            elif heap:
                if heap[0][0] > until:
                    self.now = clock.t = until
                    break
                when, _, fn, arg = pop(heap)
            else:
                break
            if when > self.now:
                self.now = clock.t = when
                mark = self.steps
            elif self.steps - mark > limit:
                raise SimulationStalled(self.now, self.steps - mark)
            fn(arg)

    def close(self) -> int:
        """Close every unfinished task (in its own context); returns how many there were.

        Call it when a run stops early, so suspended coroutines unwind their ``finally``
        blocks here rather than at garbage collection in a foreign context.
        """
        pending = sorted(self.live, key=id)
        self.live = set()
        for task in pending:
            task.done = True
            task.ctx.run(task.coro.close)
        self._heap.clear()
        self._lane.clear()
        self._ready.clear()
        return len(pending)


class SimRuntime:
    """The `AsyncRuntime` of simulated tasks (``RUNTIME_OVERRIDE`` points to it).

    Deadlines: `enter_deadline` puts a timer on the heap; when it fires it cancels the
    task with `Cancelled` (unless a cancellation is already pending), and `exit_deadline`
    tells this deadline's cancellation apart from an outer one by identity.
    """

    __slots__ = ("_sched", "clock")
    name = "lab"

    def __init__(self, scheduler: Scheduler) -> None:
        self._sched = scheduler
        self.clock = scheduler.clock

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Suspend the current task for ``seconds`` of virtual time (0 still yields)."""
        return sleep(seconds)

    def new_event(self) -> SimEvent:
        """A one-shot `SimEvent` (``set()``, ``is_set()``, ``await wait()``)."""
        return SimEvent(self._sched)

    def waiter(self) -> SimWaiter:
        """A new un-woken `SimWaiter` (see `buttress._runtime.base`)."""
        if self._sched.current is None:
            raise RuntimeError("waiter() called outside a simulated task")
        return SimWaiter(self._sched)

    def race(self) -> SimRace:
        """A new `SimRace` (see `buttress._runtime.base.AsyncRace`)."""
        return SimRace(self._sched)

    def enter_deadline(self, deadline: float) -> Any:
        """Cancel the current task at ``deadline`` unless `exit_deadline` comes first."""
        sched = self._sched
        task = sched.current
        if task is None:
            raise RuntimeError("enter_deadline called outside a simulated task")
        entry = [task, False, False]  # task, fired, done
        heapq.heappush(sched._heap, (deadline, next(sched._seq), self._fire, entry))
        return entry

    def _fire(self, entry: list[Any]) -> None:
        if entry[2]:
            return
        entry[1] = True
        task: Task = entry[0]
        if task.cancel_entry is None and not task.done:
            task.cancel_entry = entry
            self._sched.cancel(task)

    def exit_deadline(self, handle: Any, exc: BaseException | None) -> bool:
        """``True`` when ``exc`` is the cancellation this deadline caused."""
        entry: list[Any] = handle
        entry[2] = True
        if not entry[1]:
            return False
        task: Task = entry[0]
        if task.cancel_entry is entry:
            task.cancel_entry = None
            return isinstance(exc, Cancelled)
        return False


class _Expired(Exception):
    """Internal: a simulated wait reached its deadline."""


class SimEvent:
    """A one-shot event in virtual time (the simulator's ``asyncio.Event``)."""

    __slots__ = ("_fut", "_sched")

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self._fut = Future()

    def set(self) -> None:
        """Set the event and wake every waiter (idempotent)."""
        self._sched.resolve(self._fut, True)

    def is_set(self) -> bool:
        """Whether `set` was called."""
        return self._fut.done

    async def wait(self) -> bool:
        """Suspend until the event is set; returns ``True``."""
        await self._fut
        return True


class SimWaiter:
    """A one-shot wake-up signal for one simulated task (`AsyncWaiter` contract)."""

    __slots__ = ("_fut", "_sched")

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self._fut = Future(math.inf, _Expired)

    def wake(self) -> None:
        """Wake the waiting task (idempotent; a no-op once the wait is over)."""
        self._sched.resolve(self._fut, True)

    async def wait(self, deadline: float | None) -> bool:
        """``True`` when woken, ``False`` when virtual time reaches ``deadline`` first."""
        fut = self._fut
        if fut.done:
            return True
        if deadline is not None:
            if deadline <= self._sched.now:
                return False
            fut.deadline = deadline
        try:
            await fut
        except _Expired:
            return False
        return True


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class SimRace:
    """`AsyncRace` in virtual time: one simulated task per attempt.

    Attempts run in a copy of the starting task's contextvars; leaving the block cancels
    the attempts still running and waits until they have stopped.
    """

    __slots__ = ("_closed", "_done", "_index", "_pending", "_sched", "_tasks", "_waiter")

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched
        self._tasks: list[Task] = []
        self._index: dict[Task, int] = {}
        self._done: deque[Task] = deque()
        self._waiter: Future | None = None
        self._pending: Future | None = None
        self._closed = False

    async def __aenter__(self) -> SimRace:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._closed = True
        self._done.clear()
        pending = [t for t in self._tasks if not t.done]
        if pending:
            self._pending = Future()
            for task in pending:
                self._sched.cancel(task)
            await self._pending

    def start(self, attempt: Callable[[], Awaitable[Any]]) -> int:
        """Start ``attempt()`` as a concurrent simulated task; returns its index."""
        index = len(self._tasks)
        awaitable = attempt()
        coro: Any = awaitable if isinstance(awaitable, Coroutine) else _await(awaitable)
        task = self._sched.spawn(coro, self._finished, contextvars.copy_context())
        self._tasks.append(task)
        self._index[task] = index
        return index

    def _finished(self, task: Task) -> None:
        if self._closed:
            if self._pending is not None and all(t.done for t in self._tasks):
                self._sched.resolve(self._pending, None)
            return
        self._done.append(task)
        waiter = self._waiter
        if waiter is not None:
            self._sched.resolve(waiter, None)

    async def wait(self, deadline: float | None) -> tuple[int, Any, BaseException | None] | None:
        """The next finished attempt, or ``None`` once virtual time reaches ``deadline``."""
        done = self._done
        if not done:
            if deadline is None:
                if all(t.done for t in self._tasks):
                    raise RuntimeError("SimRace.wait: no attempt left to wait for")
            elif self._sched.now >= deadline:
                return None
            waiter = Future(math.inf if deadline is None else deadline, _Expired)
            self._waiter = waiter
            try:
                await waiter
            except _Expired:
                pass
            finally:
                self._waiter = None
            if not done:
                return None
        task = done.popleft()
        return (self._index[task], task.result, task.exception)
