"""`Outcome`: a result or an exception, as a value passed to predicates and handlers."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["Outcome"]

T = TypeVar("T")


class Outcome(Generic[T]):
    """The result of one attempt or call: a value, or an `Exception`.

    Only `Exception` is ever captured; `BaseException` subclasses (cancellation,
    `KeyboardInterrupt`, `SystemExit`, `GeneratorExit`) always propagate.

    Attributes:
        value: The returned value (``None`` when `exception` is set).
        exception: The raised exception, or ``None`` for a result.
    """

    __slots__ = ("exception", "value")

    def __init__(self, value: T | None = None, exception: Exception | None = None) -> None:
        self.value = value
        self.exception = exception

    @classmethod
    def ok(cls, value: T) -> Outcome[T]:
        """An outcome holding a result."""
        return cls(value, None)

    @classmethod
    def error(cls, exception: Exception) -> Outcome[Any]:
        """An outcome holding an exception."""
        return cls(None, exception)

    @property
    def is_error(self) -> bool:
        """``True`` when the outcome holds an exception."""
        return self.exception is not None

    def unwrap(self) -> T:
        """Return the value, or raise the exception."""
        if self.exception is not None:
            raise self.exception
        return self.value  # type: ignore[return-value]

    def __repr__(self) -> str:
        if self.exception is not None:
            return f"Outcome.error({self.exception!r})"
        return f"Outcome.ok({self.value!r})"
