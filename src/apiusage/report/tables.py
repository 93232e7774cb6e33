"""The report's answers as CSV tables (``apiusage report --csv TABLE``), one row per line.

``deprecated`` is the outreach list: every caller of a deprecated endpoint, with its
organisation, how often and when it last called, and the client libraries it used.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from apiusage.report.answers import (
    EndpointUsage,
    FlagAnswerUsage,
    LibraryUsage,
    UnusedEndpoint,
    UsageSummary,
)

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


def _records(kind: type, entries: Iterable[Any]) -> Iterable[list[Any]]:
    """A table whose columns are the fields of the answer ``kind``, in order: ``None`` as
    an empty cell, ``last_seen`` as ISO time, booleans as ``true``/``false``."""
    names = [field.name for field in dataclasses.fields(kind)]
    yield names
    for entry in entries:
        row = []
        for name in names:
            value = getattr(entry, name)
            if name == "last_seen":
                value = _iso(value)
            elif isinstance(value, bool):
                value = str(value).lower()
            row.append("" if value is None else value)
        yield row


def _endpoints(summary: UsageSummary) -> Iterable[list[Any]]:
    return _records(EndpointUsage, summary.endpoints)


def _flags(summary: UsageSummary) -> Iterable[list[Any]]:
    return _records(FlagAnswerUsage, summary.flags)


def _never_called(summary: UsageSummary) -> Iterable[list[Any]]:
    return _records(UnusedEndpoint, summary.never_called or ())


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
    return _records(LibraryUsage, summary.client_libraries)


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
