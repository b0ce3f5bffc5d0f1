"""S10 outcomes for every balancer, in virtual time (the DES in tests/routing/sim.py).

Run: ``.venv/bin/python bench/routing_outcomes.py``. Prints success at a 1 s timeout for
the base case (one of 11 replicas pinned at 2 s for 30 s), the fast-failing replica and a
zone failure, per balancer, with and without outlier ejection.
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "routing"))

import sim

from buttress.routing import OutlierDetector


def main() -> None:
    print(
        f"{'balancer':<15} {'outlier':<8} {'base':>8} {'fastfail>=25s':>14} {'zone':>8} {'cpu s':>6}"
    )
    for name in ["round_robin", "random", "least_request", "peak_ewma"]:
        for outlier in (None, OutlierDetector()):
            t = time.process_time()
            make = sim.router_factory(name, outlier)
            base = sim.run(make, sim.s10_endpoints(), sim.slow_b0)
            fast = sim.run(make, sim.s10_endpoints(), sim.failing_b0)
            zone = sim.run(
                make,
                sim.zone_endpoints(),
                sim.zone_c_down,
                client_zones=["a", "b", "c"],
                duration=90,
            )
            cpu = time.process_time() - t
            print(
                f"{name:<15} {'yes' if outlier else 'no':<8} {base.success:8.4%} "
                f"{fast.success_between(25, 60):14.4%} {zone.success:8.4%} {cpu:6.1f}"
            )


if __name__ == "__main__":
    main()
