"""Per-call overhead of buttress against its Python peers, measured in one process.

Run with ``make bench`` (installs the peers of ``requirements-bench.txt`` into ``.venv``
first) or ``.venv/bin/python bench/run.py [--quick] [--rounds N] [--json FILE]``.

Method (the machine is shared and noisy, so every figure is relative to others taken in
the same run):

* Every subject is a zero-argument callable (sync) or coroutine function (async) wrapping
  a function that returns at once (happy path) or fails twice and then succeeds (failure
  path). A warm-up pass calibrates the loop length and checks the returned value, so a
  subject that silently does something else fails loudly instead of looking fast.
* Rounds run round-robin over all subjects (the order rotates every round), so drift on
  the machine hits every subject alike. Each sample is a tight loop timed with the
  thread's CPU clock (`time.thread_time_ns`, the default ``--clock cpu``: time the
  process spends descheduled by the other processes on the shared machine is not
  counted; nothing measured here sleeps or waits) or, with ``--clock wall``,
  `time.perf_counter_ns`; garbage collection paused (as `timeit` does); async samples
  await the subject in a loop inside one running event loop.
* Samples are short (about 2 ms, shorter than a scheduler time slice) and many, so a
  good share of them run uninterrupted: per subject we report the **minimum** (the cost
  without interference from the other processes on the machine; the figure the targets
  use) and the median of the per-round figures, in ns per call, loop included (read them
  against the "bare call" rows). Beside each target we also print the median over rounds
  of (ours / reference) measured **within the same round**, which cancels slow drift.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import buttress
from buttress import Fallback, Pipeline, Retry, Timeout, backoff

logging.disable(logging.CRITICAL)  # stamina logs every scheduled retry by default

_KEEP: list[Any] = []
TIMEOUT = 10.0  # seconds: never reached, as in a real service's happy path


class Boom(Exception):
    """The handled failure."""


def ok() -> int:
    return 1


async def aok() -> int:
    return 1


def Flaky() -> Callable[[], int]:
    """A function that fails twice, then succeeds: each logical call takes three attempts."""
    count = [0]

    def flaky() -> int:
        count[0] += 1
        if count[0] % 3:
            raise Boom
        return 1

    return flaky


def AFlaky() -> Callable[[], Awaitable[int]]:
    """The coroutine-function twin of `Flaky` (a plain ``async def``, as users write)."""
    count = [0]

    async def aflaky() -> int:
        count[0] += 1
        if count[0] % 3:
            raise Boom
        return 1

    return aflaky


@dataclass
class Subject:
    group: str  # "sync", "async", "sync-fail", "async-fail"
    name: str
    call: Callable[[], Any]
    is_async: bool
    n: int = 0
    samples: list[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        return min(self.samples)


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- subjects ---------------------------------------------------------------------------------


def build_subjects(skipped: list[str]) -> list[Subject]:
    subjects: list[Subject] = []

    def add(group: str, name: str, call: Callable[[], Any]) -> None:
        subjects.append(Subject(group, name, call, group.startswith("async")))

    def peer(dist: str, builder: Callable[[], None]) -> None:
        if version(dist) is None:
            skipped.append(f"{dist}: not installed (make bench installs requirements-bench.txt)")
            return
        try:
            builder()
        except Exception as exc:  # a peer that cannot be set up is reported, not fatal
            skipped.append(f"{dist}: {type(exc).__name__}: {exc}")

    # ---- happy path, sync ----
    add("sync", "bare call", ok)

    def one_line() -> int:
        return ok()

    add("sync", "one-line wrapper", one_line)
    add("sync", "buttress Retry", Pipeline(Retry(on=Boom))(ok))
    add("sync", "buttress Retry, pipeline.call", _call_form(Pipeline(Retry(on=Boom))))
    add("sync", "buttress Timeout (cooperative)", Pipeline(Timeout(TIMEOUT))(ok))
    add(
        "sync",
        "buttress Fallback>Retry>Timeout",
        Pipeline(Fallback(on=Boom, value=0), Retry(on=Boom), Timeout(TIMEOUT))(ok),
    )

    def tenacity_sync() -> None:
        import tenacity

        add(
            "sync",
            "tenacity @retry",
            tenacity.retry(
                retry=tenacity.retry_if_exception_type(Boom),
                stop=tenacity.stop_after_attempt(3),
                wait=tenacity.wait_exponential(multiplier=0.1, max=10),
            )(ok),
        )

    def stamina_sync() -> None:
        import stamina

        add("sync", "stamina @retry", stamina.retry(on=Boom, attempts=3)(ok))

    def backoff_sync() -> None:
        import backoff as bo

        add("sync", "backoff @on_exception", bo.on_exception(bo.expo, Boom, max_tries=3)(ok))

    def opnieuw_sync() -> None:
        import opnieuw

        add(
            "sync",
            "opnieuw @retry",
            opnieuw.retry(retry_on_exceptions=Boom, max_calls_total=3)(ok),
        )

    def pyresilience_sync() -> None:
        import pyresilience

        cfg = pyresilience.RetryConfig(max_attempts=3, retry_on=(Boom,))
        add("sync", "pyresilience @resilient", pyresilience.resilient(retry=cfg)(ok))

    for dist, builder in (
        ("tenacity", tenacity_sync),
        ("stamina", stamina_sync),
        ("backoff", backoff_sync),
        ("opnieuw", opnieuw_sync),
        ("pyresilience", pyresilience_sync),
    ):
        peer(dist, builder)

    # ---- happy path, async ----
    add("async", "bare await", aok)

    async def a_one_line() -> int:
        return await aok()

    add("async", "one-line wrapper", a_one_line)
    add("async", "buttress Retry", Pipeline(Retry(on=Boom))(aok))
    add("async", "buttress Retry, pipeline.acall", _acall_form(Pipeline(Retry(on=Boom))))
    add("async", "buttress Timeout", Pipeline(Timeout(TIMEOUT))(aok))

    async def with_asyncio_timeout() -> int:
        async with asyncio.timeout(TIMEOUT):
            return await aok()

    add("async", "asyncio.timeout()", with_asyncio_timeout)
    add(
        "async",
        "buttress Fallback>Retry>Timeout",
        Pipeline(Fallback(on=Boom, value=0), Retry(on=Boom), Timeout(TIMEOUT))(aok),
    )

    def anyio_async() -> None:
        import anyio

        async def with_fail_after() -> int:
            with anyio.fail_after(TIMEOUT):
                return await aok()

        add("async", "anyio.fail_after()", with_fail_after)

    def tenacity_async() -> None:
        import tenacity

        add(
            "async",
            "tenacity @retry",
            tenacity.retry(
                retry=tenacity.retry_if_exception_type(Boom),
                stop=tenacity.stop_after_attempt(3),
                wait=tenacity.wait_exponential(multiplier=0.1, max=10),
            )(aok),
        )

    def stamina_async() -> None:
        import stamina

        add("async", "stamina @retry", stamina.retry(on=Boom, attempts=3)(aok))

    def backoff_async() -> None:
        import backoff as bo

        add("async", "backoff @on_exception", bo.on_exception(bo.expo, Boom, max_tries=3)(aok))

    def opnieuw_async() -> None:
        import opnieuw

        add(
            "async",
            "opnieuw @retry",
            opnieuw.retry(retry_on_exceptions=Boom, max_calls_total=3)(aok),
        )

    def pyresilience_async() -> None:
        import pyresilience

        cfg = pyresilience.RetryConfig(max_attempts=3, retry_on=(Boom,))
        add("async", "pyresilience @resilient", pyresilience.resilient(retry=cfg)(aok))

    def hyx_async() -> None:
        from hyx.retry import retry as hyx_retry

        add("async", "hyx @retry", hyx_retry(on=Boom, attempts=3)(aok))

    for dist, builder in (
        ("anyio", anyio_async),
        ("tenacity", tenacity_async),
        ("stamina", stamina_async),
        ("backoff", backoff_async),
        ("opnieuw", opnieuw_async),
        ("pyresilience", pyresilience_async),
        ("hyx", hyx_async),
    ):
        peer(dist, builder)

    # ---- failure path: fails twice, then succeeds; every wait zero ----
    flaky = Flaky()

    def handwritten() -> int:
        for attempt in range(3):
            try:
                return flaky()
            except Boom:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    add("sync-fail", "hand-written try/except loop", handwritten)
    # budget=None: the hand-written loop and the peers have no retry budget (a default
    # budget would, correctly, stop retrying a 67 % failure rate after a few hundred calls).
    add(
        "sync-fail",
        "buttress Retry",
        Pipeline(Retry(on=Boom, backoff=backoff.none(), budget=None))(Flaky()),
    )
    add(
        "sync-fail",
        "buttress Fallback>Retry>Timeout",
        Pipeline(
            Fallback(on=Boom, value=0),
            Retry(on=Boom, backoff=backoff.none(), budget=None),
            Timeout(TIMEOUT),
        )(Flaky()),
    )

    aflaky = AFlaky()

    async def a_handwritten() -> int:
        for attempt in range(3):
            try:
                return await aflaky()
            except Boom:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    add("async-fail", "hand-written try/except loop", a_handwritten)
    add(
        "async-fail",
        "buttress Retry",
        Pipeline(Retry(on=Boom, backoff=backoff.none(), budget=None))(AFlaky()),
    )
    add(
        "async-fail",
        "buttress Fallback>Retry>Timeout",
        Pipeline(
            Fallback(on=Boom, value=0),
            Retry(on=Boom, backoff=backoff.none(), budget=None),
            Timeout(TIMEOUT),
        )(AFlaky()),
    )

    def tenacity_fail() -> None:
        import tenacity

        for group, target in (("sync-fail", Flaky()), ("async-fail", AFlaky())):
            add(
                group,
                "tenacity (wait_none)",
                tenacity.retry(
                    retry=tenacity.retry_if_exception_type(Boom),
                    stop=tenacity.stop_after_attempt(3),
                    wait=tenacity.wait_none(),
                )(target),
            )

    def stamina_fail() -> None:
        import stamina
        from stamina.instrumentation import set_on_retry_hooks

        set_on_retry_hooks([])  # no logging / prometheus hooks: library work only
        for group, target in (("sync-fail", Flaky()), ("async-fail", AFlaky())):
            add(
                group,
                "stamina (waits 0)",
                stamina.retry(
                    on=Boom, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0, timeout=None
                )(target),
            )

    def backoff_fail() -> None:
        import backoff as bo

        for group, target in (("sync-fail", Flaky()), ("async-fail", AFlaky())):
            add(
                group,
                "backoff (constant 0)",
                bo.on_exception(bo.constant, Boom, max_tries=3, interval=0, jitter=None)(target),
            )

    def opnieuw_fail() -> None:
        import opnieuw
        from opnieuw.test_util import retry_immediately

        # opnieuw has no zero-wait setting; its test override is the documented way
        # (entered for the whole run: it only affects opnieuw's own calculator).
        override = retry_immediately()
        override.__enter__()
        _KEEP.append(override)  # a collected generator context manager would exit itself
        for group, target in (("sync-fail", Flaky()), ("async-fail", AFlaky())):
            add(
                group,
                "opnieuw (retry_immediately)",
                opnieuw.retry(retry_on_exceptions=Boom, max_calls_total=3)(target),
            )

    def pyresilience_fail() -> None:
        import pyresilience

        cfg = pyresilience.RetryConfig(max_attempts=3, retry_on=(Boom,), delay=0.0, jitter=False)
        for group, target in (("sync-fail", Flaky()), ("async-fail", AFlaky())):
            add(group, "pyresilience (delay 0)", pyresilience.resilient(retry=cfg)(target))

    def hyx_fail() -> None:
        from hyx.retry import retry as hyx_retry

        add("async-fail", "hyx (backoff 0)", hyx_retry(on=Boom, attempts=3, backoff=0)(AFlaky()))

    for dist, builder in (
        ("tenacity", tenacity_fail),
        ("stamina", stamina_fail),
        ("backoff", backoff_fail),
        ("opnieuw", opnieuw_fail),
        ("pyresilience", pyresilience_fail),
        ("hyx", hyx_fail),
    ):
        peer(dist, builder)
    return subjects


def _call_form(pipeline: Pipeline) -> Callable[[], int]:
    call = pipeline.call

    def subject() -> int:
        return call(ok)

    return subject


def _acall_form(pipeline: Pipeline) -> Callable[[], Awaitable[int]]:
    acall = pipeline.acall

    async def subject() -> int:
        return await acall(aok)

    return subject


# -- timing -----------------------------------------------------------------------------------


CLOCK: list[Callable[[], int]] = [time.thread_time_ns]
"""The sample clock (``--clock``): the thread's CPU time by default, or wall time."""


def time_sync(call: Callable[[], Any], n: int) -> float:
    loop = range(n)
    clock = CLOCK[0]
    start = clock()
    for _ in loop:
        call()
    return (clock() - start) / n


async def time_async(call: Callable[[], Awaitable[Any]], n: int) -> float:
    loop = range(n)
    clock = CLOCK[0]
    start = clock()
    for _ in loop:
        await call()
    return (clock() - start) / n


async def check_async(call: Callable[[], Awaitable[Any]], n: int) -> None:
    for _ in range(n):
        value = await call()
        if value != 1:
            raise AssertionError(f"returned {value!r}, expected 1")


def sample(runner: asyncio.Runner, subject: Subject, n: int) -> float:
    gc.collect()
    gc.disable()
    try:
        if subject.is_async:
            return runner.run(time_async(subject.call, n))
        return time_sync(subject.call, n)
    finally:
        gc.enable()


def calibrate(runner: asyncio.Runner, subject: Subject, target_ns: float) -> None:
    """Check the result, warm up, and pick a loop length for ``target_ns`` per sample."""
    try:
        if subject.is_async:
            runner.run(check_async(subject.call, 30))
        else:
            for _ in range(30):
                value = subject.call()
                if value != 1:
                    raise AssertionError(f"returned {value!r}, expected 1")
    except Exception as exc:
        raise SystemExit(f"bench subject {subject.key!r} is broken: {exc!r}") from exc
    n = 16
    while True:
        per_call = sample(runner, subject, n)
        if per_call * n >= target_ns / 8 or n >= 1 << 22:
            break
        n *= 4
    subject.n = max(3, min(1 << 22, int(target_ns / max(per_call, 1.0))))


# -- report -----------------------------------------------------------------------------------

GROUP_TITLES = {
    "sync": "Happy path, sync (the wrapped function returns at once)",
    "async": "Happy path, async (one running asyncio loop)",
    "sync-fail": "Failure path, sync: fails twice then succeeds, zero wait (per logical call)",
    "async-fail": "Failure path, async: fails twice then succeeds, zero wait (per logical call)",
}


def fmt(ns: float) -> str:
    if ns >= 10_000:
        return f"{ns / 1000:,.1f} us"
    if ns >= 1000:
        return f"{ns / 1000:.2f} us"
    return f"{ns:.0f} ns"


def paired_ratio(a: Subject, b: Subject) -> float:
    """Median over rounds of a/b measured in the same round."""
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))


@dataclass
class Target:
    label: str
    ours: str
    reference: str  # a subject key
    limit: float
    ratio: float = float("nan")  # min(ours) / min(reference): judged
    paired: float = float("nan")  # median of per-round ratios: shown beside it

    @property
    def passed(self) -> bool:
        return self.ratio <= self.limit


FLOORS = ("bare", "one-line", "hand-written", "asyncio.timeout", "anyio")


def fastest(subjects: dict[str, Subject], group: str) -> Subject | None:
    peers = [
        s
        for s in subjects.values()
        if s.group == group and not s.name.startswith(("buttress", *FLOORS))
    ]
    return min(peers, key=lambda s: s.minimum) if peers else None


def resolve_targets(subjects: dict[str, Subject]) -> list[Target]:
    targets = [
        Target("sync Retry <= 1/2 fastest sync peer retry", "sync/buttress Retry", "", 0.5),
        Target("async Retry <= 1/2 fastest async peer retry", "async/buttress Retry", "", 0.5),
        Target(
            "async Timeout <= 1/4 asyncio.timeout()",
            "async/buttress Timeout",
            "async/asyncio.timeout()",
            0.25,
        ),
        Target(
            "sync failure path <= 3x hand-written loop",
            "sync-fail/buttress Retry",
            "sync-fail/hand-written try/except loop",
            3.0,
        ),
        Target(
            "async failure path <= 3x hand-written loop",
            "async-fail/buttress Retry",
            "async-fail/hand-written try/except loop",
            3.0,
        ),
    ]
    for target, group in ((targets[0], "sync"), (targets[1], "async")):
        best = fastest(subjects, group)
        target.reference = best.key if best else ""
    out = []
    for target in targets:
        ours, ref = subjects.get(target.ours), subjects.get(target.reference)
        if ours is None or ref is None:
            continue
        target.ratio = ours.minimum / ref.minimum
        target.paired = paired_ratio(ours, ref)
        out.append(target)
    return out


def report(subjects: list[Subject], targets: list[Target], meta: dict[str, Any]) -> str:
    lines = [
        f"buttress {meta['buttress']} on {meta['python']} ({meta['platform']}), "
        f"{meta['rounds']} rounds of ~{meta['sample_ms']:g} ms samples ({meta['clock']} clock), "
        f"{meta['seconds']:.0f} s",
        "",
    ]
    by_key = {s.key: s for s in subjects}
    for group, title in GROUP_TITLES.items():
        members = [s for s in subjects if s.group == group]
        if not members:
            continue
        floor = next(
            (s for s in members if s.name.startswith(("one-line", "hand-written"))), members[0]
        )
        lines.append(f"### {title}")
        lines.append("")
        lines.append(f"| subject | min | median | min / min of {floor.name} |")
        lines.append("|---|---:|---:|---:|")
        for s in sorted(members, key=lambda s: s.minimum):
            lines.append(
                f"| {s.name} | {fmt(s.minimum)} | {fmt(s.median)} | "
                f"{s.minimum / floor.minimum:.2f} |"
            )
        lines.append("")
    lines.append("### Targets")
    lines.append("")
    lines.append(
        "Judged on the ratio of minimums; the median of per-round ratios is shown beside it."
    )
    lines.append("")
    lines.append(
        "| target | ours (min) | reference (min) | ratio | per-round median | limit | result |"
    )
    lines.append("|---|---:|---|---:|---:|---:|---|")
    for t in targets:
        ours = by_key[t.ours]
        ref = by_key[t.reference]
        lines.append(
            f"| {t.label} | {fmt(ours.minimum)} | {ref.name} {fmt(ref.minimum)} | "
            f"{t.ratio:.3f} | {t.paired:.3f} | {t.limit:g} | "
            f"{'PASS' if t.passed else 'FAIL'} |"
        )
    lines.append("")
    for group in ("sync", "async", "sync-fail", "async-fail"):
        pipe = by_key.get(f"{group}/buttress Fallback>Retry>Timeout")
        if pipe is not None:
            lines.append(
                f"- {group}: pipeline Fallback(Retry(Timeout)) {fmt(pipe.minimum)} per call (min)"
            )
    for note in meta["skipped"]:
        lines.append(f"- skipped {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="rounds over all subjects")
    parser.add_argument("--sample-ms", type=float, default=2.0, help="target ms per sample")
    parser.add_argument("--quick", action="store_true", help="10 rounds (smoke test)")
    parser.add_argument("--only", default="", help="run only subjects whose key contains this")
    parser.add_argument("--json", metavar="FILE", help="also write raw samples as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="time samples by the thread's CPU time (default) or by wall time",
    )
    args = parser.parse_args(argv)
    CLOCK[0] = time.thread_time_ns if args.clock == "cpu" else time.perf_counter_ns
    if args.quick:
        args.rounds = 10

    skipped: list[str] = []
    subjects = build_subjects(skipped)
    if args.only:
        subjects = [s for s in subjects if args.only in s.key]
    if not subjects:
        print(f"no subject matches --only {args.only!r}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with asyncio.Runner() as runner:
        for s in subjects:
            calibrate(runner, s, args.sample_ms * 1e6)
        for r in range(args.rounds):
            shift = r % len(subjects)
            for s in subjects[shift:] + subjects[:shift]:
                s.samples.append(sample(runner, s, s.n))
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    meta = {
        "buttress": buttress.__version__,
        "python": f"CPython {platform.python_version()}",
        "platform": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "rounds": args.rounds,
        "sample_ms": args.sample_ms,
        "clock": args.clock,
        "seconds": time.perf_counter() - started,
        "skipped": skipped,
        "peers": {
            d: version(d)
            for d in ("tenacity", "stamina", "backoff", "opnieuw", "pyresilience", "hyx", "anyio")
        },
    }
    targets = resolve_targets({s.key: s for s in subjects})
    print(report(subjects, targets, meta))
    print("- peers: " + ", ".join(f"{k} {v}" for k, v in meta["peers"].items() if v))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "meta": meta,
                    "subjects": {s.key: s.samples for s in subjects},
                    "targets": {t.label: [t.ratio, t.paired, t.limit] for t in targets},
                },
                fh,
                indent=1,
            )
    return 1 if args.strict and not all(t.passed for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
