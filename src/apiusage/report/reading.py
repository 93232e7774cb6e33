"""Reading the store's answers, fast: rows are counted by shape, never one by one in Python.

The store keeps what requests have in common as shapes (see
:mod:`apiusage.sinks.store_layout`). One pass over a covering index counts the window's
rows by shape, with each shape's distinct callers; every answer but latency is rolled up
from those counts and the shapes. Latency percentiles are read per endpoint from a second
covering index, in duration order, by SQLite itself. A million events take about two
seconds.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson

from apiusage.caller import REFUSED_STATUSES
from apiusage.inventory import INVENTORY_EVENT, parse_route_entry
from apiusage.notices import parse_date
from apiusage.report.adoption import version_adoption
from apiusage.report.answers import (
    PERCENTILES,
    AuthUsage,
    CallerVersions,
    EndpointUsage,
    JourneyEventCount,
    LibraryUsage,
    OrganisationVersions,
    UsageSummary,
    VersionUsage,
    nearest_rank,
)
from apiusage.report.delivery import read_delivery
from apiusage.report.deprecations import (
    ShapeOwner,
    deprecated_endpoints,
    deprecated_usage,
    latest_inventory,
    never_called,
)
from apiusage.report.features import underused_features
from apiusage.report.flags import flag_usage
from apiusage.report.funnels import funnel
from apiusage.sinks.store import connect

__all__ = ["UnknownJourneyStep", "summarise"]


_SHAPE_COLUMNS = (
    "s.event, s.organisation, s.route, s.method, s.status_code, s.api_version, s.auth_method, "
    "s.client_library, s.client_library_version"
)


def _window(
    since: float | None, until: float | None, caller: str | None = None
) -> tuple[str, list[Any]]:
    """SQL conditions on ``timestamp`` and ``distinct_id`` (with a leading AND) and their
    values."""
    clauses = ""
    values: list[Any] = []
    if since is not None:
        clauses += " AND timestamp >= ?"
        values.append(since)
    if until is not None:
        clauses += " AND timestamp < ?"
        values.append(until)
    if caller is not None:
        clauses += " AND distinct_id = ?"
        values.append(caller)
    return clauses, values


def summarise(
    store: Path | str,
    event_name: str = "api_request",
    *,
    since: float | None = None,
    until: float | None = None,
    organisation: str | None = None,
    caller: str | None = None,
    deprecated_routes: Iterable[str] = (),
    journeys: Mapping[str, Sequence[str]] | None = None,
    journey_window_days: float = 14.0,
    over_time: bool = False,
    deprecation_dates: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> UsageSummary:
    """Read the store and answer the report's questions over ``[since, until)``, for one
    ``organisation`` or one ``caller`` (distinct id) when given; ``deprecated_routes``
    (``"GET /v1/x"`` or ``"/v1/x"``) are reported as deprecated besides those the route
    inventory marks; each of
    ``journeys`` (a name and its steps, event names in order) becomes a funnel;
    ``over_time`` adds API version adoption per day (or week); ``deprecation_dates``
    (``{"GET /v1/x": "2026-06-30"}``) say since when callers were told, to count who kept
    calling after. ``progress`` is told each step as it starts (the command shows them).

    Raises :class:`UnknownJourneyStep` for a step no event in the store is named."""
    step = progress or (lambda name: None)
    with closing(connect(store, readonly=True)) as db:
        summary = UsageSummary(since=since, until=until, organisation=organisation, caller=caller)
        step("counting requests by endpoint, version, auth method, caller")
        window, values = _window(since, until, caller)
        of_organisation = "" if organisation is None else " WHERE s.organisation = ?"
        # Counted by shape, with its distinct callers (anonymous requests have none), from
        # the covering index event_rows_by_shape (no table row is read), then the shape.
        counts = db.execute(
            f"SELECT {_SHAPE_COLUMNS}, c.* FROM ("
            "SELECT shape, COUNT(*), MIN(timestamp), MAX(timestamp), "
            "json_group_array(DISTINCT distinct_id) FILTER (WHERE distinct_id IS NOT NULL), "
            "COUNT(*) FILTER (WHERE distinct_id IS NULL) "
            "FROM event_rows INDEXED BY event_rows_by_shape "
            f"WHERE shape IS NOT NULL{window} GROUP BY shape"
            f") AS c JOIN event_shapes AS s ON s.id = c.shape{of_organisation}",
            [*values] if organisation is None else [*values, organisation],
        )
        rollup = _Rollup(event_name)
        step("rolling up the answers")
        rollup.answer(summary, counts)
        step("latency percentiles")
        if organisation is None and caller is None:
            _latencies(db, summary, window, values)
        else:
            _latencies_of_shapes(db, summary, rollup.endpoint_of, window, values)
        if organisation is None and caller is None:
            summary.underused_features = underused_features(
                rollup.feature_usage, rollup.organisation_totals
            )
        if over_time:
            step("version adoption over time")
        if over_time and summary.first_seen is not None and summary.last_seen is not None:
            start = since if since is not None else summary.first_seen
            end = until if until is not None else summary.last_seen
            (
                summary.adoption_period,
                summary.version_adoption,
                summary.version_adoption_by_organisation,
            ) = version_adoption(
                db,
                event_name,
                window,
                values,
                organisation=organisation,
                span_days=(end - start) / 86_400,
            )
        step("route inventory and deprecated endpoints")
        inventory = latest_inventory(db)
        if inventory is not None:
            summary.never_called = never_called(inventory, summary.endpoints)
        deprecated = deprecated_endpoints(inventory, deprecated_routes)
        notices = {
            parse_route_entry(entry): parse_date(day)
            for entry, day in (deprecation_dates or {}).items()
        }
        summary.deprecated = deprecated_usage(
            db, deprecated, rollup.owners, window, values, notices
        )
        if journeys:
            step("journey funnels")
            known = {name for (name,) in db.execute("SELECT DISTINCT event FROM event_shapes")}
            for name, steps in journeys.items():
                unknown = [step for step in steps if step not in known]
                if unknown:
                    raise UnknownJourneyStep(name, unknown, known)
                summary.funnels.append(
                    funnel(
                        db,
                        name,
                        steps,
                        window,
                        values,
                        conversion_days=journey_window_days,
                        organisation=organisation,
                    )
                )
        step("feature flags")
        summary.flags = flag_usage(db, event_name, window, values, organisation)
        summary.delivery = read_delivery(db)
    return summary


class UnknownJourneyStep(ValueError):
    """A journey names a step that no event in the store has."""

    def __init__(self, journey: str, unknown: list[str], known: set[str]) -> None:
        events = sorted(name for name in known if not name.startswith("$"))
        super().__init__(
            f"journey {journey!r}: no event named {', '.join(map(repr, unknown))} in the "
            f"store (its events: {', '.join(events) or 'none'})"
        )


class _Answer:
    """What one row of an answer (an endpoint, a version …) adds up over its shapes."""

    __slots__ = (
        "anonymous",
        "callers",
        "client_errors",
        "last_seen",
        "organisations",
        "refused",
        "requests",
        "server_errors",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.client_errors = 0
        self.server_errors = 0
        #: Requests refused with 401 or 403 although they presented credentials.
        self.refused = 0
        #: Requests that named no caller, refused ones left out.
        self.anonymous = 0
        self.last_seen = 0.0
        self.callers: set[str] = set()
        self.organisations: set[str] = set()


#: Positions in a row of the counts: the shape's columns, then its id, requests, first
#: and last time, distinct callers and anonymous requests.
(_EVENT, _ORGANISATION, _ROUTE, _METHOD, _STATUS, _VERSION, _AUTH, _LIBRARY, _LIBRARY_VERSION) = (
    range(9)
)
_ID, _COUNT, _FIRST, _LAST, _CALLERS, _ANONYMOUS = range(9, 15)


class _Rollup:
    """Rolls the counts by shape and caller up into every answer, in one pass."""

    def __init__(self, event_name: str) -> None:
        self.event_name = event_name
        #: The request shapes with a route, and their endpoint (for latency by shape).
        self.endpoint_of: dict[int, tuple[str, str]] = {}
        #: The same shapes' endpoint, organisation and client library (deprecation report).
        self.owners: dict[int, ShapeOwner] = {}
        #: Requests and journey events by (organisation, "endpoint" or "journey", feature),
        #: and each organisation's total (features an organisation under-uses).
        self.feature_usage: dict[tuple[str, str, str], int] = defaultdict(int)
        self.organisation_totals: dict[str, int] = defaultdict(int)
        self.endpoints: dict[tuple[str, str], _Answer] = defaultdict(_Answer)
        self.versions: dict[str, _Answer] = defaultdict(_Answer)
        self.auth: dict[str, _Answer] = defaultdict(_Answer)
        self.libraries: dict[tuple[str | None, str, str | None], _Answer] = defaultdict(_Answer)
        self.by_organisation: dict[str, OrganisationVersions] = {}
        self.journey: dict[str, _Answer] = defaultdict(_Answer)
        self.callers: set[str] = set()
        self.organisations: set[str] = set()
        self.requests = 0
        self.first_seen, self.last_seen = math.inf, -math.inf

    def answer(self, summary: UsageSummary, counts: Iterable[tuple[Any, ...]]) -> None:
        """``counts``: per shape, its columns, id, requests, first and last time, and its
        distinct callers as a JSON array, added to each of its answers' sets in one C
        call. (One loop with everything in locals: it runs once per shape, a hundred
        thousand times for a million events.)"""
        loads = orjson.loads
        event_name = self.event_name
        versions, auth, endpoints = self.versions, self.auth, self.endpoints
        libraries, journey, by_organisation = self.libraries, self.journey, self.by_organisation
        endpoint_of, owners = self.endpoint_of, self.owners
        feature_usage, organisation_totals = self.feature_usage, self.organisation_totals
        all_callers, organisations = self.callers, self.organisations
        versions_of_caller: dict[str, set[str]] = defaultdict(set)
        caller_organisation: dict[str, str | None] = {}
        requests, first_seen, last_seen = 0, math.inf, -math.inf
        for shape in counts:
            count, last, event = shape[_COUNT], shape[_LAST], shape[_EVENT]
            members = loads(shape[_CALLERS])
            if event != event_name:
                if not event.startswith("$") and event != INVENTORY_EVENT:
                    answer = journey[event]
                    answer.requests += count
                    answer.callers.update(members)
                    if shape[_ORGANISATION] is not None:
                        feature_usage[shape[_ORGANISATION], "journey", event] += count
                        organisation_totals[shape[_ORGANISATION]] += count
                continue
            requests += count
            first = shape[_FIRST]
            if first < first_seen:
                first_seen = first
            if last > last_seen:
                last_seen = last
            all_callers.update(members)
            organisation, version, library = shape[_ORGANISATION], shape[_VERSION], shape[_LIBRARY]
            if version is not None:
                for member in members:
                    versions_of_caller[member].add(version)
                    caller_organisation[member] = organisation
            method_used = auth[shape[_AUTH] or "(unknown)"]
            answers = [versions[version or "(none)"], method_used]
            if shape[_STATUS] in REFUSED_STATUSES and shape[_AUTH] not in (None, "none"):
                method_used.refused += count
            route = shape[_ROUTE]
            if route is not None:
                endpoint_key = (shape[_METHOD] or "", route)
                shape_id = shape[_ID]
                endpoint_of[shape_id] = endpoint_key
                if library is not None and shape[_LIBRARY_VERSION]:
                    label = f"{library} {shape[_LIBRARY_VERSION]}"
                else:
                    label = library
                owners[shape_id] = (endpoint_key, organisation, label)
                if organisation is not None:
                    feature_usage[organisation, "endpoint", f"{endpoint_key[0]} {route}"] += count
                endpoint = endpoints[endpoint_key]
                answers.append(endpoint)
                status = shape[_STATUS] or 0
                if status not in REFUSED_STATUSES:
                    endpoint.anonymous += shape[_ANONYMOUS]
                if status >= 500:
                    endpoint.server_errors += count
                elif status >= 400:
                    endpoint.client_errors += count
            if library is not None:
                answers.append(libraries[organisation, library, shape[_LIBRARY_VERSION]])
            for answer in answers:
                answer.requests += count
                if last > answer.last_seen:
                    answer.last_seen = last
                answer.callers.update(members)
            if organisation is not None:
                organisations.add(organisation)
                organisation_totals[organisation] += count
                for answer in answers:
                    answer.organisations.add(organisation)
                if version is not None:
                    versions_of = by_organisation.get(organisation)
                    if versions_of is None:
                        versions_of = by_organisation[organisation] = OrganisationVersions(
                            organisation
                        )
                    versions_of.requests[version] = versions_of.requests.get(version, 0) + count
                    seen = versions_of.last_seen
                    if last > seen.get(version, 0.0):
                        seen[version] = last
        self.requests = requests
        self.first_seen, self.last_seen = first_seen, last_seen
        summary.multi_version_callers = [
            CallerVersions(member, caller_organisation[member], sorted(versions))
            for member, versions in sorted(versions_of_caller.items())
            if len(versions) > 1
        ]
        self._fill(summary)

    def _fill(self, summary: UsageSummary) -> None:
        summary.total_requests = self.requests
        summary.identified_callers = len(self.callers)
        summary.organisations = len(self.organisations)
        if self.requests:
            summary.first_seen, summary.last_seen = self.first_seen, self.last_seen
        summary.endpoints = sorted(
            (
                EndpointUsage(
                    method,
                    route,
                    answer.requests,
                    len(answer.callers),
                    len(answer.organisations),
                    answer.client_errors,
                    answer.server_errors,
                    last_seen=answer.last_seen,
                    anonymous=answer.anonymous,
                )
                for (method, route), answer in self.endpoints.items()
            ),
            key=lambda entry: (-entry.requests, entry.route, entry.method),
        )
        summary.versions = sorted(
            (
                VersionUsage(name, answer.requests, len(answer.callers), len(answer.organisations))
                for name, answer in self.versions.items()
            ),
            key=lambda entry: (-entry.requests, entry.version),
        )
        summary.versions_by_organisation = [
            self.by_organisation[name] for name in sorted(self.by_organisation)
        ]
        summary.auth_methods = sorted(
            (
                AuthUsage(
                    name,
                    answer.requests,
                    len(answer.callers),
                    len(answer.organisations),
                    failed=answer.refused,
                )
                for name, answer in self.auth.items()
            ),
            key=lambda entry: (-entry.requests, entry.auth_method),
        )
        summary.client_libraries = sorted(
            (
                LibraryUsage(
                    organisation,
                    library,
                    version,
                    answer.requests,
                    len(answer.callers),
                    answer.last_seen,
                )
                for (organisation, library, version), answer in self.libraries.items()
            ),
            key=lambda entry: (entry.organisation or "", -entry.requests, entry.client_library),
        )
        summary.journey_events = sum(answer.requests for answer in self.journey.values())
        summary.journey = sorted(
            (
                JourneyEventCount(name, answer.requests, len(answer.callers))
                for name, answer in self.journey.items()
            ),
            key=lambda entry: (-entry.events, entry.event),
        )


def _latencies(
    db: sqlite3.Connection, summary: UsageSummary, window: str, values: list[float]
) -> None:
    """p50 and p95 of each endpoint's durations, read by SQLite from the covering index
    ``event_rows_by_endpoint`` in duration order (one OFFSET walk per percentile)."""
    ids = {
        (method, route): endpoint_id
        for endpoint_id, method, route in db.execute("SELECT id, method, route FROM endpoints")
    }
    condition = f"endpoint = ? AND duration_ms IS NOT NULL{window}"
    for entry in summary.endpoints:
        endpoint_id = ids.get((entry.method, entry.route))
        if endpoint_id is None:
            continue
        (count,) = db.execute(
            f"SELECT COUNT(*) FROM event_rows INDEXED BY event_rows_by_endpoint WHERE {condition}",
            (endpoint_id, *values),
        ).fetchone()
        if not count:
            continue
        for name, share in PERCENTILES:
            row = db.execute(
                "SELECT duration_ms FROM event_rows INDEXED BY event_rows_by_endpoint "
                f"WHERE {condition} ORDER BY duration_ms LIMIT 1 OFFSET ?",
                (endpoint_id, *values, nearest_rank(count, share) - 1),
            ).fetchone()
            setattr(entry, name, round(float(row[0]), 3))


def _latencies_of_shapes(
    db: sqlite3.Connection,
    summary: UsageSummary,
    endpoint_of: dict[int, tuple[str, str]],
    window: str,
    values: list[float],
) -> None:
    """p50 and p95 per endpoint over some shapes only (one organisation's): few rows, read
    through the shape index and sorted here."""
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    wanted = list(endpoint_of)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows: Any = db.execute(
            f"SELECT shape, duration_ms FROM event_rows INDEXED BY event_rows_by_shape "
            f"WHERE shape IN ({marks}) AND duration_ms IS NOT NULL{window}",
            (*chunk, *values),
        )
        for shape_id, duration in rows:
            durations[endpoint_of[shape_id]].append(float(duration))
    for entry in summary.endpoints:
        measured = durations.get((entry.method, entry.route))
        if measured:
            measured.sort()
            for name, share in PERCENTILES:
                setattr(entry, name, round(measured[nearest_rank(len(measured), share) - 1], 3))
