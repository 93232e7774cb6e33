"""Usage, errors and latency by feature-flag answer: what changed for the callers who got
``v3`` (or ``true``) compared with the rest.

Requests carry the answers they were served with as ``$feature/<key>`` properties, which
the store keeps in the request's shape (see :mod:`apiusage.sinks.store_layout`): the
shapes are read once, and only the rows of flagged shapes.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from apiusage.report.answers import PERCENTILES, FlagAnswerUsage, nearest_rank

__all__ = ["FlagAnswerUsage", "flag_usage"]

_PREFIX = "$feature/"


@dataclass
class _Tally:
    requests: int = 0
    client_errors: int = 0
    server_errors: int = 0
    callers: set[str] = field(default_factory=set)
    organisations: set[str] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)


def _answer(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def flag_usage(
    db: sqlite3.Connection,
    event_name: str,
    window: str,
    values: list[Any],
    organisation: str | None = None,
) -> list[FlagAnswerUsage]:
    """Each flag's answers over the window (``window``/``values`` as the report's), by
    flag, then most requests first."""
    answers_of: dict[int, list[tuple[str, str]]] = {}
    status_of: dict[int, int] = {}
    organisation_of: dict[int, str | None] = {}
    shapes = db.execute(
        "SELECT s.id, s.status_code, s.organisation, p.properties FROM event_shapes AS s "
        "JOIN property_sets AS p ON p.id = s.property_set "
        "WHERE s.event = ? AND instr(p.properties, ?) > 0"
        + ("" if organisation is None else " AND s.organisation = ?"),
        (event_name, f'"{_PREFIX}', *(() if organisation is None else (organisation,))),
    )
    for shape_id, status, shape_organisation, properties in shapes:
        flags = [
            (key[len(_PREFIX) :], _answer(value))
            for key, value in orjson.loads(properties).items()
            if key.startswith(_PREFIX)
        ]
        if flags:
            answers_of[shape_id] = flags
            status_of[shape_id] = status or 0
            organisation_of[shape_id] = shape_organisation
    tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    wanted = list(answers_of)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = db.execute(
            "SELECT shape, distinct_id, duration_ms FROM event_rows "
            f"INDEXED BY event_rows_by_shape WHERE shape IN ({marks}){window}",
            (*chunk, *values),
        )
        for shape_id, distinct_id, duration in rows:
            status = status_of[shape_id]
            shape_organisation = organisation_of[shape_id]
            for flag_answer in answers_of[shape_id]:
                tally = tallies[flag_answer]
                tally.requests += 1
                if status >= 500:
                    tally.server_errors += 1
                elif status >= 400:
                    tally.client_errors += 1
                if distinct_id is not None:
                    tally.callers.add(distinct_id)
                if shape_organisation is not None:
                    tally.organisations.add(shape_organisation)
                if duration is not None:
                    tally.durations.append(float(duration))
    found = []
    for (flag, answer), tally in tallies.items():
        usage = FlagAnswerUsage(
            flag,
            answer,
            tally.requests,
            len(tally.callers),
            len(tally.organisations),
            tally.client_errors,
            tally.server_errors,
        )
        durations = sorted(tally.durations)
        if durations:
            for name, share in PERCENTILES:
                position = nearest_rank(len(durations), share) - 1
                setattr(usage, name, round(durations[position], 3))
        found.append(usage)
    return sorted(found, key=lambda usage: (usage.flag, -usage.requests, usage.answer))
