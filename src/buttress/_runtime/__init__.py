"""Runtimes: the ONLY code that reads time, sleeps, spawns or blocks.

* `SyncRuntime`: blocking, on the pipeline clock (a `ManualClock` never blocks).
* `AsyncioRuntime`: asyncio, with one shared deadline heap per loop instead of a timer
  handle per call (see `asyncio_rt`).
* `TrioRuntime`: trio cancel scopes (the ``trio`` extra).
* The lab's simulated runtime implements the same `AsyncRuntime` protocol.
"""
