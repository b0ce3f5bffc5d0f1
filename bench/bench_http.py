"""Overhead of the HTTP integration and of telemetry hooks (plain script, not a test).

    .venv/bin/python bench/bench_http.py [--quick]

1. Telemetry off: a pipeline that never had listeners vs one that had global telemetry
   installed and removed again (its chain must be un-wrapped: target within 5%), plus the
   cost with telemetry on (informational).
2. httpx transport: per-request cost of a client through `ResilientTransport` (Retry +
   Timeout pipeline) vs a bare client, both on an in-process `httpx.MockTransport`
   (target: within 20% on the happy path).

Each figure is the best of several rounds (min of per-call means), measured in this run, in
CPU time of this process (`time.process_time`), so time the process spends descheduled on a
shared machine does not count; rounds of the compared variants are interleaved.
"""

from __future__ import annotations

import sys
import time
import timeit
from collections.abc import Callable

from buttress import Pipeline, Retry, Timeout

QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 7


def interleaved(fns: list[Callable[[], object]], number: int) -> list[float]:
    """Best mean seconds per call of each function, rounds interleaved (fair under load)."""
    best = [float("inf")] * len(fns)
    order = list(range(len(fns)))
    for _ in range(ROUNDS * 2):
        for i in order:
            timer = timeit.Timer(fns[i], timer=time.process_time)
            best[i] = min(best[i], timer.timeit(number=number) / number)
        order.reverse()  # alternate the order: no position advantage
    return best


def bench_telemetry_off() -> None:
    def work() -> int:
        return 1

    plain = Pipeline(Retry(on=ConnectionError), Timeout(5.0), name="plain")
    toggled = Pipeline(Retry(on=ConnectionError), Timeout(5.0), name="toggled")
    toggled.call(work)
    from buttress.telemetry import LoggingListener, instrument

    inst = instrument(logging=True)  # logger disabled for DEBUG: cheapest listener
    on = Pipeline(Retry(on=ConnectionError), Timeout(5.0), name="on")
    n = 20_000 if QUICK else 100_000
    (t_on,) = interleaved([lambda: on.call(work)], n)
    inst.close()
    assert toggled._sync_chain is None or toggled._sync_chain is toggled._sync_inner
    t_plain, t_toggled, t_plain2 = interleaved(
        [lambda: plain.call(work), lambda: toggled.call(work), lambda: plain.call(work)], n
    )
    base = min(t_plain, t_plain2)
    print("telemetry (Retry + Timeout pipeline, sync happy path)")
    print(f"  un-instrumented pipeline        {base * 1e9:8.0f} ns/call")
    print(
        f"  telemetry installed, then off   {t_toggled * 1e9:8.0f} ns/call  ratio {t_toggled / base:.3f} (target <= 1.05)"
    )
    print(
        f"  telemetry on (LoggingListener)  {t_on * 1e9:8.0f} ns/call  ratio {t_on / base:.3f} (informational)"
    )
    print(f"  noise: two un-instrumented samples differ by {abs(t_plain - t_plain2) / base:.1%}")
    del LoggingListener


def main() -> None:
    bench_telemetry_off()
    try:
        import httpx  # noqa: F401
    except ImportError:
        print("httpx not installed: transport benchmark skipped")
        return
    try:
        from buttress.integrations import httpx as _  # noqa: F401
    except ImportError:
        return
    bench_transport()


def bench_transport() -> None:
    import httpx

    from buttress.integrations.httpx import ResilientTransport, retryable

    def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"ok")

    bare = httpx.Client(transport=httpx.MockTransport(ok), base_url="http://bench")
    default = httpx.Client(
        transport=ResilientTransport(transport=httpx.MockTransport(ok)), base_url="http://bench"
    )
    with_timeout = httpx.Client(
        transport=ResilientTransport(
            Pipeline(Timeout(10.0), Retry(on=retryable()), name="bench"),
            transport=httpx.MockTransport(ok),
        ),
        base_url="http://bench",
    )
    n = 1_000 if QUICK else 4_000
    t_bare, t_default, t_timeout = interleaved(
        [lambda: bare.get("/"), lambda: default.get("/"), lambda: with_timeout.get("/")], n
    )
    print("httpx transport (GET on an in-process MockTransport, happy path)")
    print(f"  bare httpx.Client                          {t_bare * 1e6:8.1f} us/request")
    print(
        f"  ResilientTransport (default Retry)         {t_default * 1e6:8.1f} us/request"
        f"  ratio {t_default / t_bare:.3f} (target <= 1.20)"
    )
    print(
        f"  ResilientTransport (Timeout + Retry)       {t_timeout * 1e6:8.1f} us/request"
        f"  ratio {t_timeout / t_bare:.3f} (deadline header + timeout shrinking)"
    )
    for c in (bare, default, with_timeout):
        c.close()


if __name__ == "__main__":
    main()
