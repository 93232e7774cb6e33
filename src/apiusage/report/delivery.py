"""What the processes writing to a store counted: events delivered, and lost by reason.

Each writer saves its counters in the store's ``processes`` table (see
:class:`~apiusage.sinks.store.LocalStoreSink`); the report and ``apiusage health`` sum them.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from apiusage.sinks.store import connect

__all__ = ["DeliveryHealth", "delivery_health", "format_delivery", "read_delivery"]


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


def delivery_health(store: Path | str) -> DeliveryHealth:
    """The counters the processes writing to ``store`` saved there."""
    with closing(connect(store, readonly=True)) as db:
        return read_delivery(db)


def read_delivery(db: sqlite3.Connection) -> DeliveryHealth:
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
