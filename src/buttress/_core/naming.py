"""How events and telemetry name an exception type (the ``error_type`` / ``error.type``).

Builtins by their bare name (``ConnectionError``), everything else qualified with its
module (``httpx.ConnectTimeout``); buttress's own exceptions report ``buttress.X``.
One function, so every event spells a type the same way.
"""

from __future__ import annotations

__all__ = ["error_type", "type_name"]


def type_name(cls: type) -> str:
    """The display name of an exception class (see the module docstring)."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_type(exc: BaseException | None) -> str | None:
    """`type_name` of ``exc``'s class, or ``None`` for no exception (a result)."""
    return None if exc is None else type_name(type(exc))
