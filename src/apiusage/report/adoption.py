"""API version adoption over time: requests per version per day (or per week, for windows
longer than three months), overall and per organisation.

One pass over the window joining each row to its shape: about 0.8 s for a million events,
so it is computed when asked for (``--over-time``, and the HTML report's chart).
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict

from apiusage.report.answers import VersionPeriod

__all__ = ["version_adoption"]

DAY = 86_400
#: Windows longer than this many days are counted per week.
DAILY_UP_TO_DAYS = 92


def _period_start(day: int, weekly: bool) -> str:
    """ISO date of the period holding ``day`` (days since the epoch; weeks start on
    Mondays: the epoch was a Thursday)."""
    if weekly:
        day -= (day + 3) % 7
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY))


def version_adoption(
    db: sqlite3.Connection,
    event_name: str,
    window: str,
    values: list[float],
    *,
    organisation: str | None,
    span_days: float,
) -> tuple[str, list[VersionPeriod], list[VersionPeriod]]:
    """(period, overall, per organisation) for the request events in the window."""
    weekly = span_days > DAILY_UP_TO_DAYS
    of_organisation = "" if organisation is None else " AND s.organisation = ?"
    rows = db.execute(
        f"SELECT CAST(r.timestamp / {DAY} AS INTEGER) AS day, s.api_version, s.organisation, "
        "COUNT(*) FROM event_rows AS r INDEXED BY event_rows_by_shape "
        "JOIN event_shapes AS s ON s.id = r.shape "
        f"WHERE s.event = ? AND r.shape IS NOT NULL{window.replace('timestamp', 'r.timestamp')}"
        f"{of_organisation} GROUP BY day, s.api_version, s.organisation",
        (event_name, *values, *([] if organisation is None else [organisation])),
    )
    overall: dict[tuple[str, str], int] = defaultdict(int)
    organisations: dict[tuple[str, str], set[str]] = defaultdict(set)
    by_organisation: dict[tuple[str, str, str], int] = defaultdict(int)
    for day, version, owner, count in rows:
        period = _period_start(int(day), weekly)
        version = version or "(none)"
        overall[period, version] += count
        if owner is not None:
            organisations[period, version].add(owner)
            by_organisation[owner, period, version] += count
    return (
        "week" if weekly else "day",
        [
            VersionPeriod(period, version, count, None, len(organisations[period, version]))
            for (period, version), count in sorted(overall.items())
        ],
        [
            VersionPeriod(period, version, count, owner)
            for (owner, period, version), count in sorted(by_organisation.items())
        ],
    )
