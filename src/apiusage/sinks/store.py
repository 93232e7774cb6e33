"""The embedded local store: a SQLite file holding the same events that would go to PostHog.

WAL mode with a busy timeout, so several worker processes (gunicorn, uvicorn --workers)
can write to one file; each process writes from its single delivery thread. Inserts are
idempotent on the event uuid, so a replayed batch never doubles counts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from apiusage.events import Event, GroupUpdate

__all__ = ["STORE_SCHEMA_VERSION", "LocalStoreSink", "connect"]

STORE_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    uuid TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    properties TEXT NOT NULL,
    groups TEXT NOT NULL,
    person_properties TEXT NOT NULL,
    personless INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_name_time ON events (event, timestamp);
CREATE TABLE IF NOT EXISTS groups (
    group_type TEXT NOT NULL,
    group_key TEXT NOT NULL,
    properties TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (group_type, group_key)
);
CREATE TABLE IF NOT EXISTS persons (
    distinct_id TEXT PRIMARY KEY,
    properties TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_BUSY_TIMEOUT_MS = 10_000


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the store (creating it and its folder when writing) with the pragmas it needs."""
    path = Path(path)
    if readonly:
        if not path.exists():
            raise FileNotFoundError(f"no apiusage store at {path}")
        connection = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        return connection
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.executescript(_SCHEMA)
    connection.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(STORE_SCHEMA_VERSION),),
    )
    return connection


class LocalStoreSink:
    """Writes events into the SQLite store, one transaction per batch."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # Fail at start-up, not on the first request, if the store cannot be created.
        connect(self.path).close()

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = connect(self.path)
        return self._connection

    def after_fork(self) -> None:
        """Forget the parent's connection: SQLite connections must not cross a fork."""
        self._connection = None
        self._lock = threading.Lock()

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR IGNORE INTO events (uuid, event, distinct_id, timestamp, "
                    "properties, groups, person_properties, personless) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            event.uuid,
                            event.name,
                            event.distinct_id,
                            event.timestamp,
                            json.dumps(event.properties, default=str),
                            json.dumps(event.groups),
                            json.dumps(event.person_properties, default=str),
                            int(event.personless),
                        )
                        for event in events
                    ],
                )
                now = time.time()
                db.executemany(
                    "INSERT INTO persons (distinct_id, properties, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (distinct_id) DO UPDATE SET "
                    "properties = json_patch(persons.properties, excluded.properties), "
                    "updated_at = excluded.updated_at",
                    [
                        (event.distinct_id, json.dumps(event.person_properties, default=str), now)
                        for event in events
                        if event.person_properties
                    ],
                )
                db.executemany(
                    "INSERT INTO groups (group_type, group_key, properties, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (group_type, group_key) DO UPDATE SET "
                    "properties = json_patch(groups.properties, excluded.properties), "
                    "updated_at = excluded.updated_at",
                    [
                        (
                            group.group_type,
                            group.group_key,
                            json.dumps(group.properties, default=str),
                            now,
                        )
                        for group in groups
                    ],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return len(events)

    def flush(self, timeout: float) -> None:
        return None  # every batch is committed as it is sent

    def close(self, timeout: float) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
