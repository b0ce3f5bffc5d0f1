"""LoadBalance runs unchanged inside the lab's simulator (virtual time, deterministic)."""

from __future__ import annotations

import random
from typing import Any

from buttress import LoadBalance, Pipeline, Timeout
from buttress.events import EndpointHealthChanged
from buttress.lab import Scheduler
from buttress.routing import Endpoint, HealthCheck
from buttress.testing import RecordingListener


def simulate(seed: int) -> tuple[list[str], list[tuple[float, str, bool]]]:
    sched = Scheduler()
    rt = sched.runtime
    events = RecordingListener()

    async def probe(e: Endpoint) -> bool:
        await rt.sleep(0.01)
        return e.name != "slow"

    lb = LoadBalance(
        ["fast1", "fast2", "slow"],
        health=HealthCheck(probe, interval=1.0, unhealthy_threshold=1),
    )
    p = Pipeline(
        lb, Timeout(0.5), clock=sched.clock, random=random.Random(seed), listeners=[events]
    )

    async def server(e: Endpoint) -> str:
        await rt.sleep(2.0 if e.name == "slow" else 0.1)
        return e.name

    results: list[str] = []

    async def client() -> None:
        try:
            results.append(await p.acall(server))
        except TimeoutError:
            results.append("timeout")

    def arrive(_: Any) -> None:
        sched.spawn(client())

    for i in range(400):
        sched.call_at(i * 0.025, arrive)
    background = sched.spawn(lb.run_background(p))
    sched.run(until=12.0)
    sched.cancel(background)
    sched.run(until=13.0)
    sched.close()
    health = [(e.time, e.endpoint, e.healthy) for e in events.of_type(EndpointHealthChanged)]
    return results, health


def test_load_balance_and_health_checks_in_virtual_time() -> None:
    results, health = simulate(3)
    assert len(results) == 400
    assert health[0][1:] == ("slow", False)
    assert health[0][0] <= 0.2  # first probe within jitter x interval, plus its 10 ms
    assert results.count("timeout") <= 3
    assert "slow" not in results
    assert simulate(3) == (results, health)  # same seed, same run
