"""Pure parts of cache-aside: entries, the freshness decision, XFetch, keys, the local LRU.

Nothing here reads a clock, sleeps or touches the network: times are passed in (seconds on
the pipeline clock) and randomness comes from the caller's `random.Random`.

Freshness of one entry, on the pipeline clock::

    loaded ........ fresh_until ........ fresh_until + stale_while_revalidate
                        |  stale, served while one caller refreshes  |
                    fresh_until + stale_if_error: served only when the loader fails

XFetch (Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache Stampede
Prevention", VLDB 2015): a read at ``now`` refreshes early when
``now - delta * beta * ln(U) >= fresh_until`` with ``U ~ Uniform(0, 1]``, ``delta`` the
measured duration of the last load and ``beta`` (default 1) the eagerness. The probability
is ``exp(-(fresh_until - now) / (beta * delta))``; below ``fresh_until - 30 * beta * delta``
it is under 1e-13, so reads before that point skip the draw (`Entry.early_at`): the hot
path of a fresh hit is one comparison.
"""

from __future__ import annotations

import inspect
import math
import random as _random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = [
    "EARLY",
    "FRESH",
    "MISS",
    "STALE",
    "Entry",
    "KeyBuilder",
    "LocalCache",
    "decide",
    "jittered_ttl",
    "xfetch_refresh",
]

# decisions
FRESH = 0
EARLY = 1  # fresh, but XFetch says: refresh now (serve the value if someone already is)
STALE = 2  # past fresh_until, inside stale_while_revalidate
MISS = 3  # nothing usable without loading (a stale_if_error value may still back a failure)

_XFETCH_HORIZON = 30.0


class Entry:
    """One cached value with its freshness metadata (pipeline-clock seconds).

    Attributes:
        value: The cached value (a Python object; the local tier never serialises).
        fresh_until: End of freshness.
        swr_until: End of the stale-while-revalidate window.
        sie_until: End of the stale-if-error window.
        early_at: Before this time XFetch cannot fire (see the module docstring).
        delta: Seconds the load of this value took (XFetch's delta).
        recheck_at: With a remote tier, when the local copy must be re-read from it.
        token: Fencing token of the load that produced the value (0 when local only).
    """

    __slots__ = (
        "delta",
        "early_at",
        "fresh_until",
        "recheck_at",
        "sie_until",
        "swr_until",
        "token",
        "value",
    )

    def __init__(
        self,
        value: Any,
        fresh_until: float,
        swr_until: float,
        sie_until: float,
        delta: float,
        beta: float,
        recheck_at: float = math.inf,
        token: int = 0,
    ) -> None:
        self.value = value
        self.fresh_until = fresh_until
        self.swr_until = swr_until
        self.sie_until = sie_until
        self.delta = delta
        self.token = token
        self.recheck_at = recheck_at
        early = fresh_until - _XFETCH_HORIZON * beta * delta if beta > 0 else fresh_until
        self.early_at = min(early, recheck_at)

    def __repr__(self) -> str:
        return (
            f"Entry(value={self.value!r}, fresh_until={self.fresh_until}, "
            f"swr_until={self.swr_until}, sie_until={self.sie_until}, delta={self.delta})"
        )


def xfetch_refresh(now: float, fresh_until: float, delta: float, beta: float, u: float) -> bool:
    """XFetch's rule: refresh early when ``now - delta * beta * ln(u) >= fresh_until``.

    Args:
        now: Current time in seconds.
        fresh_until: Expiry of the value in seconds.
        delta: Seconds the last load took (>= 0).
        beta: Eagerness >= 0 (0 disables early refresh; 1 is the paper's optimum).
        u: A uniform draw in (0, 1]; 0 is treated as the smallest positive float.
    """
    if beta <= 0.0 or delta <= 0.0:
        return now >= fresh_until
    return now - delta * beta * math.log(u if u > 0.0 else 5e-324) >= fresh_until


def decide(entry: Entry | None, now: float, beta: float, rng: _random.Random) -> int:
    """Classify ``entry`` at ``now``: `FRESH`, `EARLY`, `STALE` or `MISS`."""
    if entry is None:
        return MISS
    if now < entry.fresh_until:
        if now < entry.early_at:
            return FRESH
        if xfetch_refresh(now, entry.fresh_until, entry.delta, beta, 1.0 - rng.random()):
            return EARLY
        return FRESH
    if now < entry.swr_until:
        return STALE
    return MISS


def jittered_ttl(ttl: float, jitter: float, rng: _random.Random) -> float:
    """``ttl`` shortened by up to ``jitter * ttl`` (uniform), so expiries spread out.

    The result is never longer than ``ttl``: jitter never extends staleness.
    """
    if jitter <= 0.0 or ttl <= 0.0:
        return ttl
    return ttl * (1.0 - jitter * rng.random())


class LocalCache:
    """A bounded LRU map from key (str) to `Entry`, safe to use from threads.

    Reads take no lock: ``dict.get`` and ``OrderedDict.move_to_end`` are atomic under the
    GIL, and a key evicted between the two is simply not moved. Writes and evictions take
    no lock either; concurrent inserts can evict one entry more than strictly needed,
    never fewer, so the bound holds.

    Args:
        max_entries: Most entries kept, >= 1.
    """

    __slots__ = ("_map", "evictions", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._map: OrderedDict[str, Entry] = OrderedDict()
        self.evictions = 0

    def get(self, key: str) -> Entry | None:
        """The entry for ``key`` (marks it recently used), or ``None``."""
        entry = self._map.get(key)
        if entry is not None:
            try:
                self._map.move_to_end(key)
            except KeyError:  # evicted meanwhile by another thread
                pass
        return entry

    def put(self, key: str, entry: Entry) -> None:
        """Insert or replace ``key``; evicts least recently used entries beyond the bound."""
        cache = self._map
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > self.max_entries:
            try:
                cache.popitem(last=False)
            except KeyError:  # pragma: no cover - emptied by another thread
                break
            self.evictions += 1

    def pop(self, key: str) -> Entry | None:
        """Remove ``key``; returns its entry or ``None``."""
        return self._map.pop(key, None)

    def pop_prefix(self, prefix: str) -> int:
        """Remove every key starting with ``prefix``; returns how many."""
        doomed = [k for k in list(self._map) if k.startswith(prefix)]
        for k in doomed:
            self._map.pop(k, None)
        return len(doomed)

    def clear(self) -> None:
        """Remove everything."""
        self._map.clear()

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        return key in self._map


_SIMPLE = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class KeyBuilder:
    """Turns ``(args, kwargs)`` of one function into a cache key string.

    Arguments are normalised through the function's signature: ``f(1, b=2)``, ``f(1, 2)``
    and ``f(b=2, a=1)`` give the same key, and omitted arguments take their defaults. The
    first parameter of a method (``self``/``cls``) is left out of the key unless
    ``per_instance`` is true, in which case the instance's identity (``id()``, or its
    ``__cache_key__`` attribute/method when it has one) is included.

    Args:
        fn: The function whose calls are keyed.
        template: ``None`` (the default key ``module.qualname(arg values)``), a
            `str.format` template over parameter names (``"user:{user_id}"``), or a
            callable receiving the call's arguments and returning a str.
        per_instance: Key methods by instance identity.
        is_method: Treat the first parameter as the instance; ``None`` detects it from
            its name (``self`` or ``cls``).

    Raises:
        ValueError: The template names a parameter the function does not have.
    """

    __slots__ = (
        "_defaults",
        "_fast_n",
        "_index",
        "_names",
        "_npos",
        "_plain",
        "_prefix",
        "_sig",
        "_skip",
        "_template",
        "_user",
        "per_instance",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        template: str | Callable[..., str] | None = None,
        *,
        per_instance: bool = False,
        is_method: bool | None = None,
    ) -> None:
        self._user: Callable[..., str] | None = template if callable(template) else None
        self._template: str | None = template if isinstance(template, str) else None
        self.per_instance = per_instance
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        self._sig = sig
        params = list(sig.parameters.values()) if sig is not None else []
        if is_method is None:
            is_method = bool(params) and params[0].name in ("self", "cls")
        self._skip = 1 if is_method else 0
        self._names = tuple(p.name for p in params)
        # fast path: every parameter is plain positional and has no default -> args is the key
        simple = sig is not None and all(
            p.kind in _SIMPLE and p.default is inspect.Parameter.empty for p in params
        )
        self._fast_n = len(params) if simple else -1
        # "plain" signatures (no *args, **kwargs or positional-only) bind without inspect
        self._plain = sig is not None and all(
            p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            for p in params
        )
        self._npos = sum(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        self._index = frozenset(self._names)
        self._defaults = tuple(
            (p.name, p.default) for p in params if p.default is not inspect.Parameter.empty
        )
        module = getattr(fn, "__module__", None) or ""
        qual = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        self._prefix = f"{module}.{qual}" if module else qual
        if self._template is not None:
            import string

            for _, field, _, _ in string.Formatter().parse(self._template):
                if field is None:
                    continue
                head = field.split(".")[0].split("[")[0]
                if head and head not in self._names and not head.isdigit():
                    raise ValueError(
                        f"key template {self._template!r} names {head!r}, which is not a "
                        f"parameter of {self._prefix} (parameters: {', '.join(self._names)})"
                    )

    def _bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = self._names
        if self._plain and len(args) <= self._npos:
            out = dict(zip(names, args))
            for k, v in kwargs.items():
                if k in out or k not in self._index:
                    break  # let inspect raise the proper TypeError
                out[k] = v
            else:
                if len(out) < len(names):
                    for name, default in self._defaults:
                        if name not in out:
                            out[name] = default
                if len(out) == len(names):
                    return out if not kwargs else {n: out[n] for n in names}
        if self._sig is None:
            out = {str(i): a for i, a in enumerate(args)}
            out.update(kwargs)
            return out
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        out = dict(bound.arguments)
        for name, param in self._sig.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD and name in out:
                out[name] = tuple(sorted(out[name].items()))
        return out

    def _identity(self, obj: Any) -> str:
        hook = getattr(obj, "__cache_key__", None)
        if hook is not None:
            return str(hook() if callable(hook) else hook)
        return f"{type(obj).__qualname__}@{id(obj):x}"

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key of one call.

        Raises:
            TypeError: The arguments do not fit the signature (as the call itself would).
        """
        if self._user is not None:
            return self._user(*args, **kwargs)
        if not kwargs and len(args) == self._fast_n:
            skip = self._skip
            if self._template is not None:
                if skip:
                    if self.per_instance:
                        ident = f"[{self._identity(args[0])}]"
                        return ident + self._template.format_map(
                            dict(zip(self._names[1:], args[1:]))
                        )
                    return self._template.format_map(dict(zip(self._names[1:], args[1:])))
                return self._template.format_map(dict(zip(self._names, args)))
            if skip:
                values = args[1:]
                if self.per_instance:
                    return f"{self._prefix}[{self._identity(args[0])}]{values!r}"
                return f"{self._prefix}{values!r}"
            return f"{self._prefix}{args!r}"
        bound = self._bound(args, kwargs)
        if self._skip:
            first = self._names[0]
            instance = bound.pop(first, None)
            if self._template is not None:
                if self.per_instance:
                    return f"[{self._identity(instance)}]" + self._template.format(**bound)
                return self._template.format(**bound)
            values = tuple(bound.values())
            if self.per_instance:
                return f"{self._prefix}[{self._identity(instance)}]{values!r}"
            return f"{self._prefix}{values!r}"
        if self._template is not None:
            return self._template.format(**bound)
        return f"{self._prefix}{tuple(bound.values())!r}"
