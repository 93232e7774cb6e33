"""The report's answers as CSV tables (``apiusage report --csv TABLE``), one row per line.

``deprecated`` is the outreach list: every caller of a deprecated endpoint, with its
organisation, how often and when it last called, and the client libraries it used.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from apiusage.report.answers import UsageSummary

__all__ = ["CSV_TABLES", "write_csv"]


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _deprecated(summary: UsageSummary) -> Iterable[list[Any]]:
    yield [
        "method",
        "route",
        "organisation",
        "caller",
        "requests",
        "last_seen",
        "client_libraries",
        "requests_after_notice",
    ]
    for endpoint in summary.deprecated:
        for caller in endpoint.by_caller:
            yield [
                endpoint.method,
                endpoint.route,
                caller.organisation or "",
                caller.caller or "",
                caller.requests,
                _iso(caller.last_seen),
                "; ".join(caller.client_libraries),
                caller.requests_after_notice,
            ]


def _endpoints(summary: UsageSummary) -> Iterable[list[Any]]:
    yield [
        "method",
        "route",
        "requests",
        "callers",
        "organisations",
        "client_errors",
        "server_errors",
        "p50_ms",
        "p95_ms",
        "last_seen",
        "anonymous",
    ]
    for entry in summary.endpoints:
        yield [
            entry.method,
            entry.route,
            entry.requests,
            entry.callers,
            entry.organisations,
            entry.client_errors,
            entry.server_errors,
            "" if entry.p50_ms is None else entry.p50_ms,
            "" if entry.p95_ms is None else entry.p95_ms,
            _iso(entry.last_seen),
            entry.anonymous,
        ]


def _flags(summary: UsageSummary) -> Iterable[list[Any]]:
    yield [
        "flag",
        "answer",
        "requests",
        "callers",
        "organisations",
        "client_errors",
        "server_errors",
        "p50_ms",
        "p95_ms",
    ]
    for entry in summary.flags:
        yield [
            entry.flag,
            entry.answer,
            entry.requests,
            entry.callers,
            entry.organisations,
            entry.client_errors,
            entry.server_errors,
            "" if entry.p50_ms is None else entry.p50_ms,
            "" if entry.p95_ms is None else entry.p95_ms,
        ]


def _never_called(summary: UsageSummary) -> Iterable[list[Any]]:
    yield ["method", "route", "deprecated"]
    for entry in summary.never_called or ():
        yield [entry.method, entry.route, str(entry.deprecated).lower()]


def _versions(summary: UsageSummary) -> Iterable[list[Any]]:
    yield ["organisation", "api_version", "requests", "last_seen"]
    for entry in summary.versions_by_organisation:
        for version in entry.versions:
            yield [
                entry.organisation,
                version,
                entry.requests[version],
                _iso(entry.last_seen[version]),
            ]


def _libraries(summary: UsageSummary) -> Iterable[list[Any]]:
    yield ["organisation", "client_library", "version", "requests", "callers", "last_seen"]
    for entry in summary.client_libraries:
        yield [
            entry.organisation or "",
            entry.client_library,
            entry.version or "",
            entry.requests,
            entry.callers,
            _iso(entry.last_seen),
        ]


def _underused(summary: UsageSummary) -> Iterable[list[Any]]:
    yield ["organisation", "kind", "feature", "requests", "share", "median_share", "used_by"]
    for entry in summary.underused_features:
        yield [
            entry.organisation,
            entry.kind,
            entry.feature,
            entry.requests,
            entry.share,
            entry.median_share,
            entry.organisations_using,
        ]


def _adoption(summary: UsageSummary) -> Iterable[list[Any]]:
    yield ["period", "organisation", "api_version", "requests"]
    for entry in [*summary.version_adoption, *summary.version_adoption_by_organisation]:
        yield [entry.period, entry.organisation or "", entry.version, entry.requests]


#: ``--csv`` tables by name.
CSV_TABLES: dict[str, Callable[[UsageSummary], Iterable[list[Any]]]] = {
    "deprecated": _deprecated,
    "endpoints": _endpoints,
    "never-called": _never_called,
    "versions": _versions,
    "client-libraries": _libraries,
    "underused": _underused,
    "version-adoption": _adoption,
    "flags": _flags,
}


def write_csv(summary: UsageSummary, table: str, out: IO[str]) -> None:
    """Write one table (a name of :data:`CSV_TABLES`) with a header row."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([_inert(cell) for cell in row] for row in CSV_TABLES[table](summary))


def _inert(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=HYPERLINK(…)`` sent as a
    caller id) starts with ``'``, as OWASP advises; numbers are left as they are."""
    if isinstance(cell, str) and cell[:1] in _FORMULA_STARTS:
        return "'" + cell
    return cell


_FORMULA_STARTS = frozenset("=+-@\t\r")
