"""Scenario files: TOML parsed with `tomllib` and validated by hand into frozen dataclasses.

Every problem becomes one `ScenarioError` naming the file, the key path (for example
``faults[1].duration``) and what was expected. Validation is written out by hand rather
than with a schema library so the lab adds no dependency to the core package and the
messages say exactly what a reader needs (the key reference is `docs/lab.md`).
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ScenarioError

__all__ = [
    "ClientSpec",
    "DependencySpec",
    "Distribution",
    "FAULT_KINDS",
    "FaultSpec",
    "LoadSpec",
    "MAX_DURATION",
    "PipelineSpec",
    "Scenario",
    "ZoneDelays",
    "load_scenario",
    "parse_scenario",
]

FAULT_KINDS = (
    "outage",
    "error_rate",
    "latency",
    "capacity",
    "slow_replica",
    "replica_down",
    "zone_down",
    "flapping",
    "partition",
    "cache_flush",
)
DISTRIBUTIONS = ("constant", "exponential", "lognormal", "bimodal", "abs_normal")
KEY_POPULARITY = ("uniform", "zipf")
FLUSH_WINDOW = 10.0
"""Default ``duration`` of a ``cache_flush`` fault: the seconds after the flush that its
metrics (loads per key, peak load) cover."""
MAX_DURATION = 86_400.0
"""Longest ``scenario.duration`` in seconds (one day of virtual time): a run keeps
per-second counters, so an unbounded duration would exhaust memory before simulating."""


@dataclass(frozen=True)
class Distribution:
    """A service-time (or network-delay) distribution, seconds.

    ``constant``: ``value``; ``exponential``: ``mean``; ``lognormal``: ``p50`` and ``p99``;
    ``bimodal``: ``fast`` with probability ``1 - slow_fraction``, else ``slow``;
    ``abs_normal``: ``|Normal(mean, sd)|``.
    """

    kind: str = "constant"
    value: float = 0.0
    mean: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    fast: float = 0.0
    slow: float = 0.0
    slow_fraction: float = 0.0
    sd: float = 0.0


@dataclass(frozen=True)
class ZoneDelays:
    """One-way network delays between zones, seconds (``[dependency.zone_delay]``).

    ``same``: within a zone; ``cross``: between two different zones; ``pairs``:
    ``(from, to, seconds)`` overrides (the reverse direction uses the same delay unless it
    is listed too).
    """

    same: float = 0.0
    cross: float = 0.0
    pairs: tuple[tuple[str, str, float], ...] = ()

    def between(self, src: str, dst: str) -> float:
        """One-way delay in seconds of a message from zone ``src`` to zone ``dst``."""
        for a, b, d in self.pairs:
            if a == src and b == dst:
                return d
        for a, b, d in self.pairs:
            if a == dst and b == src:
                return d
        return self.same if src == dst else self.cross


@dataclass(frozen=True)
class DependencySpec:
    """The modelled dependency (``[dependency]``)."""

    kind: str = "service"
    replicas: int = 1
    zones: tuple[str, ...] = ("zone-a",)
    workers: int = 1
    queue: int = 1000
    queue_order: str = "fifo"
    service: Distribution = field(default_factory=lambda: Distribution("exponential", mean=0.1))
    network: Distribution = field(default_factory=Distribution)
    zone_delay: ZoneDelays = field(default_factory=ZoneDelays)
    keep_abandoned: bool = True
    deadline_propagation: bool = False
    rejection_cost: float = 0.0
    throttle_retry_after: float | None = None


@dataclass(frozen=True)
class LoadSpec:
    """The offered load (``[load]``)."""

    kind: str = "open"
    arrival: str = "poisson"
    rate: float = 0.0
    ramp: tuple[tuple[float, float], ...] = ()
    clients: int = 1
    think_time: float = 0.0
    requests_per_client: int = 0
    fanout: int = 1
    keys: int = 1
    key_popularity: str = "uniform"
    zipf_exponent: float = 1.0
    start: float = 0.0
    stop: float | None = None

    def rate_at(self, t: float) -> float:
        """Arrival rate (user requests per second) at time ``t`` (piecewise linear ramp)."""
        ramp = self.ramp
        if not ramp:
            return self.rate
        if t <= ramp[0][0]:
            return ramp[0][1]
        for (t0, r0), (t1, r1) in itertools.pairwise(ramp):
            if t < t1:
                return r0 + (r1 - r0) * (t - t0) / (t1 - t0) if t1 > t0 else r1
        return ramp[-1][1]


@dataclass(frozen=True)
class ClientSpec:
    """The client transport (``[client]``)."""

    timeout: float | None = None
    routing: str = "random"
    zone: str | None = None
    """The callers' zone (for ``dependency.zone_delay``); ``None``: the first zone."""


@dataclass(frozen=True)
class FaultSpec:
    """One fault on the timeline (``[[faults]]``)."""

    kind: str
    start: float
    duration: float
    mode: str = "fast"
    rate: float = 1.0
    factor: float = 1.0
    remaining: float = 1.0
    replica: int | None = None
    zone: str | None = None
    keys: tuple[int, ...] = ()
    bad: float = 10.0
    good: float = 10.0

    @property
    def end(self) -> float:
        """When the fault stops, seconds."""
        return self.start + self.duration


@dataclass(frozen=True)
class PipelineSpec:
    """One pipeline to compare (``[pipelines.NAME]``)."""

    name: str
    description: str = ""
    baseline: str | None = None
    strategies: tuple[tuple[str, dict[str, Any]], ...] = ()
    on: tuple[str, ...] = ()
    python: str | None = None


@dataclass(frozen=True)
class Scenario:
    """A whole scenario file, validated."""

    name: str
    duration: float
    description: str = ""
    reproduces: str = ""
    seeds: int = 5
    window: float = 10.0
    recovery_threshold: float = 0.95
    recovery_hold: float = 20.0
    recovery_bin: float = 5.0
    recover_within: float = 30.0
    dependency: DependencySpec = field(default_factory=DependencySpec)
    load: LoadSpec = field(default_factory=LoadSpec)
    client: ClientSpec = field(default_factory=ClientSpec)
    faults: tuple[FaultSpec, ...] = ()
    pipelines: tuple[PipelineSpec, ...] = ()
    source: str = "<scenario>"

    def scaled(self, factor: float) -> Scenario:
        """A copy with the open-loop rate (and ramp) multiplied by ``factor`` (tests)."""
        from dataclasses import replace

        load = replace(
            self.load,
            rate=self.load.rate * factor,
            ramp=tuple((t, r * factor) for t, r in self.load.ramp),
        )
        return replace(self, load=load)


# -- validation helpers -------------------------------------------------------------------


class _V:
    """Validation context: the file name, for messages."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(self.file, key, message)

    def table(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_show(value)}")
        for k in value:
            if k not in allowed:
                raise self.fail(
                    _join(key, k), f"unknown key; expected one of: {', '.join(sorted(allowed))}"
                )
        return value

    def number(
        self,
        t: dict[str, Any],
        key: str,
        path: str,
        default: Any = None,
        *,
        lo: float = 0.0,
        lo_open: bool = False,
        hi: float | None = None,
        required: bool = False,
    ) -> Any:
        if key not in t:
            if required:
                raise self.fail(_join(path, key), "missing; expected a number")
            return default
        v = t[key]
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        if hi is not None:
            bound += f" and <= {hi:g}"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise self.fail(_join(path, key), f"expected a number {bound}, got {_show(v)}")
        if math.isinf(v) or v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
            raise self.fail(_join(path, key), f"expected a number {bound}, got {_show(v)}")
        return float(v)

    def integer(self, t: dict[str, Any], key: str, path: str, default: int, *, lo: int = 0) -> int:
        if key not in t:
            return default
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise self.fail(_join(path, key), f"expected an integer >= {lo}, got {_show(v)}")
        return v

    def string(
        self,
        t: dict[str, Any],
        key: str,
        path: str,
        default: Any,
        choices: tuple[str, ...] | None = None,
        *,
        required: bool = False,
    ) -> Any:
        if key not in t:
            if required:
                what = f"one of: {', '.join(choices)}" if choices else "a string"
                raise self.fail(_join(path, key), f"missing; expected {what}")
            return default
        v = t[key]
        if not isinstance(v, str):
            raise self.fail(_join(path, key), f"expected a string, got {_show(v)}")
        if choices is not None and v not in choices:
            raise self.fail(_join(path, key), f"expected one of: {', '.join(choices)}; got {v!r}")
        return v

    def boolean(self, t: dict[str, Any], key: str, path: str, default: bool) -> bool:
        if key not in t:
            return default
        v = t[key]
        if not isinstance(v, bool):
            raise self.fail(_join(path, key), f"expected true or false, got {_show(v)}")
        return v


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(v: Any) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(v), type(v).__name__)
    text = repr(v)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} ({text})"


# -- sections -------------------------------------------------------------------------------


_DISTRIBUTION_KEYS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "exponential": ("mean",),
    "lognormal": ("p50", "p99"),
    "bimodal": ("fast", "slow", "slow_fraction"),
    "abs_normal": ("mean", "sd"),
}


def _distribution(v: _V, value: Any, path: str) -> Distribution:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0 or math.isnan(value) or math.isinf(value):
            raise v.fail(path, f"expected seconds >= 0 or a table, got {_show(value)}")
        return Distribution("constant", value=float(value))
    t = v.table(
        value,
        path,
        ("distribution", "value", "mean", "p50", "p99", "fast", "slow", "slow_fraction", "sd"),
    )
    kind = v.string(t, "distribution", path, None, DISTRIBUTIONS, required=True)
    # strict per kind: a key of another distribution (``sd`` on an exponential) would be
    # silently ignored, and the run would not model what the file says
    allowed = ("distribution", *_DISTRIBUTION_KEYS[kind])
    for k in t:
        if k not in allowed:
            raise v.fail(
                _join(path, k),
                f"unknown key for distribution {kind!r}; expected one of: {', '.join(allowed)}",
            )
    if kind == "constant":
        return Distribution(kind, value=v.number(t, "value", path, required=True))
    if kind == "exponential":
        return Distribution(kind, mean=v.number(t, "mean", path, lo_open=True, required=True))
    if kind == "lognormal":
        p50 = v.number(t, "p50", path, lo_open=True, required=True)
        p99 = v.number(t, "p99", path, lo_open=True, required=True)
        if p99 < p50:
            raise v.fail(_join(path, "p99"), f"expected a number >= p50 ({p50:g}), got {p99:g}")
        return Distribution(kind, p50=p50, p99=p99)
    if kind == "bimodal":
        return Distribution(
            kind,
            fast=v.number(t, "fast", path, required=True),
            slow=v.number(t, "slow", path, required=True),
            slow_fraction=v.number(t, "slow_fraction", path, required=True, hi=1.0),
        )
    return Distribution(
        kind,
        mean=v.number(t, "mean", path, required=True),
        sd=v.number(t, "sd", path, 0.0),
    )


def _dependency(v: _V, value: Any) -> DependencySpec:
    p = "dependency"
    t = v.table(
        value,
        p,
        (
            "kind",
            "replicas",
            "zones",
            "workers",
            "queue",
            "queue_order",
            "service",
            "network",
            "zone_delay",
            "keep_abandoned",
            "deadline_propagation",
            "rejection_cost",
            "throttle_retry_after",
        ),
    )
    zones: tuple[str, ...] = ("zone-a",)
    if "zones" in t:
        z = t["zones"]
        if not isinstance(z, list) or not z or not all(isinstance(x, str) for x in z):
            raise v.fail(
                "dependency.zones", f"expected a non-empty array of strings, got {_show(z)}"
            )
        for i, name in enumerate(z):
            if name in z[:i]:
                raise v.fail(
                    f"dependency.zones[{i}]",
                    f"duplicate zone {name!r}; expected distinct zone names",
                )
        zones = tuple(z)
    kind = v.string(t, "kind", p, "service", ("service", "occ"))
    zone_delay = ZoneDelays()
    if "zone_delay" in t:
        if kind != "service":
            raise v.fail("dependency.zone_delay", "only for kind = 'service' (replicas in zones)")
        zone_delay = _zone_delay(v, t["zone_delay"], zones)
    return DependencySpec(
        kind=kind,
        replicas=v.integer(t, "replicas", p, 1, lo=1),
        zones=zones,
        workers=v.integer(t, "workers", p, 1, lo=1),
        queue=v.integer(t, "queue", p, 1000, lo=0),
        queue_order=v.string(t, "queue_order", p, "fifo", ("fifo", "lifo")),
        service=_distribution(v, t["service"], "dependency.service")
        if "service" in t
        else Distribution("exponential", mean=0.1),
        network=_distribution(v, t["network"], "dependency.network")
        if "network" in t
        else Distribution(),
        zone_delay=zone_delay,
        keep_abandoned=v.boolean(t, "keep_abandoned", p, True),
        deadline_propagation=v.boolean(t, "deadline_propagation", p, False),
        rejection_cost=v.number(t, "rejection_cost", p, 0.0),
        throttle_retry_after=v.number(t, "throttle_retry_after", p, None),
    )


def _zone(v: _V, name: Any, key: str, zones: tuple[str, ...]) -> str:
    if name not in zones:
        raise v.fail(
            key, f"unknown zone {name!r}; expected one of dependency.zones: {', '.join(zones)}"
        )
    return str(name)


def _zone_delay(v: _V, value: Any, zones: tuple[str, ...]) -> ZoneDelays:
    p = "dependency.zone_delay"
    t = v.table(value, p, ("same", "cross", "pairs"))
    pairs: list[tuple[str, str, float]] = []
    raw = t.get("pairs", {})
    if not isinstance(raw, dict):
        raise v.fail(
            f"{p}.pairs",
            f"expected a table like {{ zone-a = {{ zone-b = 0.001 }} }}, got {_show(raw)}",
        )
    for src, row in raw.items():
        key = f"{p}.pairs.{src}"
        _zone(v, src, key, zones)
        if not isinstance(row, dict):
            raise v.fail(
                key, f"expected a table of destination zone = seconds >= 0, got {_show(row)}"
            )
        for dst in row:
            _zone(v, dst, f"{key}.{dst}", zones)
            pairs.append((src, dst, v.number(row, dst, key)))
    return ZoneDelays(
        same=v.number(t, "same", p, 0.0),
        cross=v.number(t, "cross", p, 0.0),
        pairs=tuple(pairs),
    )


def _load(v: _V, value: Any, duration: float) -> LoadSpec:
    p = "load"
    t = v.table(
        value,
        p,
        (
            "kind",
            "arrival",
            "rate",
            "ramp",
            "clients",
            "think_time",
            "requests_per_client",
            "fanout",
            "keys",
            "key_popularity",
            "zipf_exponent",
            "start",
            "stop",
        ),
    )
    kind = v.string(t, "kind", p, "open", ("open", "closed"))
    ramp: list[tuple[float, float]] = []
    if "ramp" in t:
        r = t["ramp"]
        if not isinstance(r, list) or not r:
            raise v.fail("load.ramp", f"expected an array of [time, rate] pairs, got {_show(r)}")
        last = -math.inf
        for i, pair in enumerate(r):
            key = f"load.ramp[{i}]"
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)
            ):
                raise v.fail(key, f"expected [time seconds, rate per second], got {_show(pair)}")
            if pair[0] < last or pair[1] < 0 or pair[0] < 0:
                raise v.fail(
                    key,
                    f"expected times >= 0 in increasing order and rates >= 0, got {_show(pair)}",
                )
            last = pair[0]
            ramp.append((float(pair[0]), float(pair[1])))
    if kind == "open" and "rate" not in t and not ramp:
        raise v.fail("load.rate", "missing; an open load needs rate (or ramp), requests/s")
    if kind == "closed":
        for k in ("rate", "ramp", "arrival"):
            if k in t:
                raise v.fail(
                    _join(p, k),
                    "only for kind = 'open'; a closed load is set by clients, think_time "
                    "and requests_per_client",
                )
    key_popularity = v.string(t, "key_popularity", p, "uniform", KEY_POPULARITY)
    if "zipf_exponent" in t and key_popularity != "zipf":
        raise v.fail(
            "load.zipf_exponent", "only with key_popularity = 'zipf' (it would be ignored)"
        )
    start = v.number(t, "start", p, 0.0)
    if start >= duration:
        raise v.fail(
            "load.start", f"expected a number < scenario.duration ({duration:g}), got {start:g}"
        )
    stop = v.number(t, "stop", p, None)
    if stop is not None and stop <= start:
        raise v.fail("load.stop", f"expected a number > load.start ({start:g}), got {stop:g}")
    if stop is not None and stop > duration:
        raise v.fail(
            "load.stop", f"expected a number <= scenario.duration ({duration:g}), got {stop:g}"
        )
    return LoadSpec(
        kind=kind,
        arrival=v.string(t, "arrival", p, "poisson", ("poisson", "constant")),
        rate=v.number(t, "rate", p, 0.0),
        ramp=tuple(ramp),
        clients=v.integer(t, "clients", p, 1, lo=1),
        think_time=v.number(t, "think_time", p, 0.0),
        requests_per_client=v.integer(t, "requests_per_client", p, 0, lo=0),
        fanout=v.integer(t, "fanout", p, 1, lo=1),
        keys=v.integer(t, "keys", p, 1, lo=1),
        key_popularity=key_popularity,
        zipf_exponent=v.number(t, "zipf_exponent", p, 1.0, hi=10.0),
        start=start,
        stop=stop,
    )


def _client(v: _V, value: Any, dep: DependencySpec) -> ClientSpec:
    p = "client"
    t = v.table(value, p, ("timeout", "routing", "zone"))
    zone = v.string(t, "zone", p, None)
    return ClientSpec(
        timeout=v.number(t, "timeout", p, None, lo_open=True),
        routing=v.string(t, "routing", p, "random", ("random", "round_robin")),
        zone=None if zone is None else _zone(v, zone, "client.zone", dep.zones),
    )


_FAULT_KEYS: dict[str, tuple[str, ...]] = {
    "outage": ("mode", "replica", "zone"),
    "error_rate": ("rate", "replica", "zone"),
    "latency": ("factor", "replica", "zone"),
    "capacity": ("remaining", "replica", "zone"),
    "slow_replica": ("factor", "replica"),
    "replica_down": ("replica",),
    "zone_down": ("zone",),
    "flapping": ("mode", "bad", "good", "replica", "zone"),
    "partition": ("mode", "keys"),
    "cache_flush": (),
}


def _fault(
    v: _V, value: Any, i: int, dep: DependencySpec, load: LoadSpec, duration: float
) -> FaultSpec:
    p = f"faults[{i}]"
    if not isinstance(value, dict):
        raise v.fail(p, f"expected a table, got {_show(value)}")
    kind = v.string(value, "kind", p, None, FAULT_KINDS, required=True)
    allowed = ("kind", "start", "duration", *_FAULT_KEYS[kind])
    t = v.table(value, p, allowed)
    replica = None
    if "replica" in t:
        replica = v.integer(t, "replica", p, 0, lo=0)
        if replica >= dep.replicas:
            raise v.fail(
                f"{p}.replica",
                f"expected a replica index 0..{dep.replicas - 1}, got {replica}",
            )
    elif kind in ("slow_replica", "replica_down"):
        raise v.fail(f"{p}.replica", "missing; expected a replica index (0-based)")
    zone = v.string(t, "zone", p, None, dep.zones, required=kind == "zone_down")
    keys: tuple[int, ...] = ()
    if kind == "partition":
        k = t.get("keys")
        if (
            not isinstance(k, list)
            or not k
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in k)
            or not all(0 <= x < load.keys for x in k)
        ):
            raise v.fail(
                f"{p}.keys",
                f"expected a non-empty array of key indexes 0..{load.keys - 1} "
                f"(see load.keys), got {_show(k)}",
            )
        keys = tuple(k)
    if kind == "cache_flush" and dep.kind != "service":
        raise v.fail(f"{p}.kind", "'cache_flush' needs dependency.kind = 'service'")
    flush = kind == "cache_flush"
    start = v.number(t, "start", p, required=True)
    if start >= duration:
        # it would never happen: the run ends first
        raise v.fail(
            f"{p}.start", f"expected a number < scenario.duration ({duration:g}), got {start:g}"
        )
    return FaultSpec(
        kind=kind,
        start=start,
        duration=v.number(
            t, "duration", p, FLUSH_WINDOW if flush else None, required=not flush, lo_open=True
        ),
        mode=v.string(t, "mode", p, "fast", ("fast", "hang")),
        rate=v.number(t, "rate", p, 1.0, hi=1.0),
        factor=v.number(t, "factor", p, 10.0 if kind == "slow_replica" else 1.0, lo_open=True),
        remaining=v.number(t, "remaining", p, 1.0, hi=1.0),
        replica=replica,
        zone=zone,
        keys=keys,
        bad=v.number(t, "bad", p, 10.0, lo_open=True),
        good=v.number(t, "good", p, 10.0, lo_open=True),
    )


def _pipelines(v: _V, value: Any) -> tuple[PipelineSpec, ...]:
    from .pipelines import BASELINES, ERROR_NAMES, STRATEGY_NAMES, available_strategies

    if not isinstance(value, dict) or not value:
        raise v.fail("pipelines", f"expected a table of named pipelines, got {_show(value)}")
    out = []
    for name, body in value.items():
        p = f"pipelines.{name}"
        t = v.table(body, p, ("description", "baseline", "strategies", "on", "python"))
        given = [k for k in ("baseline", "strategies", "python") if k in t]
        if len(given) != 1:
            raise v.fail(p, "expected exactly one of: baseline, strategies, python")
        on: tuple[str, ...] = ()
        if "on" in t:
            o = t["on"]
            if not isinstance(o, list) or not all(isinstance(x, str) for x in o):
                raise v.fail(f"{p}.on", f"expected an array of error names, got {_show(o)}")
            for j, x in enumerate(o):
                if x not in ERROR_NAMES:
                    raise v.fail(
                        f"{p}.on[{j}]", f"expected one of: {', '.join(ERROR_NAMES)}; got {x!r}"
                    )
            on = tuple(o)
        strategies: list[tuple[str, dict[str, Any]]] = []
        if "strategies" in t:
            s = t["strategies"]
            if not isinstance(s, list) or not s:
                raise v.fail(
                    f"{p}.strategies",
                    "expected an array of one-key tables like { retry = { attempts = 3 } }, "
                    f"got {_show(s)}",
                )
            for j, item in enumerate(s):
                key = f"{p}.strategies[{j}]"
                if not isinstance(item, dict) or len(item) != 1:
                    raise v.fail(
                        key,
                        "expected a one-key table like { retry = { attempts = 3 } }, "
                        f"got {_show(item)}",
                    )
                ((sname, kwargs),) = item.items()
                if sname not in STRATEGY_NAMES:
                    raise v.fail(
                        f"{key}.{sname}",
                        f"unknown strategy; expected one of: {', '.join(available_strategies())}",
                    )
                if not isinstance(kwargs, dict):
                    raise v.fail(
                        f"{key}.{sname}", f"expected a table of options, got {_show(kwargs)}"
                    )
                strategies.append((sname, kwargs))
        baseline = v.string(t, "baseline", p, None, tuple(BASELINES))
        python = v.string(t, "python", p, None)
        if python is not None and ":" not in python:
            raise v.fail(f"{p}.python", f"expected 'module:attribute', got {python!r}")
        out.append(
            PipelineSpec(
                name=str(name),
                description=v.string(t, "description", p, ""),
                baseline=baseline,
                strategies=tuple(strategies),
                on=on,
                python=python,
            )
        )
    return tuple(out)


def parse_scenario(data: dict[str, Any], file: str = "<scenario>") -> Scenario:
    """Validate a parsed TOML document into a `Scenario`.

    Raises:
        ScenarioError: The first problem found, with its key path.
    """
    v = _V(file)
    v.table(data, "", ("scenario", "dependency", "load", "client", "faults", "pipelines"))
    if "scenario" not in data:
        raise v.fail("scenario", "missing; expected a [scenario] table with name and duration")
    p = "scenario"
    s = v.table(
        data["scenario"],
        p,
        (
            "name",
            "description",
            "reproduces",
            "duration",
            "seeds",
            "window",
            "recovery_threshold",
            "recovery_hold",
            "recovery_bin",
            "recover_within",
        ),
    )
    # bounded: the lab keeps per-second counters for the whole run (one day is plenty)
    duration = v.number(s, "duration", p, required=True, lo_open=True, hi=MAX_DURATION)
    dep = _dependency(v, data.get("dependency", {}))
    load = _load(v, data.get("load", {}), duration)
    client = _client(v, data.get("client", {}), dep)
    faults_raw = data.get("faults", [])
    if not isinstance(faults_raw, list):
        raise v.fail("faults", f"expected an array of tables ([[faults]]), got {_show(faults_raw)}")
    faults = tuple(_fault(v, f, i, dep, load, duration) for i, f in enumerate(faults_raw))
    if "pipelines" not in data:
        raise v.fail("pipelines", "missing; expected at least one [pipelines.NAME] table")
    pipelines = _pipelines(v, data["pipelines"])
    if dep.kind == "occ" and load.kind != "closed":
        raise v.fail("load.kind", "the 'occ' dependency needs a closed load (kind = 'closed')")
    name = v.string(s, "name", p, None, required=True)
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        # the name is the output directory under lab-results/: never a path
        raise v.fail(
            "scenario.name",
            f"expected a plain name usable as a directory name (no '/', '\\', "
            f"'.' or '..'), got {name!r}",
        )
    return Scenario(
        name=name,
        description=v.string(s, "description", p, ""),
        reproduces=v.string(s, "reproduces", p, ""),
        duration=duration,
        seeds=v.integer(s, "seeds", p, 5, lo=1),
        window=v.number(s, "window", p, 10.0, lo_open=True),
        recovery_threshold=v.number(s, "recovery_threshold", p, 0.95, hi=1.0),
        recovery_hold=v.number(s, "recovery_hold", p, 20.0, lo_open=True),
        recovery_bin=v.number(s, "recovery_bin", p, 5.0, lo_open=True),
        recover_within=v.number(s, "recover_within", p, 30.0),
        dependency=dep,
        load=load,
        client=client,
        faults=faults,
        pipelines=pipelines,
        source=file,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file.

    Raises:
        ScenarioError: The file is missing, is not valid TOML, or fails validation.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(name, "", f"cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            name, "", f"not a UTF-8 text file (byte {exc.start}); TOML files are UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(name, "", f"not valid TOML: {exc}") from None
    scenario = parse_scenario(data, name)
    from .pipelines import check_pipelines

    check_pipelines(scenario)
    return scenario
