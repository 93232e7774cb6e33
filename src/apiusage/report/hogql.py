"""The report's questions as HogQL, for PostHog: what ``apiusage posthog queries`` prints and
what ``apiusage report --posthog`` runs through PostHog's query API.

Every query reads the ``api_request`` event (or the configured name) by its documented
properties (see ``docs/schema.md``), so it works in any project apiusage sends to; paste
one into a PostHog SQL insight to chart it. Anonymous requests have their request id as
distinct id (``distinct_id = properties.request_id``): caller counts leave them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from apiusage.inventory import ANY_METHOD, INVENTORY_EVENT, configured_deprecations

__all__ = ["Question", "questions"]


@dataclass(frozen=True, slots=True)
class Question:
    """One question of the report and its HogQL."""

    key: str
    title: str
    hogql: str
    #: The names of the result's columns, in order.
    columns: tuple[str, ...]


def _text(value: str) -> str:
    """A HogQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def questions(
    event_name: str = "api_request",
    *,
    days: int = 30,
    journeys: Mapping[str, Sequence[str]] | None = None,
    journey_window_days: float = 14.0,
    deprecated_routes: Iterable[str] = (),
) -> list[Question]:
    """Every question over the last ``days`` days, with ``event_name``'s requests."""
    event = _text(event_name)
    window = f"timestamp >= now() - INTERVAL {int(days)} DAY"
    requests = f"event = {event} AND {window}"
    identified = "distinct_id != properties.request_id"
    not_refused = "toInt(properties.status_code) NOT IN (401, 403)"
    found = [
        Question(
            "totals",
            "Requests, callers and organisations",
            f"""SELECT count() AS requests,
       uniqIf(distinct_id, {identified}) AS callers,
       uniq(properties.organisation) AS organisations,
       min(timestamp) AS first_seen,
       max(timestamp) AS last_seen
FROM events
WHERE {requests}""",
            ("requests", "callers", "organisations", "first_seen", "last_seen"),
        ),
        Question(
            "versions",
            "API versions",
            f"""SELECT properties.api_version AS api_version,
       count() AS requests,
       uniqIf(distinct_id, {identified}) AS callers,
       uniq(properties.organisation) AS organisations
FROM events
WHERE {requests}
GROUP BY api_version
ORDER BY requests DESC""",
            ("api_version", "requests", "callers", "organisations"),
        ),
        Question(
            "endpoints",
            "Endpoints, most used first",
            f"""SELECT properties.method AS method, properties.route AS route,
       count() AS requests,
       uniqIf(distinct_id, {identified}) AS callers,
       uniq(properties.organisation) AS organisations,
       round(countIf(toInt(properties.status_code) >= 400
             AND toInt(properties.status_code) < 500) / count(), 4) AS client_error_share,
       round(countIf(toInt(properties.status_code) >= 500) / count(), 4) AS server_error_share,
       round(quantile(0.5)(toFloat(properties.duration_ms)), 3) AS p50_ms,
       round(quantile(0.95)(toFloat(properties.duration_ms)), 3) AS p95_ms,
       max(timestamp) AS last_seen,
       countIf(NOT ({identified}) AND {not_refused}) AS anonymous
FROM events
WHERE {requests} AND properties.route IS NOT NULL
GROUP BY method, route
ORDER BY requests DESC""",
            (
                "method",
                "route",
                "requests",
                "callers",
                "organisations",
                "client_error_share",
                "server_error_share",
                "p50_ms",
                "p95_ms",
                "last_seen",
                "anonymous",
            ),
        ),
        Question(
            "never_called",
            "Endpoints of the newest route inventory never called",
            f"""SELECT JSONExtractString(entry, 'method') AS method,
       JSONExtractString(entry, 'route') AS route,
       JSONExtractBool(entry, 'deprecated') AS deprecated
FROM (
    SELECT arrayJoin(JSONExtractArrayRaw(toString(properties.routes))) AS entry
    FROM events
    WHERE event = {_text(INVENTORY_EVENT)}
    ORDER BY timestamp DESC
    LIMIT 1
)
WHERE (method, route) NOT IN (
    SELECT toString(properties.method), toString(properties.route)
    FROM events
    WHERE {requests} AND properties.route IS NOT NULL
)
AND NOT (method = {_text(ANY_METHOD)} AND route IN (
    SELECT toString(properties.route) FROM events
    WHERE {requests} AND properties.route IS NOT NULL
))
ORDER BY route, method""",
            ("method", "route", "deprecated"),
        ),
        Question(
            "versions_by_organisation",
            "API versions per organisation (several at once: more than one row)",
            f"""SELECT properties.organisation AS organisation,
       properties.api_version AS api_version,
       count() AS requests,
       max(timestamp) AS last_seen
FROM events
WHERE {requests} AND properties.organisation IS NOT NULL
GROUP BY organisation, api_version
ORDER BY organisation, api_version""",
            ("organisation", "api_version", "requests", "last_seen"),
        ),
        Question(
            "version_adoption",
            "API version adoption per day",
            f"""SELECT toStartOfDay(timestamp) AS day,
       properties.api_version AS api_version,
       count() AS requests,
       uniq(properties.organisation) AS organisations
FROM events
WHERE {requests}
GROUP BY day, api_version
ORDER BY day, api_version""",
            ("day", "api_version", "requests", "organisations"),
        ),
        Question(
            "auth_methods",
            "Authentication methods",
            f"""SELECT properties.auth_method AS auth_method,
       count() AS requests,
       uniqIf(distinct_id, {identified}) AS callers,
       uniq(properties.organisation) AS organisations,
       countIf(properties.auth_failed = true) AS failed
FROM events
WHERE {requests}
GROUP BY auth_method
ORDER BY requests DESC""",
            ("auth_method", "requests", "callers", "organisations", "failed"),
        ),
        Question(
            "client_libraries",
            "Client libraries by organisation",
            f"""SELECT properties.organisation AS organisation,
       properties.client_library AS client_library,
       properties.client_library_version AS version,
       count() AS requests,
       uniqIf(distinct_id, {identified}) AS callers,
       max(timestamp) AS last_seen
FROM events
WHERE {requests} AND properties.client_library IS NOT NULL
GROUP BY organisation, client_library, version
ORDER BY organisation, requests DESC""",
            ("organisation", "client_library", "version", "requests", "callers", "last_seen"),
        ),
    ]
    configured = sorted(configured_deprecations(deprecated_routes))
    named = " OR ".join(
        f"(properties.route = {_text(route)}"
        + ("" if method == ANY_METHOD else f" AND properties.method = {_text(method)}")
        + ")"
        for method, route in configured
    )
    deprecated = "properties.deprecated = true" + (f" OR {named}" if named else "")
    found.append(
        Question(
            "deprecated",
            "Deprecated endpoints: who still calls them",
            f"""SELECT properties.method AS method, properties.route AS route,
       properties.organisation AS organisation,
       if({identified}, distinct_id, NULL) AS caller,
       count() AS requests,
       max(timestamp) AS last_seen,
       groupUniqArray(concat(toString(properties.client_library), ' ',
                             toString(properties.client_library_version))) AS client_libraries
FROM events
WHERE {requests} AND ({deprecated})
GROUP BY method, route, organisation, caller
ORDER BY method, route, requests DESC""",
            (
                "method",
                "route",
                "organisation",
                "caller",
                "requests",
                "last_seen",
                "client_libraries",
            ),
        )
    )
    limit = int(journey_window_days * 86_400)
    for name, steps in (journeys or {}).items():
        firsts = ",\n           ".join(
            f"minIf(timestamp, event = {_text(step)}) AS step_{index}"
            for index, step in enumerate(steps, 1)
        )
        reached = [
            "countIf(step_1 IS NOT NULL) AS reached_1",
            *(
                f"countIf(step_{index} > step_{index - 1} AND "
                f"dateDiff('second', step_1, step_{index}) <= {limit}"
                + "".join(f" AND step_{k} > step_{k - 1}" for k in range(2, index))
                + f") AS reached_{index}"
                for index in range(2, len(steps) + 1)
            ),
        ]
        names = ", ".join(_text(step) for step in steps)
        found.append(
            Question(
                f"funnel:{name}",
                f"Journey {name}: callers reaching each step in order "
                f"(each step's first time), within {journey_window_days:g} days",
                f"""SELECT {", ".join(reached)}
FROM (
    SELECT distinct_id,
           {firsts}
    FROM events
    WHERE event IN ({names}) AND {window}
    GROUP BY distinct_id
)""",
                tuple(f"reached_{index}" for index in range(1, len(steps) + 1)),
            )
        )
    return found
