"""Endpoints nobody calls, and deprecated endpoints somebody still does.

Both need more than traffic: the app's route inventory (the latest
``api_route_inventory`` event in the store, see :mod:`apiusage.inventory`) says what
exists and what is deprecated; the ``deprecated_routes`` setting and ``--deprecated``
add to it. Who still calls a deprecated endpoint is counted per caller from the rows of
that endpoint's shapes only.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from apiusage.inventory import ANY_METHOD, INVENTORY_EVENT, configured_deprecations
from apiusage.report.answers import (
    DeprecatedCaller,
    DeprecatedEndpoint,
    EndpointUsage,
    UnusedEndpoint,
)

__all__ = ["ShapeOwner", "deprecated_usage", "latest_inventory", "never_called"]

#: Per request shape: its endpoint, organisation and client library ("name version").
ShapeOwner = tuple[tuple[str, str], str | None, str | None]


def latest_inventory(db: sqlite3.Connection) -> list[dict[str, Any]] | None:
    """The routes of the newest route inventory in the store, or None when there is none."""
    row = db.execute(
        "SELECT r.properties FROM event_shapes AS s "
        "JOIN event_rows AS r INDEXED BY event_rows_by_shape ON r.shape = s.id "
        "WHERE s.event = ? ORDER BY r.timestamp DESC LIMIT 1",
        (INVENTORY_EVENT,),
    ).fetchone()
    if row is None or not row[0]:
        return None
    routes = orjson.loads(row[0]).get("routes")
    return (
        [route for route in routes if isinstance(route, dict)] if isinstance(routes, list) else None
    )


def _called(method: str, route: str, called: set[tuple[str, str]], routes: set[str]) -> bool:
    return route in routes if method == ANY_METHOD else (method, route) in called


def never_called(
    inventory: list[dict[str, Any]], endpoints: Iterable[EndpointUsage]
) -> list[UnusedEndpoint]:
    """The inventory's endpoints without a request among ``endpoints``."""
    called = {(entry.method, entry.route) for entry in endpoints}
    routes = {route for _, route in called}
    return sorted(
        (
            UnusedEndpoint(
                str(entry["method"]), str(entry["route"]), entry.get("deprecated") is True
            )
            for entry in inventory
            if not _called(str(entry["method"]), str(entry["route"]), called, routes)
        ),
        key=lambda entry: (entry.route, entry.method),
    )


def deprecated_endpoints(
    inventory: list[dict[str, Any]] | None, configured: Iterable[str]
) -> set[tuple[str, str]]:
    """(method, route) of every deprecated endpoint: the inventory's and the configured."""
    found = set(configured_deprecations(configured))
    for entry in inventory or ():
        if entry.get("deprecated") is True:
            found.add((str(entry["method"]), str(entry["route"])))
    return found


def deprecated_usage(
    db: sqlite3.Connection,
    deprecated: set[tuple[str, str]],
    shapes: Mapping[int, ShapeOwner],
    window: str,
    values: list[float],
    notices: Mapping[tuple[str, str], float] | None = None,
) -> list[DeprecatedEndpoint]:
    """Each deprecated endpoint, with who called it in the window, most requests first;
    ``notices``: when callers were told (the ``deprecation_dates`` setting), by endpoint,
    to count who kept calling after."""
    notices = notices or {}
    any_method = {route for method, route in deprecated if method == ANY_METHOD}
    by_endpoint: dict[tuple[str, str], list[int]] = defaultdict(list)
    for shape_id, owner in shapes.items():
        if owner[0] in deprecated or owner[0][1] in any_method:
            by_endpoint[owner[0]].append(shape_id)
    results = {key: DeprecatedEndpoint(*key) for key in deprecated}
    callers: dict[tuple[tuple[str, str], str | None, str | None], DeprecatedCaller] = {}
    libraries: dict[Any, Counter[str]] = defaultdict(Counter)
    organisations: dict[tuple[str, str], set[str]] = defaultdict(set)
    identified: dict[tuple[str, str], set[str]] = defaultdict(set)
    for endpoint, ids in by_endpoint.items():
        noticed = notices.get(endpoint, notices.get((ANY_METHOD, endpoint[1])))
        usage = results.get(endpoint)
        if usage is None:  # deprecated for any method: listed by the method called
            usage = results[endpoint] = DeprecatedEndpoint(*endpoint)
        usage.notice_since = noticed
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = db.execute(
                "SELECT shape, distinct_id, COUNT(*), MAX(timestamp), "
                "SUM(CASE WHEN timestamp >= ? THEN 1 ELSE 0 END) "
                "FROM event_rows INDEXED BY event_rows_by_shape "
                f"WHERE shape IN ({marks}){window} GROUP BY shape, distinct_id",
                (math.inf if noticed is None else noticed, *chunk, *values),
            )
            for shape_id, caller, count, last, after in rows:
                _, organisation, library = shapes[shape_id]
                usage.requests += count
                usage.requests_after_notice += after
                usage.last_seen = max(usage.last_seen or 0.0, last)
                if organisation is not None:
                    organisations[endpoint].add(organisation)
                if caller is not None:
                    identified[endpoint].add(caller)
                who = (endpoint, organisation, caller)
                entry = callers.get(who)
                if entry is None:
                    entry = callers[who] = DeprecatedCaller(organisation, caller)
                    usage.by_caller.append(entry)
                entry.requests += count
                entry.requests_after_notice += after
                entry.last_seen = max(entry.last_seen or 0.0, last)
                if library is not None:
                    libraries[who][library] += count
    for who, entry in callers.items():
        entry.client_libraries = [name for name, _ in libraries[who].most_common()]
    called_routes = {route for (method, route), usage in results.items() if usage.requests}
    for (method, route), usage in list(results.items()):
        if method == ANY_METHOD and not usage.requests and route in called_routes:
            del results[method, route]  # shown by the methods that were called
            continue
        usage.callers = len(identified[method, route])
        usage.organisations = len(organisations[method, route])
        usage.by_caller.sort(key=lambda entry: (-entry.requests, entry.organisation or ""))
    return sorted(results.values(), key=lambda entry: (-entry.requests, entry.route, entry.method))
