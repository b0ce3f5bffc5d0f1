"""`Endpoint` and `EndpointGroup`: what a `LoadBalance` or `ReplicaSet` routes to.

An endpoint wraps any object (a URL, a ``(host, port)`` pair, a DSN, a connection pool, an
SQLAlchemy engine) with the facts routing needs: a unique ``name``, a ``zone`` and a
``priority`` tier, plus free ``labels``. A group holds the current membership: a static
list, or a sync or async callable that returns the list (DNS, a service registry). A
refresh that fails (raises, returns nothing or returns duplicates) keeps the last good
list; the strategy owning the group reports it with `MembershipRefreshFailed`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from .._core.validate import check_duration
from .._exceptions import ConfigurationError

__all__ = ["Endpoint", "EndpointGroup", "MembershipError", "coerce_endpoints"]


class Endpoint:
    """One place a call can go.

    Args:
        address: What the call needs to reach the endpoint: a URL, ``(host, port)``, a DSN,
            a client, a pool, an engine... buttress never looks inside it.
        name: Unique name within a group, used in events, metrics and to keep an endpoint's
            statistics across membership refreshes. Default ``str(address)`` (for a tuple
            ``(host, port)`` it is ``"host:port"``).
        zone: Availability zone (any string), or ``None`` for "unknown" (never local).
        priority: Priority tier, an int >= 0: 0 is the primary tier, 1 the first
            disaster-recovery tier, and so on (default 0).
        labels: Free metadata (read-only mapping), e.g. ``{"version": "2"}``.

    Endpoints compare equal when name, zone and priority are equal (the address is not
    compared: it may be an unhashable client).

    Raises:
        ConfigurationError: ``name`` empty or not a str, ``zone`` not a str or ``None``,
            ``priority`` not an int >= 0.
    """

    __slots__ = ("address", "labels", "name", "priority", "zone")

    def __init__(
        self,
        address: Any,
        *,
        name: str | None = None,
        zone: str | None = None,
        priority: int = 0,
        labels: Mapping[str, Any] | None = None,
    ) -> None:
        if name is None:
            if (
                isinstance(address, tuple)
                and len(address) == 2
                and isinstance(address[1], int)
                and not isinstance(address[1], bool)
            ):
                name = f"{address[0]}:{address[1]}"
            else:
                name = str(address)
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("Endpoint", "name", name, "a non-empty str")
        if zone is not None and not isinstance(zone, str):
            raise ConfigurationError.invalid("Endpoint", "zone", zone, "a str or None")
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
            raise ConfigurationError.invalid("Endpoint", "priority", priority, "an int >= 0")
        self.address = address
        self.name = name
        self.zone = zone
        self.priority = priority
        self.labels: Mapping[str, Any] = dict(labels) if labels else {}

    def __repr__(self) -> str:
        parts = [repr(self.name)]
        if self.zone is not None:
            parts.append(f"zone={self.zone!r}")
        if self.priority:
            parts.append(f"priority={self.priority}")
        if self.labels:
            parts.append(f"labels={dict(self.labels)!r}")
        return f"Endpoint({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return (self.name, self.zone, self.priority) == (other.name, other.zone, other.priority)

    def __hash__(self) -> int:
        return hash((self.name, self.zone, self.priority))


class MembershipError(ConfigurationError):
    """A membership list is unusable: empty, or with duplicate endpoint names."""


def coerce_endpoints(owner: str, items: Iterable[Any]) -> tuple[Endpoint, ...]:
    """Turn ``items`` (endpoints or bare addresses) into endpoints, checking the list.

    Raises:
        MembershipError: The list is empty or two endpoints share a name.
    """
    out: list[Endpoint] = []
    seen: set[str] = set()
    for item in items:
        endpoint = item if isinstance(item, Endpoint) else Endpoint(item)
        if endpoint.name in seen:
            raise MembershipError(
                f"{owner}(endpoints=...): duplicate endpoint name {endpoint.name!r}; "
                "give each endpoint a unique name=",
                parameter="endpoints",
                value=endpoint.name,
                expected="unique endpoint names",
            )
        seen.add(endpoint.name)
        out.append(endpoint)
    if not out:
        raise MembershipError(
            f"{owner}(endpoints=[]): expected at least one endpoint",
            parameter="endpoints",
            value=[],
            expected="a non-empty list of endpoints",
        )
    return tuple(out)


Source = Iterable[Any] | Callable[[], Iterable[Any]] | Callable[[], Awaitable[Iterable[Any]]]


class EndpointGroup:
    """The current members of a service: a static list, or a refreshing source.

    Args:
        source: A non-empty iterable of `Endpoint` (or bare addresses, wrapped with
            ``Endpoint(address)``), or a callable / async callable returning one. A callable
            is first called on first use (sync callable) or by ``await group.arefresh()``
            (async callable; an async pipeline call does it for you when the group is empty),
            then every ``refresh_interval`` seconds by the owner's background runner
            (`LoadBalance.start_background` / `LoadBalance.run_background`).
        refresh_interval: Seconds between refreshes of a callable source (float or
            `timedelta`, > 0; default 30.0). Ignored for a static list.
        name: Group name used in events (default ``"endpoints"``).

    Raises:
        ConfigurationError: A static list that is empty or has duplicate names (as
            `MembershipError`), a ``source`` of the wrong type, or a bad ``refresh_interval``.
    """

    __slots__ = ("_endpoints", "_is_async", "_source", "name", "refresh_interval", "version")

    def __init__(
        self,
        source: Source,
        *,
        refresh_interval: float | timedelta = 30.0,
        name: str = "endpoints",
    ) -> None:
        self.refresh_interval = check_duration(
            "EndpointGroup", "refresh_interval", refresh_interval, strictly_positive=True
        )
        if not isinstance(name, str) or not name:
            raise ConfigurationError.invalid("EndpointGroup", "name", name, "a non-empty str")
        self.name = name
        self.version = 0
        self._endpoints: tuple[Endpoint, ...] = ()
        self._source: Callable[[], Any] | None = None
        self._is_async = False
        if isinstance(source, EndpointGroup):
            raise ConfigurationError.invalid(
                "EndpointGroup", "source", source, "a list or a callable, not another group"
            )
        if callable(source):
            self._source = source
            self._is_async = inspect.iscoroutinefunction(source) or inspect.iscoroutinefunction(
                getattr(source, "__call__", None)  # noqa: B004 - callable objects
            )
        elif isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
            self._endpoints = coerce_endpoints("EndpointGroup", source)
            self.version = 1
        else:
            raise ConfigurationError.invalid(
                "EndpointGroup",
                "source",
                source,
                "a non-empty list of endpoints or a (async) callable returning one",
            )

    @property
    def dynamic(self) -> bool:
        """``True`` when membership comes from a callable."""
        return self._source is not None

    @property
    def is_async(self) -> bool:
        """``True`` when the source is an async callable."""
        return self._is_async

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The last good membership (empty only before a dynamic source's first refresh)."""
        return self._endpoints

    def _accept(self, items: Any) -> tuple[Endpoint, ...]:
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise MembershipError(
                f"EndpointGroup {self.name!r}: the source returned {items!r}, not a list",
                parameter="source",
                value=items,
                expected="a non-empty list of endpoints",
            )
        endpoints = coerce_endpoints("EndpointGroup", items)
        self._endpoints = endpoints
        self.version += 1
        return endpoints

    def refresh(self) -> tuple[Endpoint, ...]:
        """Call a sync source now and adopt its list.

        Returns the new membership (for a static list: the list, unchanged).

        Raises:
            Exception: Whatever the source raised, or `MembershipError` for an empty or
                duplicate list; the last good membership is kept in every case.
            ConfigurationError: The source is async (use `arefresh`).
        """
        source = self._source
        if source is None:
            return self._endpoints
        if self._is_async:
            raise ConfigurationError(
                f"EndpointGroup {self.name!r} has an async source: use `await group.arefresh()`",
                parameter="source",
                value=source,
                expected="a sync callable for refresh()",
            )
        return self._accept(source())

    async def arefresh(self) -> tuple[Endpoint, ...]:
        """Call the source (sync or async) now and adopt its list.

        Raises:
            Exception: Whatever the source raised, or `MembershipError`; the last good
                membership is kept in every case.
        """
        source = self._source
        if source is None:
            return self._endpoints
        result = source()
        if inspect.isawaitable(result):
            result = await result
        return self._accept(result)

    def __repr__(self) -> str:
        kind = "dynamic" if self._source is not None else "static"
        return f"EndpointGroup({self.name!r}, {kind}, {len(self._endpoints)} endpoints)"
