"""A usage summary from the embedded local store: requests by route, version, auth, organisation.

Reads the same events that would go to PostHog, with plain SQL over the SQLite store.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiusage.sinks.store import COLUMN_PROPERTIES, connect

__all__ = [
    "Breakdown",
    "DeliveryHealth",
    "UsageSummary",
    "delivery_health",
    "format_delivery",
    "format_summary",
    "summarise",
]


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Request counts (and error counts) by one property."""

    title: str
    rows: list[tuple[str, int, int]]  # (value, requests, server errors)


@dataclass(slots=True)
class DeliveryHealth:
    """What the processes that wrote to a store counted: delivered, and lost by reason."""

    processes: int = 0
    last_update: float | None = None
    #: Summed over the processes (their latest counters): requests_recorded,
    #: events_delivered, dropped, dropped_queue_full …
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> dict[str, int]:
        """Events lost, by reason (only reasons that happened)."""
        return {
            name.removeprefix("dropped_"): count
            for name, count in self.counters.items()
            if name.startswith("dropped_") and count
        }


@dataclass(slots=True)
class UsageSummary:
    total_requests: int = 0
    journey_events: int = 0
    identified_callers: int = 0
    organisations: int = 0
    breakdowns: list[Breakdown] = field(default_factory=list)
    multi_version_organisations: list[tuple[str, list[str]]] = field(default_factory=list)
    journey_counts: list[tuple[str, int, int]] = field(
        default_factory=list
    )  # event, events, callers
    delivery: DeliveryHealth = field(default_factory=DeliveryHealth)


def _property(name: str) -> str:
    """SQL for one event property: its column, or its place in the JSON of the rest."""
    return name if name in COLUMN_PROPERTIES else f"json_extract(properties, '$.{name}')"


def _breakdown(db: sqlite3.Connection, title: str, expression: str, event_name: str) -> Breakdown:
    rows = db.execute(
        f"SELECT COALESCE(CAST({expression} AS TEXT), '(none)') AS value, COUNT(*), "
        f"SUM(CASE WHEN {_property('status_code')} >= 500 THEN 1 ELSE 0 END) "
        "FROM events WHERE event = ? GROUP BY value ORDER BY COUNT(*) DESC, value",
        (event_name,),
    ).fetchall()
    return Breakdown(
        title, [(str(value), int(count), int(errors or 0)) for value, count, errors in rows]
    )


def summarise(store: Path | str, event_name: str = "api_request") -> UsageSummary:
    """Read the store and summarise it."""
    with closing(connect(store, readonly=True)) as db:
        summary = UsageSummary()
        summary.total_requests = db.execute(
            "SELECT COUNT(*) FROM events WHERE event = ?", (event_name,)
        ).fetchone()[0]
        summary.journey_events = db.execute(
            "SELECT COUNT(*) FROM events WHERE event != ? AND event NOT LIKE '$%'", (event_name,)
        ).fetchone()[0]
        summary.identified_callers = db.execute(
            "SELECT COUNT(DISTINCT distinct_id) FROM events WHERE personless = 0"
        ).fetchone()[0]
        summary.organisations = db.execute(
            f"SELECT COUNT(DISTINCT {_property('organisation')}) FROM events "
            f"WHERE {_property('organisation')} IS NOT NULL"
        ).fetchone()[0]
        summary.breakdowns = [
            _breakdown(
                db,
                "Requests by route",
                f"{_property('method')} || ' ' || COALESCE({_property('route')}, '(no route)')",
                event_name,
            ),
            _breakdown(db, "Requests by API version", _property("api_version"), event_name),
            _breakdown(db, "Requests by auth method", _property("auth_method"), event_name),
            _breakdown(db, "Requests by organisation", _property("organisation"), event_name),
            _breakdown(
                db,
                "Requests by client library",
                f"{_property('client_library')} || ' ' || "
                f"COALESCE({_property('client_library_version')}, '')",
                event_name,
            ),
        ]
        rows = db.execute(
            "SELECT organisation, json_group_array(DISTINCT api_version) FROM events "
            "WHERE event = ? AND organisation IS NOT NULL AND api_version IS NOT NULL "
            "GROUP BY organisation ORDER BY organisation",
            (event_name,),
        ).fetchall()
        for organisation, versions in rows:
            listed: list[Any] = sorted(json.loads(versions))
            if len(listed) > 1:
                summary.multi_version_organisations.append(
                    (str(organisation), [str(v) for v in listed])
                )
        summary.journey_counts = [
            (str(name), int(count), int(callers))
            for name, count, callers in db.execute(
                "SELECT event, COUNT(*), COUNT(DISTINCT distinct_id) FROM events "
                "WHERE event != ? AND event NOT LIKE '$%' GROUP BY event ORDER BY COUNT(*) DESC",
                (event_name,),
            )
        ]
        summary.delivery = _delivery(db)
    return summary


def delivery_health(store: Path | str) -> DeliveryHealth:
    """The counters the processes writing to ``store`` saved there."""
    with closing(connect(store, readonly=True)) as db:
        return _delivery(db)


def _delivery(db: sqlite3.Connection) -> DeliveryHealth:
    health = DeliveryHealth()
    try:
        rows = db.execute("SELECT updated_at, counters FROM processes").fetchall()
    except sqlite3.OperationalError:  # a store from before the table existed
        return health
    for updated_at, counters in rows:
        health.processes += 1
        health.last_update = max(health.last_update or 0.0, float(updated_at))
        for name, value in json.loads(counters).items():
            if isinstance(value, int):
                health.counters[name] = health.counters.get(name, 0) + value
    return health


def format_delivery(health: DeliveryHealth) -> list[str]:
    """Lines saying what was delivered and what was lost, by reason."""
    if not health.processes:
        return []
    counters = health.counters
    lines = [
        "",
        f"Delivery ({health.processes} process{'es' if health.processes != 1 else ''})",
        "--------",
        f"requests recorded: {counters.get('requests_recorded', 0)}   "
        f"events delivered: {counters.get('events_delivered', 0)}   "
        f"dropped: {counters.get('dropped', 0)}   "
        f"internal errors: {counters.get('internal_errors', 0)}",
    ]
    for reason, count in sorted(health.dropped.items(), key=lambda item: -item[1]):
        lines.append(f"  dropped ({reason.replace('_', ' ')}): {count}")
    return lines


def format_summary(summary: UsageSummary, *, width: int = 48) -> str:
    """The summary as plain text tables."""
    lines = [
        "API usage summary",
        "=================",
        f"requests: {summary.total_requests}   journey events: {summary.journey_events}   "
        f"identified callers: {summary.identified_callers}   "
        f"organisations: {summary.organisations}",
    ]
    for breakdown in summary.breakdowns:
        lines += ["", breakdown.title, "-" * len(breakdown.title)]
        lines.append(f"{'':<{width}} {'requests':>9} {'share':>6} {'5xx':>5}")
        for value, count, errors in breakdown.rows:
            share = count / summary.total_requests if summary.total_requests else 0.0
            label = value if len(value) <= width else value[: width - 1] + "…"
            lines.append(f"{label:<{width}} {count:>9} {share:>6.0%} {errors:>5}")
    if summary.multi_version_organisations:
        lines += ["", "Organisations on several API versions at once", "-" * 45]
        for organisation, versions in summary.multi_version_organisations:
            lines.append(f"{organisation:<{width}} {', '.join(versions)}")
    if summary.journey_counts:
        lines += [
            "",
            "Journey events",
            "--------------",
            f"{'':<{width}} {'events':>9} {'callers':>8}",
        ]
        for name, count, callers in summary.journey_counts:
            lines.append(f"{name:<{width}} {count:>9} {callers:>8}")
    lines += format_delivery(summary.delivery)
    return "\n".join(lines)
