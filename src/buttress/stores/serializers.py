"""Serializers for values a cache writes to a shared store.

JSON is the default: it is safe to read back whatever another process (or an attacker with
write access to Redis) put there. ``"orjson"`` and ``"msgspec"`` are faster JSON codecs
(optional dependencies). ``"pickle"`` round-trips any Python object but **unpickling runs
arbitrary code**: anyone who can write to your Redis can then run code in your process.
Choose it only for a store nobody else can write to, and only explicitly.

A serializer is any object with ``dumps(value) -> bytes`` and ``loads(data) -> value``;
``loads`` may raise anything on bad input: the cache counts that as a miss.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from .._exceptions import ConfigurationError

__all__ = ["JsonSerializer", "PickleSerializer", "Serializer", "resolve_serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back."""

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode ``data`` (may raise on malformed input)."""
        ...


class JsonSerializer:
    """JSON through the standard library (compact separators, UTF-8)."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as JSON (raises `TypeError` for non-JSON types)."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        """Decode JSON bytes."""
        return json.loads(data)


class _Orjson:
    name = "orjson"

    def __init__(self) -> None:
        import orjson

        self._dumps = orjson.dumps
        self.loads = orjson.loads

    def dumps(self, value: Any) -> bytes:
        return self._dumps(value)  # type: ignore[no-any-return,unused-ignore]


class _Msgspec:
    name = "msgspec"

    def __init__(self) -> None:
        import msgspec

        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()

    def dumps(self, value: Any) -> bytes:
        return self._encoder.encode(value)

    def loads(self, data: bytes) -> Any:
        return self._decoder.decode(data)


class PickleSerializer:
    """`pickle` (any Python object). **Unsafe with a store others can write to.**

    Unpickling executes code chosen by whoever wrote the bytes. Only select it with
    ``serializer="pickle"`` (never a default) for a store that only your own trusted
    processes can write to.
    """

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` (highest protocol)."""
        import pickle

        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data`` (runs code chosen by the writer: trusted stores only)."""
        import pickle

        return pickle.loads(data)


def resolve_serializer(owner: str, value: Any) -> Any:
    """``"json"`` (default), ``"orjson"``, ``"msgspec"``, ``"pickle"`` or an object.

    Raises:
        ConfigurationError: Unknown name, a missing optional library, or an object
            without ``dumps``/``loads``.
    """
    if value is None or value == "json":
        return JsonSerializer()
    if value == "pickle":
        return PickleSerializer()
    if value in ("orjson", "msgspec"):
        try:
            return _Orjson() if value == "orjson" else _Msgspec()
        except ImportError as exc:
            raise ConfigurationError(
                f"{owner}(serializer={value!r}): {value} is not installed: "
                f"pip install 'buttress[{value}]'",
                parameter="serializer",
                value=value,
                expected=f"an installed {value}",
            ) from exc
    if isinstance(value, str) or not (
        callable(getattr(value, "dumps", None)) and callable(getattr(value, "loads", None))
    ):
        raise ConfigurationError.invalid(
            owner,
            "serializer",
            value,
            "'json', 'orjson', 'msgspec', 'pickle' or an object with dumps()/loads()",
        )
    return value
