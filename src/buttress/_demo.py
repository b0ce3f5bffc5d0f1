"""``buttress demo``: a short, self-contained tour against a flaky function.

It runs on a `ManualClock`, so it finishes at once and prints exact virtual times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

from . import Fallback, Pipeline, Retry, Timeout, backoff, current_context
from .events import Event
from .testing import ManualClock

__all__ = ["register", "run_demo"]


def register(sub: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = sub.add_parser("demo", help="run a short tour of retry, timeout and fallback")
    parser.set_defaults(func=lambda args: run_demo())


def _printer(clock: ManualClock) -> Any:
    def listener(event: Event) -> None:
        fields = {
            f.name: getattr(event, f.name)
            for f in dataclasses.fields(event)
            if f.name not in ("pipeline", "strategy", "time")
        }
        detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        print(f"  t={clock.now():6.3f}s  {event.kind:<18} {detail}")

    return listener


def run_demo() -> int:
    """Run the tour; returns 0."""
    clock = ManualClock()
    rng = random.Random(7)
    calls = {"n": 0}

    def flaky_inventory(sku: str) -> str:
        calls["n"] += 1
        ctx = current_context()
        if calls["n"] < 3:
            raise ConnectionError(f"connection reset (attempt {ctx.attempt if ctx else '?'})")
        return f"{sku}: 12 in stock"

    print("1. Retry: exponential backoff with full jitter, 3 attempts, against a flaky call")
    retry = Pipeline(
        Retry(on=ConnectionError, attempts=3, backoff=backoff.exponential(0.2)),
        name="inventory",
        clock=clock,
        random=rng,
        listeners=[_printer(clock)],
    )
    print("  ->", retry.call(flaky_inventory, "sku-42"))

    print("\n2. Timeout (per attempt) inside Retry, behind a Fallback, on asyncio")
    clock2 = ManualClock()

    async def slow_price(sku: str) -> float:
        await asyncio.Event().wait()  # hangs until cancelled
        return 9.99  # pragma: no cover

    async def drive_clock(task: asyncio.Task[Any]) -> None:
        while not task.done():
            await asyncio.sleep(0)
            clock2.advance(0.05)

    pipeline = Pipeline(
        Fallback(on=TimeoutError, value=0.0),
        Retry(on=TimeoutError, attempts=2, backoff=backoff.constant(0.1)),
        Timeout(0.5),
        name="pricing",
        clock=clock2,
        random=rng,
        listeners=[_printer(clock2)],
    )

    async def main() -> float:
        task = asyncio.ensure_future(pipeline.acall(slow_price, "sku-42"))
        await drive_clock(task)
        return await task

    price = asyncio.run(main())
    print(f"  -> fallback price {price} after {clock2.now():.2f}s of virtual time")
    print("\nThe lab (`buttress lab run`) runs whole outage scenarios in virtual time.")
    return 0
