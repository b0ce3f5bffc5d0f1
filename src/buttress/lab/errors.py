"""Exceptions of the lab: bad scenario files and the simulated dependency's failures.

The dependency's failures are what a real client library would raise, so pipelines
written for production code handle them the usual way:

* `ServerError` (a 5xx answer) and its subclass `OverloadedError` (queue full, 503);
* `CallTimeoutError` (a `TimeoutError`: no reply within the client's timeout);
* `UnavailableError` (a `ConnectionError`: replica or zone down, connection refused);
* `ThrottledError` (a `buttress.RejectedError` carrying ``retry_after``, like HTTP 429
  with ``Retry-After``: a `Retry` handling it waits at least that long);
* `ConflictError` (an optimistic-concurrency write lost the race, scenario S1).
"""

from __future__ import annotations

from .._exceptions import RejectedError

__all__ = [
    "CallTimeoutError",
    "ConflictError",
    "DependencyError",
    "OverloadedError",
    "ScenarioError",
    "ServerError",
    "ThrottledError",
    "UnavailableError",
]


class ScenarioError(Exception):
    """A scenario file (or ``--pipeline`` object) is invalid.

    Attributes:
        file: The scenario file's path (or ``"<pipeline>"``).
        key: Dotted key path inside the file (``"faults[0].duration"``), or ``""``.
        message: What was expected and what was found.
    """

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(where + message)

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[str, str, str]]:
        # picklable with its three arguments (it crosses back from --workers processes)
        return (type(self), (self.file, self.key, self.message))


class DependencyError(Exception):
    """Base class of the simulated dependency's failures."""


class ServerError(DependencyError):
    """The dependency answered with an error (like HTTP 500)."""


class OverloadedError(ServerError):
    """The dependency rejected the request because its queue was full (like HTTP 503)."""


class UnavailableError(DependencyError, ConnectionError):
    """The replica (or its zone) is down: the connection was refused."""


class CallTimeoutError(DependencyError, TimeoutError):
    """No reply arrived within the client's timeout (``[client] timeout``)."""


class ConflictError(DependencyError):
    """An optimistic-concurrency write found the row changed (scenario S1)."""


class ThrottledError(RejectedError):
    """The dependency throttled the request and asked to come back after ``retry_after``."""
