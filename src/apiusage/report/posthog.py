"""``apiusage report --posthog``: the same answers, asked of PostHog instead of the local store.

Each question of :mod:`apiusage.report.hogql` goes to PostHog's query API (``POST
/api/projects/{id}/query/`` with a ``HogQLQuery``, a personal API key as bearer token)
and its rows fill the same :class:`~apiusage.report.answers.UsageSummary` the local store
fills, so the tables, JSON, CSV and HTML are the same. PostHog is where the events are
once one machine's store is not enough.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3

from apiusage.notices import parse_date
from apiusage.report.answers import (
    AuthUsage,
    DeprecatedCaller,
    DeprecatedEndpoint,
    EndpointUsage,
    Funnel,
    LibraryUsage,
    OrganisationVersions,
    UnusedEndpoint,
    UsageSummary,
    VersionPeriod,
    VersionUsage,
)
from apiusage.report.funnels import funnel_steps
from apiusage.report.hogql import Question, questions

__all__ = ["PostHogQueryError", "app_host", "summarise_posthog"]


class PostHogQueryError(RuntimeError):
    """PostHog refused a query or could not be reached; the message says which and why."""


def app_host(ingestion_host: str) -> str:
    """PostHog Cloud's app host for its ingestion host (``us.i.posthog.com`` →
    ``us.posthog.com``); a self-hosted PostHog answers both on one host."""
    split = urlsplit(ingestion_host.rstrip("/"))
    host = split.hostname or ""
    if host.endswith(".i.posthog.com"):
        host = host[: -len(".i.posthog.com")] + ".posthog.com"
        return f"{split.scheme}://{host}"
    return ingestion_host.rstrip("/")


def _seconds(value: Any) -> float | None:
    """A timestamp PostHog returns (ISO text) as seconds since the epoch."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return parse_date(str(value))


class _QueryApi:
    def __init__(self, host: str, project_id: str, personal_api_key: str, timeout: float):
        self.url = f"{host.rstrip('/')}/api/projects/{project_id}/query/"
        self.headers = {
            "Authorization": f"Bearer {personal_api_key}",
            "Content-Type": "application/json",
        }
        self.pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout))

    def rows(self, question: Question) -> list[dict[str, Any]]:
        body = orjson.dumps({"query": {"kind": "HogQLQuery", "query": question.hogql}})
        try:
            response = self.pool.request("POST", self.url, body=body, headers=self.headers)
        except urllib3.exceptions.HTTPError as exc:
            raise PostHogQueryError(f"cannot reach PostHog at {self.url}: {exc}") from None
        if response.status in (401, 403):
            raise PostHogQueryError(
                f"PostHog refused the personal API key (HTTP {response.status}): set "
                "POSTHOG_PERSONAL_API_KEY to a key with query read access to the project"
            )
        if response.status == 404:
            raise PostHogQueryError(
                f"no PostHog project at {self.url}: check POSTHOG_PROJECT_ID and POSTHOG_APP_HOST"
            )
        if response.status != 200:
            detail = response.data[:300].decode("utf-8", "replace")
            raise PostHogQueryError(
                f"PostHog answered HTTP {response.status} to the {question.key!r} query: {detail}"
            )
        try:
            answer = orjson.loads(response.data)
            results = answer["results"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise PostHogQueryError(
                f"PostHog's answer to the {question.key!r} query has no results"
            ) from None
        return [dict(zip(question.columns, row, strict=False)) for row in results]


def summarise_posthog(
    host: str,
    project_id: str,
    personal_api_key: str,
    *,
    event_name: str = "api_request",
    days: int = 30,
    journeys: Mapping[str, Sequence[str]] | None = None,
    journey_window_days: float = 14.0,
    deprecated_routes: Iterable[str] = (),
    timeout: float = 60.0,
) -> UsageSummary:
    """The report's answers over the last ``days`` days, from PostHog."""
    api = _QueryApi(host, project_id, personal_api_key, timeout)
    asked = questions(
        event_name,
        days=days,
        journeys=journeys,
        journey_window_days=journey_window_days,
        deprecated_routes=deprecated_routes,
    )
    try:
        answers = {question.key: api.rows(question) for question in asked}
    finally:
        api.pool.clear()  # close the kept-alive connection
    summary = UsageSummary()
    [totals] = answers["totals"] or [{}]
    summary.total_requests = int(totals.get("requests") or 0)
    summary.identified_callers = int(totals.get("callers") or 0)
    summary.organisations = int(totals.get("organisations") or 0)
    summary.first_seen = _seconds(totals.get("first_seen"))
    summary.last_seen = _seconds(totals.get("last_seen"))
    summary.since = None if summary.last_seen is None else summary.last_seen - days * 86_400
    summary.endpoints = [
        EndpointUsage(
            str(row["method"]),
            str(row["route"]),
            int(row["requests"]),
            int(row["callers"]),
            int(row["organisations"]),
            round(float(row["client_error_share"] or 0) * int(row["requests"])),
            round(float(row["server_error_share"] or 0) * int(row["requests"])),
            row["p50_ms"],
            row["p95_ms"],
            _seconds(row["last_seen"]),
            int(row.get("anonymous") or 0),
        )
        for row in answers["endpoints"]
    ]
    summary.versions = [
        VersionUsage(
            row["api_version"] or "(none)",
            int(row["requests"]),
            int(row["callers"]),
            int(row["organisations"]),
        )
        for row in answers["versions"]
    ]
    by_organisation: dict[str, OrganisationVersions] = {}
    for row in answers["versions_by_organisation"]:
        if row["api_version"] is None:
            continue
        entry = by_organisation.setdefault(
            row["organisation"], OrganisationVersions(row["organisation"])
        )
        entry.requests[row["api_version"]] = int(row["requests"])
        entry.last_seen[row["api_version"]] = _seconds(row["last_seen"]) or 0.0
    summary.versions_by_organisation = [by_organisation[name] for name in sorted(by_organisation)]
    summary.adoption_period = "day"
    summary.version_adoption = [
        VersionPeriod(
            str(row["day"])[:10],
            row["api_version"] or "(none)",
            int(row["requests"]),
            None,
            int(row["organisations"]),
        )
        for row in answers["version_adoption"]
    ]
    summary.auth_methods = [
        AuthUsage(
            row["auth_method"] or "(unknown)",
            int(row["requests"]),
            int(row["callers"]),
            int(row["organisations"]),
            int(row.get("failed") or 0),
        )
        for row in answers["auth_methods"]
    ]
    summary.client_libraries = [
        LibraryUsage(
            row["organisation"],
            str(row["client_library"]),
            row["version"],
            int(row["requests"]),
            int(row["callers"]),
            _seconds(row["last_seen"]),
        )
        for row in answers["client_libraries"]
    ]
    summary.never_called = [
        UnusedEndpoint(str(row["method"]), str(row["route"]), bool(row["deprecated"]))
        for row in answers["never_called"]
    ]
    summary.deprecated = _deprecated(answers["deprecated"])
    for name, steps in (journeys or {}).items():
        [reached] = answers[f"funnel:{name}"] or [{}]
        counts = [int(reached.get(f"reached_{index}") or 0) for index in range(1, len(steps) + 1)]
        summary.funnels.append(
            Funnel(name, list(steps), journey_window_days, funnel_steps(steps, counts), [])
        )
    return summary


def _deprecated(rows: list[dict[str, Any]]) -> list[DeprecatedEndpoint]:
    endpoints: dict[tuple[str, str], DeprecatedEndpoint] = {}
    organisations: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        key = (str(row["method"]), str(row["route"]))
        entry = endpoints.setdefault(key, DeprecatedEndpoint(*key))
        last = _seconds(row["last_seen"])
        entry.requests += int(row["requests"])
        entry.last_seen = max(entry.last_seen or 0.0, last or 0.0)
        if row["caller"] is not None:
            entry.callers += 1
        if row["organisation"] is not None:
            organisations[key].add(row["organisation"])
        libraries = [name.strip() for name in row["client_libraries"] or () if name.strip()]
        entry.by_caller.append(
            DeprecatedCaller(
                row["organisation"], row["caller"], int(row["requests"]), last, libraries
            )
        )
    for key, entry in endpoints.items():
        entry.organisations = len(organisations[key])
    return sorted(endpoints.values(), key=lambda entry: (-entry.requests, entry.route))
