"""Build the pipelines a scenario compares, on the simulator's clock and a seeded random.

Three sources:

* ``strategies = [{ retry = {...} }, { timeout = {...} }]`` in the scenario file: strategy
  names mapped to buttress constructors and their keyword arguments (outermost first);
* ``python = "module:attribute"`` or ``--pipeline module:attribute``: a `Pipeline` built by
  the team's own code (or a callable returning one). The module is executed afresh for
  every run, so stateful strategies (budgets, breakers) never leak between runs, and the
  pipeline is rebuilt from its ``.strategies`` on the lab's clock and random source;
* ``baseline = "NAME"``: what users get from a peer library by default, modelled with
  buttress strategies (see `BASELINES`; the equivalences are documented in docs/lab.md).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import random as _random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import buttress
from buttress import Pipeline, Retry, backoff
from buttress._exceptions import RejectedError

from .errors import (
    ConflictError,
    OverloadedError,
    ScenarioError,
    ServerError,
    ThrottledError,
    UnavailableError,
)

if TYPE_CHECKING:
    from .._core.clock import Clock
    from .scenario import PipelineSpec, Scenario

__all__ = [
    "BASELINES",
    "DEFAULT_ON",
    "ERROR_NAMES",
    "STRATEGY_NAMES",
    "build_pipeline",
    "check_pipelines",
]

ERROR_NAMES: dict[str, type[BaseException]] = {
    "error": ServerError,
    "overloaded": OverloadedError,
    "timeout": TimeoutError,
    "unavailable": UnavailableError,
    "throttled": ThrottledError,
    "conflict": ConflictError,
    "rejected": RejectedError,
}
"""Names usable in ``on = [...]``: ``error`` (any 5xx, `ServerError`), ``overloaded``
(503 queue full), ``timeout`` (any `TimeoutError`, the client's or a buttress `Timeout`'s),
``unavailable`` (connection refused), ``throttled`` (429 with Retry-After), ``conflict``
(OCC write lost, S1), ``rejected`` (any `buttress.RejectedError`)."""

DEFAULT_ON = ("error", "timeout", "unavailable", "throttled")
"""What baselines and strategies retry when the scenario does not say (``on``)."""

STRATEGY_NAMES: dict[str, str] = {
    "retry": "Retry",
    "timeout": "Timeout",
    "fallback": "Fallback",
    "circuit_breaker": "CircuitBreaker",
    "bulkhead": "Bulkhead",
    "rate_limiter": "RateLimiter",
    "hedge": "Hedge",
    "adaptive_concurrency": "AdaptiveConcurrency",
    "cache_aside": "CacheAside",
    "load_balance": "LoadBalance",
    "inject_fault": "InjectFault",
    "inject_latency": "InjectLatency",
}
"""Scenario strategy names -> buttress class names (looked up when the pipeline is built,
so strategies that are not in this version of buttress give a clear error)."""


def available_strategies() -> list[str]:
    """The strategy names usable in this version of buttress (their class exists)."""
    return [name for name, cls in STRATEGY_NAMES.items() if hasattr(buttress, cls)]


class _Stamina:
    """stamina's default wait: ``min(5, 0.1 * 2 ** (attempt - 1) + uniform(0, 1))`` seconds."""

    __slots__ = ()

    def delay(self, attempt: int, previous: float, rng: _random.Random) -> float:
        return min(5.0, 0.1 * 2.0 ** min(attempt - 1, 64) + rng.random() * 1.0)

    def __repr__(self) -> str:
        return "stamina_wait()"


def _on(names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    return tuple(ERROR_NAMES[n] for n in (names or DEFAULT_ON))


class NaiveTTLCache:
    """Baseline cache with no stampede protection (what ``cachetools.TTLCache`` gives).

    Every call that finds the key missing or expired calls through and stores the result
    for ``ttl`` seconds; concurrent misses all load (no single-flight, no early refresh).
    Keyed by the call's positional arguments. Lab-internal: only for comparisons.
    """

    name = "naive-ttl-cache"

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = float(ttl)
        self._caches: list[dict[Any, tuple[Any, float]]] = []

    def clear(self) -> None:
        """Drop every entry (a ``cache_flush`` fault)."""
        for cache in self._caches:
            cache.clear()

    def build_sync(self, next_step: Any, env: Any) -> Any:
        raise RuntimeError("the lab runs pipelines asynchronously")

    def build_async(self, next_step: Any, env: Any) -> Any:
        cache: dict[Any, tuple[Any, float]] = {}
        self._caches.append(cache)
        clock = env.clock
        ttl = self.ttl

        async def step(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            hit = cache.get(args)
            if hit is not None and clock.now() < hit[1]:
                return hit[0]
            value = await next_step(fn, args, kwargs)
            cache[args] = (value, clock.now() + ttl)
            return value

        return step


def _baseline_cachetools(on: tuple[str, ...]) -> list[Any]:
    return [NaiveTTLCache(60.0)]


def _baseline_no_retry(on: tuple[str, ...]) -> list[Any]:
    return []


def _baseline_tenacity3(on: tuple[str, ...]) -> list[Any]:
    return [Retry(on=_on(on), attempts=3, backoff=backoff.none(), budget=None)]


def _baseline_tenacity3_jitter(on: tuple[str, ...]) -> list[Any]:
    return [
        Retry(
            on=_on(on),
            attempts=3,
            backoff=backoff.exponential(1.0, cap=60.0, jitter="full"),
            budget=None,
        )
    ]


def _baseline_stamina(on: tuple[str, ...]) -> list[Any]:
    return [Retry(on=_on(on), attempts=10, max_elapsed=45.0, backoff=_Stamina(), budget=None)]


def _baseline_one_retry(on: tuple[str, ...]) -> list[Any]:
    return [Retry(on=_on(on), attempts=2, backoff=backoff.none(), budget=None)]


def _baseline_aws_standard(on: tuple[str, ...]) -> list[Any]:
    return [
        Retry(
            on=_on(on),
            attempts=3,
            backoff=backoff.exponential(1.0, cap=20.0, jitter="full"),
            budget=buttress.TokenBucketBudget(),
        )
    ]


def _baseline_buttress(on: tuple[str, ...]) -> list[Any]:
    return [Retry(on=_on(on))]


def _breaker_baseline(failures: int, reset: float) -> Callable[[tuple[str, ...]], list[Any]]:
    def build(on: tuple[str, ...]) -> list[Any]:
        cls = getattr(buttress, "CircuitBreaker", None)
        if cls is None:
            raise LookupError("CircuitBreaker")
        return [_consecutive_breaker(cls, on, failures, reset)]

    return build


def _consecutive_breaker(cls: Any, on: tuple[str, ...], failures: int, reset: float) -> Any:
    # One shared breaker opening after `failures` failures in a row, open for `reset`
    # seconds, one trial call: pybreaker's and circuitbreaker's model.
    return cls(
        on=_on(on),
        failure_ratio=None,
        consecutive_failures=failures,
        break_duration=reset,
        half_open_calls=1,
    )


BASELINES: dict[str, tuple[str, Callable[[tuple[str, ...]], list[Any]]]] = {
    "no-retry": ("one attempt, no retry (requests/httpx defaults)", _baseline_no_retry),
    "tenacity-3": (
        "tenacity @retry(stop=stop_after_attempt(3)): 3 attempts, no wait, no budget",
        _baseline_tenacity3,
    ),
    "tenacity-3-jitter": (
        "tenacity stop_after_attempt(3) + wait_random_exponential(multiplier=1, max=60)",
        _baseline_tenacity3_jitter,
    ),
    "one-retry": ("1 immediate retry, no budget (Bronson et al.'s example)", _baseline_one_retry),
    "stamina": (
        "stamina defaults: 10 attempts, 45 s, wait min(5, 0.1*2^(n-1) + U(0,1)), no budget",
        _baseline_stamina,
    ),
    "aws-standard": (
        "AWS SDK standard mode: 3 attempts, full jitter 1 s base 20 s cap, 500-token quota",
        _baseline_aws_standard,
    ),
    "buttress-defaults": (
        "buttress Retry defaults: 3 attempts, exponential 0.1 s x2 cap 10 s full jitter, "
        "RatioBudget(0.1, 10/s floor, 10 s window)",
        _baseline_buttress,
    ),
    "cachetools-ttl": (
        "cachetools TTLCache(ttl=60) around the call: no single-flight, no early refresh",
        _baseline_cachetools,
    ),
    "pybreaker": (
        "pybreaker defaults: opens after 5 failures, resets after 60 s, no retry",
        _breaker_baseline(5, 60.0),
    ),
    "circuitbreaker": (
        "circuitbreaker defaults: opens after 5 consecutive failures, half-open after 30 s",
        _breaker_baseline(5, 30.0),
    ),
}
"""Named baselines: name -> (description, builder of the strategy list)."""


# -- strategies from the scenario file ------------------------------------------------------


def _convert_backoff(value: Any) -> Any:
    if isinstance(value, str):
        if value == "none":
            return backoff.none()
        raise ValueError(f"expected 'none', seconds, or a table with kind; got {value!r}")
    if isinstance(value, dict):
        opts = dict(value)
        kind = opts.pop("kind", "exponential")
        makers: dict[str, Callable[..., Any]] = {
            "exponential": backoff.exponential,
            "constant": backoff.constant,
            "linear": backoff.linear,
            "decorrelated": backoff.decorrelated,
            "stamina": _Stamina,
        }
        maker = makers.get(kind)
        if maker is None:
            raise ValueError(
                "expected kind = exponential, constant, linear, decorrelated or stamina; "
                f"got {kind!r}"
            )
        return maker(**opts)
    return value


def _convert_budget(value: Any) -> Any:
    if value is False or value == "none":
        return None
    if isinstance(value, dict):
        opts = dict(value)
        kind = opts.pop("kind", "ratio")
        if kind == "ratio":
            return buttress.RatioBudget(**opts)
        if kind == "token_bucket":
            return buttress.TokenBucketBudget(**opts)
        raise ValueError(f"expected kind = 'ratio' or 'token_bucket', got {kind!r}")
    raise ValueError(f"expected 'none', false, or a table with kind; got {value!r}")


def _convert_on(value: Any) -> Any:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"expected an error name or an array of them; got {value!r}")
    for n in names:
        if n not in ERROR_NAMES:
            raise ValueError(f"expected error names from: {', '.join(ERROR_NAMES)}; got {n!r}")
    return tuple(ERROR_NAMES[n] for n in names)


def _key_of(ctx: Any) -> int:
    from .model import KEY

    return int(ctx.get(KEY))


def _convert_key(value: Any) -> Any:
    # "key" means "the simulated call's key" (load.keys); anything else passes through
    # (e.g. CacheAside's key template "item:{key}").
    return _key_of if value == "key" else value


def _convert_outlier(value: Any) -> Any:
    if value is False or value == "none":
        return None
    if isinstance(value, dict):
        from buttress.routing import OutlierDetector

        return OutlierDetector(**value)
    raise ValueError(f"expected false or a table of OutlierDetector options; got {value!r}")


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "outlier": _convert_outlier,
    "key": _convert_key,
    "backoff": _convert_backoff,
    "budget": _convert_budget,
    "on": _convert_on,
}


def endpoints_for(scenario: Scenario) -> list[Any]:
    """One `buttress.routing.Endpoint` per replica (address = replica index, with its zone).

    A ``load_balance`` strategy in a scenario file gets these unless it names its own.
    """
    from buttress.routing import Endpoint

    dep = scenario.dependency
    return [
        Endpoint(i, name=f"replica-{i}", zone=dep.zones[i % len(dep.zones)])
        for i in range(dep.replicas)
    ]


def _build_strategy(
    sname: str, kwargs: dict[str, Any], key: str, file: str, endpoints: list[Any] | None = None
) -> Any:
    clsname = STRATEGY_NAMES[sname]
    cls = getattr(buttress, clsname, None)
    if cls is None:
        raise ScenarioError(
            file,
            key,
            f"strategy {sname!r} ({clsname}) is not available in this version of buttress",
        )
    converted: dict[str, Any] = {}
    for k, val in kwargs.items():
        conv = _CONVERTERS.get(k)
        try:
            converted[k] = conv(val) if conv is not None else val
        except (ValueError, TypeError) as exc:
            raise ScenarioError(file, f"{key}.{k}", str(exc)) from None
        except buttress.ConfigurationError as exc:
            raise ScenarioError(file, f"{key}.{k}", str(exc)) from None
    if sname in ("retry", "circuit_breaker") and "on" not in converted:
        converted["on"] = _on(())
    if sname == "load_balance" and "endpoints" not in converted and endpoints is not None:
        converted = {"endpoints": endpoints, **converted}
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for k in converted:
            if k not in params:
                options = ", ".join(n for n in params if not n.startswith("_"))
                raise ScenarioError(
                    file, f"{key}.{k}", f"unknown option of {clsname}; expected one of: {options}"
                )
    try:
        return cls(**converted)
    except buttress.ConfigurationError as exc:
        sub = f"{key}.{exc.parameter}" if exc.parameter else key
        raise ScenarioError(file, sub, str(exc)) from None
    except TypeError as exc:
        raise ScenarioError(file, key, str(exc)) from None


def _python_object(ref: str, where: str, key: str = "") -> Any:
    """Execute ``module`` afresh (not cached) and return ``attribute``.

    ``key`` is the key path of a scenario's ``python`` entry (``""`` for ``--pipeline``).
    """
    modname, _, attr = ref.partition(":")
    try:
        spec = importlib.util.find_spec(modname)
    except (ImportError, ValueError) as exc:
        raise ScenarioError(where, key, f"cannot import {modname!r}: {exc}") from None
    if spec is None or spec.loader is None:
        raise ScenarioError(where, key, f"cannot find module {modname!r} (is it on PYTHONPATH?)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ScenarioError(
            where, key, f"importing {modname!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ScenarioError(where, key, f"module {modname!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _strategies_of(
    obj: Any, ref: str, where: str, clock: Any, rng: Any, key: str = ""
) -> list[Any]:
    if not isinstance(obj, Pipeline) and callable(obj) and not hasattr(obj, "build_async"):
        params = inspect.signature(obj).parameters
        kwargs = {}
        if "clock" in params:
            kwargs["clock"] = clock
        if "random" in params:
            kwargs["random"] = rng
        try:
            obj = obj(**kwargs)
        except Exception as exc:  # the user's factory: one line, like an import failure
            raise ScenarioError(
                where, key, f"calling {ref} failed: {type(exc).__name__}: {exc}"
            ) from None
    if isinstance(obj, Pipeline):
        return list(obj.strategies)
    if hasattr(obj, "build_async"):
        return [obj]
    raise ScenarioError(
        where,
        key,
        f"{ref} is {type(obj).__name__}; expected a buttress Pipeline, a strategy, or a "
        "callable returning one",
    )


def build_pipeline(
    spec: PipelineSpec,
    clock: Clock,
    rng: _random.Random,
    *,
    file: str = "<scenario>",
    listeners: tuple[Any, ...] = (),
    endpoints: list[Any] | None = None,
) -> Pipeline:
    """A fresh `Pipeline` for one run of ``spec`` on ``clock`` with random source ``rng``.

    Raises:
        ScenarioError: Unknown strategy or option, invalid value, missing optional part.
    """
    key = f"pipelines.{spec.name}"
    strategies: list[Any]
    if spec.baseline is not None:
        _, builder = BASELINES[spec.baseline]
        try:
            strategies = builder(spec.on)
        except LookupError as exc:
            raise ScenarioError(
                file,
                f"{key}.baseline",
                f"baseline {spec.baseline!r} needs buttress.{exc.args[0]}, which is not "
                "available in this version",
            ) from None
    elif spec.python is not None:
        where = file if spec.name else "--pipeline"
        pkey = "" if where == "--pipeline" else f"{key}.python"
        obj = _python_object(spec.python, where, pkey)
        strategies = _strategies_of(obj, spec.python, where, clock, rng, pkey)
    else:
        strategies = [
            _build_strategy(sname, kwargs, f"{key}.strategies[{i}].{sname}", file, endpoints)
            for i, (sname, kwargs) in enumerate(spec.strategies)
        ]
    return Pipeline(*strategies, name=spec.name, clock=clock, random=rng, listeners=listeners)


def check_pipelines(scenario: Scenario) -> None:
    """Build every pipeline once so configuration errors surface at validation time.

    Raises:
        ScenarioError: The first pipeline that cannot be built.
    """
    from .sim import SimClock

    for spec in scenario.pipelines:
        build_pipeline(
            spec,
            SimClock(),
            _random.Random(0),
            file=scenario.source,
            endpoints=endpoints_for(scenario),
        )
