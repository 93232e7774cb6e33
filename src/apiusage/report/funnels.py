"""Journey funnels: how many callers reach each step of a journey, in order.

A caller reaches step *k* when it sent step *k*'s event after reaching step *k - 1*, and
within the conversion window of its first step (PostHog's ordered funnels count the same
way). Callers are counted overall and per organisation (the organisation of their first
step). Only journey events are read, a small share of the store.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence

from apiusage.report.answers import Funnel, FunnelStep, OrganisationFunnel

__all__ = ["funnel", "funnel_steps"]

DAY = 86_400.0


def funnel(
    db: sqlite3.Connection,
    name: str,
    steps: Sequence[str],
    window: str,
    values: list[float],
    *,
    conversion_days: float,
    organisation: str | None,
) -> Funnel:
    """The funnel of ``steps`` over the rows in the window (``window``: SQL conditions on
    ``timestamp`` with a leading AND, and their ``values``)."""
    marks = ", ".join("?" for _ in steps)
    of_organisation = "" if organisation is None else " AND organisation = ?"
    rows = db.execute(
        "SELECT r.distinct_id, s.event, r.timestamp, s.organisation "
        "FROM event_rows AS r INDEXED BY event_rows_by_shape "
        "JOIN event_shapes AS s ON s.id = r.shape "
        f"WHERE r.shape IN (SELECT id FROM event_shapes WHERE event IN ({marks}){of_organisation}) "
        f"AND r.distinct_id IS NOT NULL{window} ORDER BY r.distinct_id, r.timestamp",
        (*steps, *([] if organisation is None else [organisation]), *values),
    )
    position = {step: index for index, step in enumerate(steps)}
    reached_overall = [0] * len(steps)
    reached_by: dict[str, list[int]] = defaultdict(lambda: [0] * len(steps))
    limit = conversion_days * DAY

    caller: str | None = None
    reached = 0
    started = 0.0
    first_organisation: str | None = None

    def close() -> None:
        for index in range(reached):
            reached_overall[index] += 1
            if first_organisation is not None:
                reached_by[first_organisation][index] += 1

    for distinct_id, event, timestamp, event_organisation in rows:
        if distinct_id != caller:
            if caller is not None:
                close()
            caller, reached, started, first_organisation = distinct_id, 0, 0.0, None
        step = position[event]
        if reached == len(steps) or step != reached:
            continue
        if reached == 0:
            started, first_organisation = timestamp, event_organisation
        elif timestamp - started > limit:
            continue
        reached += 1
    if caller is not None:
        close()
    return Funnel(
        name,
        list(steps),
        conversion_days,
        funnel_steps(steps, reached_overall),
        [
            OrganisationFunnel(org, funnel_steps(steps, counts))
            for org, counts in sorted(reached_by.items())
        ],
    )


def funnel_steps(steps: Sequence[str], reached: list[int]) -> list[FunnelStep]:
    """Each step with its callers and conversions, from the callers reaching each step."""
    result = []
    for index, (step, callers) in enumerate(zip(steps, reached, strict=True)):
        start = reached[0]
        previous = reached[index - 1] if index else callers
        result.append(
            FunnelStep(
                step,
                callers,
                round(callers / previous, 4) if previous else None,
                round(callers / start, 4) if start else None,
            )
        )
    return result
