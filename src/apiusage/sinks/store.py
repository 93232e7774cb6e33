"""The embedded local store: a SQLite file holding the same events that would go to PostHog.

WAL mode with a busy timeout, so several worker processes (gunicorn, uvicorn --workers)
can write to one file; each process writes from its single delivery thread, one
transaction per batch. Inserts are idempotent on the event uuid, so a replayed batch never
doubles counts.

The properties that reports group and filter by are real, indexed columns; the rest of an
event's properties are one JSON object. The layout is versioned (``meta.schema_version``)
and a store written by an older apiusage is migrated in place when it is opened.
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
from typing import Any

import orjson

from apiusage.events import Event, GroupUpdate, SharedProperties
from apiusage.health import Stats

__all__ = [
    "COLUMN_PROPERTIES",
    "STORE_SCHEMA_VERSION",
    "LocalStoreSink",
    "StoreVersionError",
    "connect",
]

STORE_SCHEMA_VERSION = 2

#: Event properties stored as columns of ``events`` (and left out of its JSON).
COLUMN_PROPERTIES = (
    "organisation",
    "route",
    "method",
    "status_code",
    "duration_ms",
    "api_version",
    "auth_method",
    "client_library",
    "client_library_version",
)
_COLUMN_SET = frozenset(COLUMN_PROPERTIES)
#: Where a SharedProperties keeps its part of a row (see ``_event_row``).
_MEMO_KEY = "store-row"

_EVENTS_TABLE = """
CREATE TABLE events (
    uuid TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    organisation TEXT,
    route TEXT,
    method TEXT,
    status_code INTEGER,
    duration_ms REAL,
    api_version TEXT,
    auth_method TEXT,
    client_library TEXT,
    client_library_version TEXT,
    personless INTEGER NOT NULL,
    properties TEXT NOT NULL,
    groups TEXT,
    person_properties TEXT
)
"""
_EVENTS_INDEXES = """
CREATE INDEX IF NOT EXISTS events_by_name_time ON events (event, timestamp);
CREATE INDEX IF NOT EXISTS events_by_organisation ON events (organisation, timestamp);
"""
_OTHER_TABLES = """
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
CREATE TABLE IF NOT EXISTS processes (
    process TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    counters TEXT NOT NULL
);
"""
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (uuid, event, distinct_id, timestamp, organisation, route, "
    "method, status_code, duration_ms, api_version, auth_method, client_library, "
    "client_library_version, personless, properties, groups, person_properties) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Version 1 kept every property in the JSON; version 2 moves these out into columns.
_MIGRATE_1_TO_2 = (
    "INSERT INTO events SELECT uuid, event, distinct_id, timestamp, "
    + ", ".join(f"json_extract(properties, '$.{name}')" for name in COLUMN_PROPERTIES)
    + ", personless, json_remove(properties, "
    + ", ".join(f"'$.{name}'" for name in COLUMN_PROPERTIES)
    + "), NULLIF(groups, '{}'), NULLIF(person_properties, '{}') FROM events_v1"
)

_BUSY_TIMEOUT_MS = 10_000
_SAVE_COUNTERS = (
    "INSERT INTO processes (process, started_at, updated_at, counters) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (process) DO UPDATE SET updated_at = excluded.updated_at, "
    "counters = excluded.counters"
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class StoreVersionError(RuntimeError):
    """The store was written by a newer apiusage whose layout this one does not know."""


def _version(db: sqlite3.Connection) -> int | None:
    """The layout version, or None for a new, empty database."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "events" not in tables:
        return None
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 1


def _prepare(db: sqlite3.Connection) -> None:
    """Create the layout, or migrate an older one, in one transaction (safe across processes)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)
        if version is not None and version > STORE_SCHEMA_VERSION:
            raise StoreVersionError(
                f"the store has layout version {version}, newer than this apiusage knows "
                f"({STORE_SCHEMA_VERSION}): upgrade apiusage, or point APIUSAGE_STORE elsewhere"
            )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        if version is None:
            db.execute(_EVENTS_TABLE)
        elif version == 1:
            db.execute("DROP INDEX IF EXISTS events_by_name_time")
            db.execute("ALTER TABLE events RENAME TO events_v1")
            db.execute(_EVENTS_TABLE)
            db.execute(_MIGRATE_1_TO_2)
            db.execute("DROP TABLE events_v1")
        for statement in (_EVENTS_INDEXES + _OTHER_TABLES).split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(STORE_SCHEMA_VERSION),),
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the store with the pragmas it needs; a writer creates or migrates its layout.

    A reader of a store in an older layout migrates it first (once), so reports always
    read the current columns.
    """
    path = Path(path)
    if readonly:
        if not path.exists():
            raise FileNotFoundError(f"no apiusage store at {path}")
        connection = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        version = _version(connection)
        if version is not None and version < STORE_SCHEMA_VERSION:
            connection.close()
            connect(path).close()  # migrate, then read
            return connect(path, readonly=True)
        return connection
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    try:
        _prepare(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _process_name() -> str:
    """This writer, as the ``processes`` table names it: host, pid, and when it started
    (a process may make more than one client, each with its own counters)."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"


def _lost(stats: Stats | None) -> bool:
    return stats is not None and stats.snapshot()["dropped"] > 0


def _event_row(event: Event) -> tuple[Any, ...]:
    shared = event.shared
    if shared is None:
        properties = event.own_properties
        get = properties.get
        columns = tuple(get(name) for name in COLUMN_PROPERTIES)
        rest = _dumps({key: value for key, value in properties.items() if key not in _COLUMN_SET})
    else:
        # The shared part of the row (its columns, its JSON) is worked out once per
        # SharedProperties; the event's own properties fill in over it.
        shared_columns, shared_json = shared.memo.get(_MEMO_KEY) or _remember_shared(shared)
        own = event.own_properties
        pairs = zip(COLUMN_PROPERTIES, shared_columns, strict=True)
        columns = tuple(own.get(name, value) for name, value in pairs)
        own_rest = {key: value for key, value in own.items() if key not in _COLUMN_SET}
        # The shared JSON, encoded once, and this event's own: own properties never share
        # a key with the shared ones (see Event), so the two objects join into one.
        if not own_rest:
            rest = shared_json
        elif shared_json == "{}":
            rest = _dumps(own_rest)
        else:
            rest = shared_json[:-1] + "," + _dumps(own_rest)[1:]
    return (
        event.uuid,
        event.name,
        event.distinct_id,
        event.timestamp,
        *columns,
        int(event.personless),
        rest,
        _dumps(event.groups) if event.groups else None,
        _dumps(event.person_properties) if event.person_properties else None,
    )


def _remember_shared(shared: SharedProperties) -> tuple[tuple[Any, ...], str]:
    properties = shared.properties
    get = properties.get
    remembered = (
        tuple(get(name) for name in COLUMN_PROPERTIES),
        _dumps({key: value for key, value in properties.items() if key not in _COLUMN_SET}),
    )
    shared.memo[_MEMO_KEY] = remembered
    return remembered


class LocalStoreSink:
    """Writes events into the SQLite store, one transaction per batch.

    With ``stats``, each batch also saves the process's counters (delivered, dropped by
    reason …) in the ``processes`` table, and closing saves the last ones, so that
    ``apiusage report`` and ``apiusage health`` show what was lost, not only what arrived.
    """

    def __init__(self, path: Path | str, *, stats: Stats | None = None) -> None:
        self.path = Path(path)
        self.stats = stats
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._process = _process_name()
        self._started_at = time.time()
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
        self._process = _process_name()
        self._started_at = time.time()

    def _counters_row(self, now: float) -> tuple[str, float, float, str] | None:
        if self.stats is None:
            return None
        return (self._process, self._started_at, now, _dumps(self.stats.snapshot()))

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        event_rows = [_event_row(event) for event in events]
        now = time.time()
        person_rows = [
            (event.distinct_id, _dumps(event.person_properties), now)
            for event in events
            if event.person_properties
        ]
        group_rows = [
            (group.group_type, group.group_key, _dumps(group.properties), now) for group in groups
        ]
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_INSERT_EVENT, event_rows)
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
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return len(events)

    def flush(self, timeout: float) -> None:
        return None  # every batch is committed as it is sent

    def close(self, timeout: float) -> None:
        with self._lock:
            counters = self._counters_row(time.time())
            if counters is not None and (self._connection is not None or _lost(self.stats)):
                # The last counters (what shutdown delivered or dropped); a store gone or
                # locked past the timeout leaves nothing to save them to.
                with contextlib.suppress(sqlite3.Error):
                    self._db().execute(_SAVE_COUNTERS, counters)
            if self._connection is not None:
                self._connection.close()
                self._connection = None
