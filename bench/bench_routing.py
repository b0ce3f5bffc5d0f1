"""Selection cost per pick: P2C (least request) and peak EWMA over 100 endpoints.

Run: ``.venv/bin/python bench/bench_routing.py`` (CPU time, best of 5, so other load on the
machine inflates it less). Measures ``balancer.pick`` alone and the
whole ``Router.pick`` (planning cache, zone split, balancer), with realistic state (every
endpoint has latency observations, some in flight, a few penalised), and the full
pick + start + finish bookkeeping a call costs. Target: under 2 us per pick. For scale, the
same run times a bare ``random.Random.random()`` call.
"""

from __future__ import annotations

import random
import time

from buttress.routing import Endpoint, EndpointState, LeastRequest, PeakEwma, Router


def best_of(fn, n: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn(n)
        best = min(best, time.process_time() - t)
    return best / n * 1e9


def main() -> None:
    n = 200_000
    rng = random.Random(1)
    base = best_of(lambda k: [rng.random() for _ in range(k)], n)
    print(f"random.Random.random(): {base:7.0f} ns")
    for cls in (LeastRequest, PeakEwma):
        balancer = cls()
        states = [EndpointState(Endpoint(f"e{i}")) for i in range(100)]
        for i, s in enumerate(states):
            balancer.on_start(s, 0.0)
            balancer.on_finish(s, 0.1 + i * 0.001, 0.1 + i * 0.001, i % 10 == 0)
            s.outstanding = i % 5
        pick = balancer.pick

        def picks(k: int, pick=pick, states=states) -> None:
            for _ in range(k):
                pick(states, 1.0, rng)

        ns = best_of(picks, n)
        router = Router(
            [Endpoint(f"e{i}", zone="abc"[i % 3]) for i in range(100)], balancer=cls(), zone="a"
        )
        for i, s in enumerate(router.states):
            router.start(s, 0.0)
            router.finish(s, 0.1, 0.1 + i * 0.001, False)
        rpick = router.pick

        def rpicks(k: int, rpick=rpick) -> None:
            for _ in range(k):
                rpick(1.0, rng)

        rns = best_of(rpicks, n)

        def full(k: int, router=router) -> None:
            pick, start, finish = router.pick, router.start, router.finish
            for _ in range(k):
                s = pick(1.0, rng)
                start(s, 1.0)
                finish(s, 1.1, 0.1, False)

        fns = best_of(full, n // 2)
        print(
            f"{cls.__name__:<13} balancer.pick {ns:6.0f} ns   Router.pick {rns:6.0f} ns   "
            f"pick+start+finish {fns:6.0f} ns   (100 endpoints; target < 2000 ns per pick)"
        )


if __name__ == "__main__":
    main()


def pipeline_overhead() -> None:
    """Whole-call cost of a LoadBalance layer: pipeline with it vs without."""
    from buttress import LoadBalance, Pipeline

    n = 100_000
    plain = Pipeline(random=random.Random(1))
    lb = Pipeline(LoadBalance([f"e{i}" for i in range(100)]), random=random.Random(1))

    def f0() -> None:
        return None

    def f1(endpoint: object) -> None:
        return None

    t0 = best_of(lambda k: [plain.call(f0) for _ in range(k)], n)
    t1 = best_of(lambda k: [lb.call(f1) for _ in range(k)], n)
    print(
        f"Pipeline.call: bare {t0:6.0f} ns, with LoadBalance(100 endpoints) {t1:6.0f} ns "
        f"(LoadBalance layer {t1 - t0:6.0f} ns)"
    )


if __name__ == "__main__":
    pipeline_overhead()
