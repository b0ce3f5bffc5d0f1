"""Lab engine speed: simulated server calls per CPU-second (S4) and S2 at full size.

Run: ``.venv/bin/python bench/bench_lab.py [--seeds N] [--skip-s2]``.

Targets (issue 6): about 130,000 simulated server calls per CPU-second; one S4 seed
(~70,000 calls) in under 2 s of CPU; S2 at full size (240,000 first tries) in under 15 s
per pipeline. CPU time is measured with ``time.process_time`` (the machine is shared).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from buttress.lab import load_scenario, run_one

ROOT = Path(__file__).resolve().parents[1] / "examples" / "scenarios"


def _measure(path: Path, names: list[str] | None, seeds: int) -> None:
    sc = load_scenario(path)
    for spec in sc.pipelines:
        if names is not None and spec.name not in names:
            continue
        cpu = 0.0
        calls = attempts = 0
        for seed in range(seeds):
            t = time.process_time()
            r = run_one(sc, spec, seed)
            cpu += time.process_time() - t
            calls += r["server_requests"]
            attempts += r["client_attempts"]
        print(
            f"  {spec.name:20s} {cpu / seeds:6.2f} s CPU/seed  "
            f"{calls / seeds:9,.0f} server calls/seed  "
            f"{calls / cpu:9,.0f} server calls/CPU-s  ({attempts / cpu:9,.0f} client calls/CPU-s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--skip-s2", action="store_true")
    args = parser.parse_args()
    t = time.process_time()
    for _ in range(2000):
        sum(range(1000))
    calib = (time.process_time() - t) / 2000 * 1e6
    print(
        f"machine speed: sum(range(1000)) takes {calib:.1f} us of CPU here "
        "(about 8 us on an idle modern core; scale the figures below accordingly)"
    )
    print("S4 (metastable retry storm, 240 s virtual, 280 rps):")
    _measure(ROOT / "s4-metastable-retry-storm.toml", None, args.seeds)
    if not args.skip_s2:
        print("S2 (outage amplification, full size: 240,000 first tries):")
        _measure(
            ROOT / "s2-outage-amplification.toml",
            ["no-retry", "tenacity-3", "buttress-defaults"],
            1,
        )


if __name__ == "__main__":
    main()
