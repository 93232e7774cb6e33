"""The embedded local store: a SQLite file holding the same events that would go to PostHog.

WAL mode with a busy timeout, so several worker processes (gunicorn, uvicorn --workers)
can write to one file; each process writes from its single delivery thread, one
transaction per batch. Inserts are idempotent on the event uuid, so a replayed batch never
doubles counts.

What requests have in common is written once, as a shape; each event is a short row
(see :mod:`apiusage.sinks.store_layout`). The layout is versioned
(``meta.schema_version``) and a store written by an older apiusage is migrated in place
when it is opened.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from apiusage.events import Event, GroupUpdate
from apiusage.health import Stats, logger
from apiusage.sinks.store_layout import (
    COLUMN_PROPERTIES,
    INSERT_ROW,
    STORE_SCHEMA_VERSION,
    EventRows,
    StoreVersionError,
    connect,
    dumps,
)

__all__ = [
    "COLUMN_PROPERTIES",
    "STORE_SCHEMA_VERSION",
    "LocalStoreSink",
    "StoreVersionError",
    "connect",
]

_SAVE_COUNTERS = (
    "INSERT INTO processes (process, started_at, updated_at, counters) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (process) DO UPDATE SET updated_at = excluded.updated_at, "
    "counters = excluded.counters"
)


def _process_name() -> str:
    """This writer, as the ``processes`` table names it: host, pid, and when it started
    (a process may make more than one client, each with its own counters)."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"


def _process_group() -> str:
    """This process's group (a server, its workers and reloader), and when its leader
    started where Linux says (a container's restart reuses group 1)."""
    getpgrp = getattr(os, "getpgrp", None)
    group = getpgrp() if getpgrp is not None else os.getpid()
    try:
        with open(f"/proc/{group}/stat", "rb") as stat:
            started = stat.read().rpartition(b")")[2].split()[19].decode()
    except (OSError, IndexError):
        started = ""
    return f"{group}:{started}"


def _lost(stats: Stats | None) -> bool:
    return stats is not None and stats.snapshot()["dropped"] > 0


class LocalStoreSink:
    """Writes events into the SQLite store, one transaction per batch.

    With ``stats``, each batch also saves the process's counters (delivered, dropped by
    reason …) in the ``processes`` table, and closing saves the last ones, so that
    ``apiusage report`` and ``apiusage health`` show what was lost, not only what arrived.
    """

    def __init__(
        self, path: Path | str, *, stats: Stats | None = None, notice: str | None = None
    ) -> None:
        self.path = Path(path)
        self.stats = stats
        #: Logged with the first batch, once per process group (see :meth:`_announce`).
        self._notice = notice
        self._connection: sqlite3.Connection | None = None
        self._rows: EventRows | None = None
        self._lock = threading.Lock()
        self._process = _process_name()
        self._started_at = time.time()
        # Fail at start-up, not on the first request, if the store cannot be created.
        connect(self.path).close()

    def _db(self) -> tuple[sqlite3.Connection, EventRows]:
        if self._connection is None or self._rows is None:
            self._connection = connect(self.path)
            self._rows = EventRows(self._connection)
        return self._connection, self._rows

    def after_fork(self) -> None:
        """Forget the parent's connection: SQLite connections must not cross a fork."""
        self._connection = None
        self._rows = None
        self._lock = threading.Lock()
        self._process = _process_name()
        self._started_at = time.time()

    def _counters_row(self, now: float) -> tuple[str, float, float, str] | None:
        if self.stats is None:
            return None
        return (self._process, self._started_at, now, dumps(self.stats.snapshot()))

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        now = time.time()
        person_rows = [
            (event.distinct_id, dumps(event.person_properties), now)
            for event in events
            if event.person_properties
        ]
        group_rows = [
            (group.group_type, group.group_key, dumps(group.properties), now) for group in groups
        ]
        with self._lock:
            db, rows = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(INSERT_ROW, rows.rows(events))
                if person_rows:
                    db.executemany(
                        "INSERT INTO persons (distinct_id, properties, updated_at) "
                        "VALUES (?, ?, ?) ON CONFLICT (distinct_id) DO UPDATE SET "
                        "properties = json_patch(persons.properties, excluded.properties), "
                        "updated_at = excluded.updated_at",
                        person_rows,
                    )
                if group_rows:
                    db.executemany(
                        "INSERT INTO groups (group_type, group_key, properties, updated_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (group_type, group_key) DO UPDATE SET "
                        "properties = json_patch(groups.properties, excluded.properties), "
                        "updated_at = excluded.updated_at",
                        group_rows,
                    )
                counters = self._counters_row(now)
                if counters is not None:
                    db.execute(_SAVE_COUNTERS, counters)
                announce = self._notice is not None and self._first_of_group(db)
            except BaseException:
                db.execute("ROLLBACK")
                rows.forget()  # shapes written in this transaction are gone
                raise
            db.execute("COMMIT")
        if announce:
            logger.warning("%s", self._notice)
        self._notice = None
        return len(events)

    def _first_of_group(self, db: sqlite3.Connection) -> bool:
        """Whether this process is the first of its process group (a server's workers, its
        reloader) to write: only that one logs the notice. Commands that record nothing
        (``flask routes``, ``manage.py migrate``) never get here."""
        group = f"{socket.gethostname()}:{_process_group()}"
        changed = db.execute(
            "INSERT INTO meta (key, value) VALUES ('notice_shown_to', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
            "WHERE meta.value != excluded.value",
            (group,),
        ).rowcount
        return changed > 0

    def flush(self, timeout: float) -> None:
        return None  # every batch is committed as it is sent

    def close(self, timeout: float) -> None:
        with self._lock:
            counters = self._counters_row(time.time())
            if counters is not None and (self._connection is not None or _lost(self.stats)):
                # The last counters (what shutdown delivered or dropped); a store gone or
                # locked past the timeout leaves nothing to save them to.
                with contextlib.suppress(sqlite3.Error):
                    self._db()[0].execute(_SAVE_COUNTERS, counters)
            if self._connection is not None:
                self._connection.close()
                self._connection = None
                self._rows = None
