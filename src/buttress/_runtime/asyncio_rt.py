"""asyncio runtime.

`Timeout` on asyncio does not create a timer handle per call (``asyncio.timeout()`` costs
about 4.9 us per call on the reference machine, mostly its `call_at` handle). Instead each
(loop, clock) pair has one `DeadlineHeap`: a call pushes one ``[deadline, seq, task, ...]``
list onto a heap, and a single timer, armed for the earliest live deadline, cancels the tasks whose
deadlines have passed. Finished calls are only flagged (lazy deletion) and drop their task
reference at once; the timer discards them as it passes, and the heap is compacted
whenever it doubles in size, so it holds at most about twice the live entries plus 1024.

A `Timeout` on a monotonic clock (the system clock or a `ManualClock`) does better still:
its deadlines (``now() + timeout``) never decrease, so each `Timeout` step has a
`DeadlineLane` per loop, a FIFO queue with one timer: entering is an append, and a call that
finishes first in line pops itself. `DeadlineHeap` serves every other deadline (other
clocks, health-check probes, `enter_deadline` callers).

The expiry protocol follows `asyncio.timeout()`: the timer calls ``task.cancel()``; on the
way out, ``task.uncancel()`` tells our own cancellation apart from an outer one (3.11+), so
an outer cancellation or an enclosing timeout is never reported as this timeout's expiry.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from .._core.clock import SYSTEM_CLOCK, Clock, ManualClock

__all__ = ["AsyncioRace", "AsyncioRuntime", "AsyncioWaiter", "DeadlineHeap", "DeadlineLane"]

# A heap entry is one list, ordered by its first two slots (the sequence number breaks
# ties, so a task is never compared): [deadline, seq, task or None, cancelling, fired].
# It is also the handle `enter_deadline` returns. One list instead of an entry plus a heap
# tuple plus a handle tuple: measured about 0.1 us less per call (Python 3.11).
_DEADLINE = 0
_TASK = 2  # None once the call finished without firing (lazy deletion)
_CANCELLING = 3  # task.cancelling() at entry (the asyncio.timeout() uncancel protocol)
_FIRED = 4

# A `DeadlineLane` entry keeps its own slots from 5 on (0 to 4 belong to the caller).
_L_DEADLINE = 5
_L_TASK = 6
_L_CANCELLING = 7
_L_FIRED = 8

_EARLY = 1e-6  # a timer may run up to the loop's clock resolution early


class _NoThread:
    """Stand-in loop for `DeadlineHeap._fast_loop` when the fast task lookup is unusable."""

    _thread_id = object()  # never equal to a thread identifier


_NO_THREAD = _NoThread()


class _Timer:
    """One loop timer (or `ManualClock` timer), re-armed by the subclass's ``_fire``."""

    __slots__ = ("_armed_at", "_clock", "_handle", "_loop")

    _loop: asyncio.AbstractEventLoop
    _clock: Clock
    _handle: Any
    _armed_at: float

    def _fire(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        clock = self._clock
        if clock is SYSTEM_CLOCK:
            self._handle = self._loop.call_at(when, self._fire)
        elif isinstance(clock, ManualClock):
            self._handle = clock.call_at(when, self._fire_from_clock)
        else:  # any other clock: translate to loop time
            delay = max(0.0, when - clock.now())
            self._handle = self._loop.call_at(self._loop.time() + delay, self._fire)

    def _fire_from_clock(self) -> None:
        # A ManualClock fires timers from advance(): run at once when that happens on the
        # loop's own thread (exact virtual time), else hand over to the loop thread.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._fire()
        else:
            self._loop.call_soon_threadsafe(self._fire)


class DeadlineHeap(_Timer):
    """One shared timer for many deadlines on one event loop.

    Args:
        loop: The event loop whose tasks are cancelled.
        clock: The pipeline clock the deadlines are expressed in. With the system clock,
            the timer is a loop `call_at` handle; with a `ManualClock`, a clock timer.
    """

    __slots__ = ("_compact_at", "_fast_loop", "_heap", "_seq")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self._loop = loop
        # Python 3.11 only (see `AsyncioRuntime.enter_deadline`): a `BaseEventLoop` records
        # the thread running it in ``_thread_id``; other loops (uvloop) take the slow path.
        self._fast_loop: Any = (
            loop if _FAST_LOOKUP and isinstance(loop, asyncio.BaseEventLoop) else _NO_THREAD
        )
        self._clock = clock
        self._heap: list[list[Any]] = []
        self._seq = itertools.count()
        self._handle: Any = None
        self._armed_at = math.inf
        self._compact_at = 1024

    def add(self, deadline: float, task: asyncio.Task[Any]) -> list[Any]:
        """Register ``task`` to be cancelled at ``deadline``; returns the entry."""
        entry = [deadline, next(self._seq), task, task.cancelling(), False]
        heap = self._heap
        heapq.heappush(heap, entry)
        if deadline < self._armed_at:
            self._arm(deadline)
        elif len(heap) > self._compact_at:
            self._compact()
        return entry

    @staticmethod
    def done(entry: list[Any]) -> None:
        """Mark ``entry`` finished: it will never fire, and drops its task reference."""
        entry[_TASK] = None

    def _compact(self) -> None:
        # finished entries stay until the timer passes them or until the heap doubles:
        # amortised O(1) per call, and the heap holds at most 2x the live entries + 1024
        heap = [entry for entry in self._heap if entry[_TASK] is not None]
        heapq.heapify(heap)
        self._heap = heap
        self._compact_at = max(1024, 2 * len(heap))

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        now = self._clock.now() + _EARLY
        heap = self._heap
        while heap and heap[0][_DEADLINE] <= now:
            entry = heapq.heappop(heap)
            task = entry[_TASK]
            if task is not None and not entry[_FIRED]:
                entry[_FIRED] = True  # exit_deadline uncancels and drops the task
                if not task.done():
                    task.cancel()
        while heap and heap[0][_TASK] is None:
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][_DEADLINE])


class DeadlineLane(_Timer):
    """Deadlines that arrive in non-decreasing order, on one event loop: a FIFO, no heap.

    A `Timeout` step on a monotonic clock (the system clock or a `ManualClock`) produces
    deadlines ``now() + timeout`` that never decrease, so its calls on one loop can queue
    in arrival order: entering is one ``deque.append`` (no heap push, no tie-breaking
    sequence number), and one timer is armed at the oldest live deadline. A call that
    finishes first in line pops itself and the finished calls behind it; others are only
    flagged (their task reference dropped), and a compaction keeps the queue within about
    twice the live calls plus 1024. Measured about 0.2 us less per call than the shared
    `DeadlineHeap` (Python 3.11, bench/README.md).

    An entry is a list whose slots 5 to 8 are ``deadline, task, cancelling, fired``
    (`lane_entry`): slots 0 to 4 are free for the caller, so an outermost `Timeout` makes
    its execution record (`buttress._core.context`, whose optional slot 4 is the attempt)
    the entry itself, one allocation less per call. `exit_deadline` follows the
    ``asyncio.timeout()`` protocol, as `DeadlineHeap`'s.

    Args:
        loop: The event loop whose tasks are cancelled.
        clock: The pipeline clock (monotonic; see `lane_clock`).
    """

    __slots__ = ("_compact_at", "_entries", "_fast_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self._loop = loop
        self._fast_loop: Any = (
            loop if _FAST_LOOKUP and isinstance(loop, asyncio.BaseEventLoop) else _NO_THREAD
        )
        self._clock = clock
        self._entries: deque[list[Any]] = deque()
        self._handle: Any = None
        self._armed_at = math.inf
        self._compact_at = 1024

    def add(
        self, deadline: float, task: asyncio.Task[Any], entry: list[Any] | None = None
    ) -> list[Any]:
        """Register ``task`` to be cancelled at ``deadline`` (not before the last one).

        ``entry``: five caller slots to extend into the entry (see the class docs).
        """
        if entry is None:
            entry = [None, None, None, None, None]
        entry += (deadline, task, task.cancelling(), False)
        self._entries.append(entry)
        if self._handle is None:
            self._arm(deadline)
        return entry

    def finished(self, entry: list[Any]) -> None:
        """The happy exit of a call that did not fire: drop it (and finished ones behind)."""
        entry[_L_TASK] = None
        entries = self._entries
        if entries and entries[0] is entry:
            entries.popleft()
            while entries and entries[0][_L_TASK] is None:
                entries.popleft()
        elif len(entries) > self._compact_at:
            live = [item for item in entries if item[_L_TASK] is not None]
            entries.clear()
            entries.extend(live)
            self._compact_at = max(1024, 2 * len(live))

    def exit_deadline(self, handle: list[Any], exc: BaseException | None) -> bool:
        """See `AsyncRuntime.exit_deadline` (the `asyncio.timeout()` protocol)."""
        if not handle[_L_FIRED]:
            self.finished(handle)
            return False
        return _uncancel(handle, exc, _L_TASK, _L_CANCELLING)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        now = self._clock.now() + _EARLY
        entries = self._entries
        while entries:
            entry = entries[0]
            task = entry[_L_TASK]
            if task is None:
                entries.popleft()
                continue
            if entry[_L_DEADLINE] > now:
                break
            entries.popleft()
            if not entry[_L_FIRED]:
                entry[_L_FIRED] = True  # exit_deadline uncancels and drops the task
                if not task.done():
                    task.cancel()
        if entries:
            self._arm(entries[0][_L_DEADLINE])


def lane_clock(clock: Clock) -> bool:
    """Whether deadlines on ``clock`` can use a `DeadlineLane` (it never goes backwards)."""
    return clock is SYSTEM_CLOCK or isinstance(clock, ManualClock)


def enter_lane(
    cache: list[Any], clock: Clock, deadline: float, entry: list[Any] | None = None
) -> list[Any]:
    """`DeadlineLane.add` for the running task, on the lane cached in ``cache[0]``.

    ``entry``: a list of exactly five caller slots to extend into the lane entry, or
    ``None`` for a new one.

    The slow form of the inlined fast path in `buttress._strategies.timeout`: finds the
    running loop and task, and (re)creates the lane when the loop changed.

    Raises:
        RuntimeError: Not inside an asyncio task.
    """
    loop = _get_running_loop()
    task = _current_task(loop)
    if task is None:  # pragma: no cover - not inside a task
        raise RuntimeError("buttress Timeout needs to run inside an asyncio task")
    lane: DeadlineLane | None = cache[0]
    if lane is None or lane._loop is not loop:
        lane = cache[0] = DeadlineLane(loop, clock)
    return lane.add(deadline, task, entry)


def _uncancel(
    handle: list[Any], exc: BaseException | None, task_slot: int, cancelling_slot: int
) -> bool:
    # our timer cancelled the task: take our cancellation request back (once)
    task = handle[task_slot]
    if task is None:
        return False
    handle[task_slot] = None
    mine: bool = task.uncancel() <= handle[cancelling_slot]
    return mine and isinstance(exc, asyncio.CancelledError)


class AsyncioWaiter:
    """`AsyncWaiter` for asyncio: a future of the owning task's loop.

    `wake` sets the future directly when called on the loop's thread, and through
    ``call_soon_threadsafe`` from any other thread (a closed loop makes it a no-op). The
    deadline is one ``call_later`` handle (or a `ManualClock` timer), cancelled on exit.
    """

    __slots__ = ("_clock", "_fut", "_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self._loop = loop
        self._clock = clock
        self._fut: asyncio.Future[bool] = loop.create_future()
        self._thread = threading.get_ident()

    def _set(self, value: bool) -> None:
        fut = self._fut
        if not fut.done():
            try:
                fut.set_result(value)
            except RuntimeError:  # its loop is closed: the waiting task will never run
                pass

    def _set_threadsafe(self, value: bool) -> None:
        try:
            self._loop.call_soon_threadsafe(self._set, value)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def wake(self) -> None:
        """Wake the waiting task (any thread may call this; idempotent)."""
        if threading.get_ident() == self._thread:
            self._set(True)
        else:
            self._set_threadsafe(True)

    async def wait(self, deadline: float | None) -> bool:
        """Suspend until woken (``True``) or until the clock passes ``deadline`` (``False``)."""
        fut = self._fut
        if fut.done():
            return fut.result()
        if deadline is None:
            return await fut
        clock = self._clock
        remaining = deadline - clock.now()
        if remaining <= 0:
            return False
        handle: Any
        if isinstance(clock, ManualClock):
            handle = clock.call_at(deadline, lambda: self._set_threadsafe(False))
        else:
            handle = self._loop.call_later(remaining, self._set, False)
        try:
            return await fut
        finally:
            handle.cancel()


class AsyncioRuntime:
    """asyncio runtime on a pipeline clock.

    With the system clock, sleeping is `asyncio.sleep`. With a `ManualClock`, sleeping
    advances the clock and yields once, so tests run in virtual time.
    """

    __slots__ = ("_heap", "clock")
    name = "asyncio"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: DeadlineHeap | None = None

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (a zero delay still yields once to the loop)."""
        clock = self.clock
        if clock is SYSTEM_CLOCK or not isinstance(clock, ManualClock):
            await asyncio.sleep(max(0.0, seconds))
        else:
            clock.sleep(max(0.0, seconds))
            await asyncio.sleep(0)

    def new_event(self) -> asyncio.Event:
        """A fresh `asyncio.Event` (see `AsyncRuntime.new_event`)."""
        return asyncio.Event()

    def waiter(self) -> AsyncioWaiter:
        """A new `AsyncioWaiter` for the current task (see `buttress._runtime.base`)."""
        return AsyncioWaiter(_get_running_loop(), self.clock)

    def enter_deadline(self, deadline: float) -> Any:
        """Register the current task for cancellation at ``deadline``.

        Returns the heap entry itself as the handle for `exit_deadline`.

        Raises:
            RuntimeError: Not inside an asyncio task.
        """
        heap = self._heap
        # Fast path, Python 3.11: `asyncio.get_running_loop()` costs about 0.22 us there
        # (it calls getpid() for fork safety). If the loop this runtime last served is run
        # by the calling thread (``loop._thread_id``, set by `run_forever`), it is the
        # running loop (one loop per thread) and its current task is ours: about 0.13 us.
        # One read of ``self._heap`` (not separate loop and heap attributes) keeps the pair
        # consistent when threads with different loops share this runtime.
        if heap is not None and heap._fast_loop._thread_id == _get_ident():
            task = _tasks_by_loop.get(heap._loop)  # type: ignore[union-attr]
        else:
            loop = _get_running_loop()  # raises RuntimeError outside a running loop
            task = _current_task(loop)
            if heap is None or heap._loop is not loop:
                heap = self._heap = DeadlineHeap(loop, self.clock)
        if task is None:  # pragma: no cover - not inside a task
            raise RuntimeError("buttress Timeout needs to run inside an asyncio task")
        # `DeadlineHeap.add`, inlined (one Python call less per Timeout)
        entry = [deadline, next(heap._seq), task, task.cancelling(), False]
        items = heap._heap
        _heappush(items, entry)
        if deadline < heap._armed_at:
            heap._arm(deadline)
        elif len(items) > heap._compact_at:
            heap._compact()
        return entry

    def exit_deadline(self, handle: Any, exc: BaseException | None) -> bool:
        """See `AsyncRuntime.exit_deadline` (the `asyncio.timeout()` protocol)."""
        if not handle[_FIRED]:
            handle[_TASK] = None  # lazy deletion: the timer or a compaction drops it
            return False
        return _uncancel(handle, exc, _TASK, _CANCELLING)

    # -- racing attempts (hedging) ---------------------------------------------------------
    def race(self) -> AsyncioRace:
        """A new `AsyncioRace` on this runtime's clock (see `AsyncRace`)."""
        return AsyncioRace(self.clock)


# -- racing attempts (hedging) ---------------------------------------------------------------


class AsyncioRace:
    """`AsyncRace` on asyncio: one task per attempt, one future to wake the owner.

    Each attempt task runs a small wrapper that reports the attempt's outcome to the race
    itself as it finishes (no done-callback round trip through the loop), so the happy
    path takes two loop iterations: the attempt runs, then the owner resumes. The
    wrapper keeps every outcome (never leaves an exception in the task to be "never
    retrieved"); only the race's own cancellation of a loser ends a task cancelled. Per
    `wait` that has to suspend: one future and, with a deadline, one timer (a loop
    handle, or a `ManualClock` timer).
    """

    __slots__ = ("_clock", "_closed", "_done", "_loop", "_tasks", "_waiter")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._loop: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._done: deque[tuple[int, Any, BaseException | None]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncioRace:
        self._loop = _get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._done.clear()
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            for task in pending:
                task.cancel()
            # A second cancellation of the owner stops this wait; the attempts, already
            # cancelled, then finish in the background.
            await asyncio.wait(pending)

    def start(self, attempt: Callable[[], Awaitable[Any]]) -> int:
        index = len(self._tasks)
        self._tasks.append(self._loop.create_task(self._run(index, attempt)))
        return index

    async def _run(self, index: int, attempt: Callable[[], Awaitable[Any]]) -> None:
        try:
            value = await attempt()
        except BaseException as exc:  # reported to the owner, never handled here
            if self._closed and isinstance(exc, asyncio.CancelledError):
                raise  # a loser the race cancelled: end cancelled, report nothing
            self._report((index, None, exc))
            return
        self._report((index, value, None))

    def _report(self, item: tuple[int, Any, BaseException | None]) -> None:
        if self._closed:
            return
        self._done.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, deadline: float | None) -> tuple[int, Any, BaseException | None] | None:
        done = self._done
        if not done:
            clock = self._clock
            if deadline is None:
                if all(task.done() for task in self._tasks):
                    raise RuntimeError("AsyncioRace.wait: no attempt left to wait for")
            elif clock.now() >= deadline:
                return None
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiter = waiter
            timer = None if deadline is None else self._arm(deadline, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not done:
                return None
        return done.popleft()

    def _arm(self, deadline: float, waiter: asyncio.Future[None]) -> Any:
        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        clock = self._clock
        loop = self._loop
        if clock is SYSTEM_CLOCK:
            return loop.call_at(deadline, wake)
        if isinstance(clock, ManualClock):
            handle = clock.call_at(deadline, lambda: loop.call_soon_threadsafe(wake))
            if clock.now() >= deadline:  # advanced while registering: fire now
                loop.call_soon(wake)
            return handle
        return loop.call_later(max(0.0, deadline - clock.now()), wake)


_get_running_loop = asyncio.get_running_loop
_current_task = asyncio.current_task
_get_ident = threading.get_ident
_heappush = heapq.heappush
# Python 3.11's current_task() is pure Python around this table; read it directly. On
# 3.12+ get_running_loop() and current_task() are fast C calls: no shortcut needed.
_tasks_by_loop: dict[Any, Any] | None = getattr(asyncio.tasks, "_current_tasks", None)
_FAST_LOOKUP = sys.version_info < (3, 12) and isinstance(_tasks_by_loop, dict)
_running_loop = asyncio._get_running_loop  # None outside a running loop


def lane_task(lane: DeadlineLane) -> Any:
    """The running task, if ``lane``'s loop is the running loop (else ``None``).

    Python 3.11: the loop's thread is this one, so it is the running loop (``_thread_id``,
    as in `AsyncioRuntime.enter_deadline`); 3.12+: asyncio's own `_get_running_loop` and
    `current_task`, fast C calls there. `Timeout._bind_async` inlines the 3.11 test.
    """
    loop = lane._loop
    if lane._fast_loop._thread_id == _get_ident():
        return _tasks_by_loop.get(loop)  # type: ignore[union-attr]
    if _FAST_LOOKUP:
        return None
    return _current_task(loop) if _running_loop() is loop else None
