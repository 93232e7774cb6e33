"""The local store's layout: its tables, its versions and migrations, and how an event
becomes a row.

Most of an ``api_request`` event is the same from one request of a route and caller to
the next (route, method, status, version, auth method, client library, organisation, the
rest of the shared properties). Those parts are one row of ``event_shapes``, written
once; each event is a short row of ``event_rows`` (uuid as 16 bytes, its shape, caller,
time, duration and its own few properties). Reports group the rows by shape, an integer,
and look the shapes up afterwards: a million events are summarised in a second, and
take about a quarter of the room they took when every row held every property.

The ``events`` view shows every event in the flat form of layout version 2 (one column per
report property, the rest as JSON), for hand-written SQL; deleting from it deletes rows.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid as uuid_module
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from apiusage.events import Event, SharedProperties
from apiusage.private_paths import private_database

__all__ = [
    "COLUMN_PROPERTIES",
    "SHAPE_COLUMNS",
    "STORE_SCHEMA_VERSION",
    "EventRows",
    "StoreVersionError",
    "connect",
    "dumps",
]

STORE_SCHEMA_VERSION = 3

#: Event properties shown as columns of the ``events`` view (and left out of its JSON).
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
#: The column properties that belong to an event's shape (all but its duration).
SHAPE_COLUMNS = tuple(name for name in COLUMN_PROPERTIES if name != "duration_ms")
_COLUMN_SET = frozenset(COLUMN_PROPERTIES)
_ROUTE, _METHOD = SHAPE_COLUMNS.index("route"), SHAPE_COLUMNS.index("method")
#: Integer properties of most events, kept in columns of their row (not in its JSON).
_COUNTS = ("request_bytes", "response_bytes")
_BUSY_TIMEOUT_MS = 10_000

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id INTEGER PRIMARY KEY,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    UNIQUE (route, method)
);
CREATE TABLE IF NOT EXISTS property_sets (
    id INTEGER PRIMARY KEY,
    properties TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS event_shapes (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    event TEXT NOT NULL,
    personless INTEGER NOT NULL,
    organisation TEXT,
    route TEXT,
    method TEXT,
    status_code INTEGER,
    api_version TEXT,
    auth_method TEXT,
    client_library TEXT,
    client_library_version TEXT,
    request_id_is_uuid INTEGER NOT NULL,
    property_set INTEGER NOT NULL REFERENCES property_sets (id),
    groups TEXT
);
CREATE INDEX IF NOT EXISTS event_shapes_by_event ON event_shapes (event);
CREATE TABLE IF NOT EXISTS event_rows (
    id INTEGER PRIMARY KEY,
    uuid BLOB NOT NULL UNIQUE,
    shape INTEGER NOT NULL REFERENCES event_shapes (id),
    endpoint INTEGER REFERENCES endpoints (id),
    distinct_id TEXT,
    timestamp REAL NOT NULL,
    duration_ms REAL,
    request_bytes INTEGER,
    response_bytes INTEGER,
    properties TEXT,
    person_properties TEXT
);
CREATE INDEX IF NOT EXISTS event_rows_by_time ON event_rows (timestamp);
CREATE INDEX IF NOT EXISTS event_rows_by_shape ON event_rows (shape, distinct_id, timestamp);
CREATE INDEX IF NOT EXISTS event_rows_by_endpoint ON event_rows (endpoint, duration_ms, timestamp);
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

#: A 16-byte uuid as its usual text; other values (text uuids) as they are.
_UUID_TEXT = (
    "CASE WHEN typeof(r.uuid) = 'blob' THEN lower(substr(hex(r.uuid), 1, 8) || '-' || "
    "substr(hex(r.uuid), 9, 4) || '-' || substr(hex(r.uuid), 13, 4) || '-' || "
    "substr(hex(r.uuid), 17, 4) || '-' || substr(hex(r.uuid), 21)) ELSE r.uuid END"
)
# The view's JSON joins three comma-separated bodies (the shape's, the row's, the request
# id): a JSON object's body never starts or ends with a comma, so trimming commas only
# removes the separators of empty parts.


def _body(json_text: str) -> str:
    """SQL: a JSON object's text without its braces."""
    return f"substr({json_text}, 2, length({json_text}) - 2)"


def _optional(name: str, value: str) -> str:
    """SQL: ``,"name":value`` as JSON, or nothing when ``value`` is NULL."""
    pair = _body(f"json_object('{name}', {value})")
    return f"CASE WHEN {value} IS NULL THEN '' ELSE ',' || {pair} END"


# The view's JSON joins comma-separated parts (the shape's properties, the row's, its
# counts, the request id): a JSON object's body never starts or ends with a comma, so
# trimming commas only removes the separators of empty parts.
_VIEW = f"""
CREATE VIEW IF NOT EXISTS events AS
SELECT r.id AS id,
       {_UUID_TEXT} AS uuid,
       s.event AS event,
       COALESCE(r.distinct_id, {_UUID_TEXT}) AS distinct_id,
       r.timestamp AS timestamp,
       s.organisation AS organisation, s.route AS route, s.method AS method,
       s.status_code AS status_code, r.duration_ms AS duration_ms,
       s.api_version AS api_version, s.auth_method AS auth_method,
       s.client_library AS client_library, s.client_library_version AS client_library_version,
       s.personless AS personless,
       '{{' || trim(
           {_body("p.properties")}
           || CASE WHEN r.properties IS NULL THEN '' ELSE ',' || {_body("r.properties")} END
           || {_optional("request_bytes", "r.request_bytes")}
           || {_optional("response_bytes", "r.response_bytes")}
           || CASE WHEN s.request_id_is_uuid THEN ',"request_id":"' || {_UUID_TEXT} || '"'
              ELSE '' END,
           ','
       ) || '}}' AS properties,
       s.groups AS groups,
       r.person_properties AS person_properties
FROM event_rows AS r
JOIN event_shapes AS s ON s.id = r.shape
JOIN property_sets AS p ON p.id = s.property_set
"""
_VIEW_DELETE = """
CREATE TRIGGER IF NOT EXISTS events_delete INSTEAD OF DELETE ON events
BEGIN DELETE FROM event_rows WHERE id = OLD.id; END
"""


class StoreVersionError(RuntimeError):
    """The store was written by a newer apiusage whose layout this one does not know."""


def dumps(value: Any) -> str:
    """JSON text as the store keeps it (orjson; what it cannot encode, as text)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _uuid_value(text: str) -> bytes | str:
    """A uuid as its 16 bytes (what the store keeps), or as given when it is not one."""
    try:
        return uuid_module.UUID(text).bytes
    except (ValueError, TypeError, AttributeError):
        return text


#: Where a SharedProperties keeps its part of a shape (see ``EventRows``).
_MEMO_KEY = "store-shape"


class EventRows:
    """Turns events into ``event_rows`` rows, writing each new shape once.

    Shape ids are looked up in the database the first time a shape is seen (another
    process may have written it) and remembered for the life of the connection.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._ids: dict[tuple[Any, ...], int] = {}
        self._sets: dict[str, int] = {}
        self._endpoints: dict[tuple[str, str], int] = {}

    def rows(self, events: Iterable[Event]) -> list[tuple[Any, ...]]:
        """The rows of ``events``; call inside the batch's transaction."""
        return [self._row(event) for event in events]

    def _row(self, event: Event) -> tuple[Any, ...]:
        shared = event.shared
        own = event.own_properties
        if shared is None:
            columns = tuple(own.get(name) for name in SHAPE_COLUMNS)
            shape_json = "{}"
        else:
            columns, shape_json = shared.memo.get(_MEMO_KEY) or _remember_shared(shared)
            if not _COLUMN_SET.isdisjoint(own):  # the event overrides a shared column
                columns = tuple(
                    own.get(name, value) for name, value in zip(SHAPE_COLUMNS, columns, strict=True)
                )
        request_id = own.get("request_id")
        request_id_is_uuid = request_id is not None and request_id == event.uuid
        counts = [_count(own.get(name)) for name in _COUNTS]
        rest = {
            key: value
            for key, value in own.items()
            if key not in _COLUMN_SET
            and not (request_id_is_uuid and key == "request_id")
            and not (key in _COUNTS and counts[_COUNTS.index(key)] is not None)
        }
        groups = dumps(event.groups) if event.groups else None
        key = (event.name, event.personless, columns, request_id_is_uuid, shape_json, groups)
        shape = self._ids.get(key)
        if shape is None:
            shape = self._shape(key)
        duration = own.get("duration_ms")
        if duration is None and shared is not None:
            duration = shared.properties.get("duration_ms")
        # Only requests (events with a duration) count towards their endpoint's latency.
        endpoint = self._endpoint(columns) if duration is not None else None
        return (
            _uuid_value(event.uuid),
            shape,
            endpoint,
            None if event.personless and event.distinct_id == event.uuid else event.distinct_id,
            event.timestamp,
            duration,
            *counts,
            dumps(rest) if rest else None,
            dumps(event.person_properties) if event.person_properties else None,
        )

    def _shape(self, key: tuple[Any, ...]) -> int:
        name, personless, columns, request_id_is_uuid, shape_json, groups = key
        digest = hashlib.blake2b(
            dumps([name, personless, columns, request_id_is_uuid, shape_json, groups]).encode(),
            digest_size=16,
        ).digest()
        db = self._db
        db.execute(
            "INSERT OR IGNORE INTO event_shapes (key, event, personless, "
            + ", ".join(SHAPE_COLUMNS)
            + ", request_id_is_uuid, property_set, groups) VALUES (?, ?, ?, "
            + ", ".join("?" for _ in SHAPE_COLUMNS)
            + ", ?, ?, ?)",
            (
                digest,
                name,
                int(personless),
                *columns,
                int(request_id_is_uuid),
                self._property_set(shape_json),
                groups,
            ),
        )
        (shape,) = db.execute("SELECT id FROM event_shapes WHERE key = ?", (digest,)).fetchone()
        if len(self._ids) > 100_000:
            self._ids.clear()
        self._ids[key] = int(shape)
        return int(shape)

    def _endpoint(self, columns: tuple[Any, ...]) -> int | None:
        route, method = columns[_ROUTE], columns[_METHOD]
        if not isinstance(route, str) or not isinstance(method, str):
            return None
        found = self._endpoints.get((route, method))
        if found is None:
            db = self._db
            db.execute(
                "INSERT OR IGNORE INTO endpoints (method, route) VALUES (?, ?)", (method, route)
            )
            (found,) = db.execute(
                "SELECT id FROM endpoints WHERE route = ? AND method = ?", (route, method)
            ).fetchone()
            if len(self._endpoints) > 10_000:
                self._endpoints.clear()
            self._endpoints[route, method] = found
        return int(found)

    def _property_set(self, properties: str) -> int:
        found = self._sets.get(properties)
        if found is None:
            db = self._db
            db.execute("INSERT OR IGNORE INTO property_sets (properties) VALUES (?)", (properties,))
            (found,) = db.execute(
                "SELECT id FROM property_sets WHERE properties = ?", (properties,)
            ).fetchone()
            if len(self._sets) > 10_000:
                self._sets.clear()
            self._sets[properties] = found
        return int(found)

    def forget(self) -> None:
        """Forget remembered shape ids (after a failed transaction, they may not exist)."""
        self._ids.clear()
        self._sets.clear()
        self._endpoints.clear()


def _remember_shared(shared: SharedProperties) -> tuple[tuple[Any, ...], str]:
    properties = shared.properties
    get = properties.get
    remembered = (
        tuple(get(name) for name in SHAPE_COLUMNS),
        dumps({key: value for key, value in properties.items() if key not in _COLUMN_SET}),
    )
    shared.memo[_MEMO_KEY] = remembered
    return remembered


def _count(value: Any) -> int | None:
    """A byte count stored in its column; None (kept in the JSON) for anything else."""
    return value if type(value) is int else None


INSERT_ROW = (
    "INSERT OR IGNORE INTO event_rows (uuid, shape, endpoint, distinct_id, timestamp, "
    "duration_ms, request_bytes, response_bytes, properties, person_properties) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# ----------------------------------------------------------------------- versions


def _version(db: sqlite3.Connection) -> int | None:
    """The layout version, or None for a new, empty database."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "events" not in tables and "event_rows" not in tables:
        return None
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 1


def _v2_events(db: sqlite3.Connection | sqlite3.Cursor, table: str) -> Iterator[Event]:
    """The events of a version 2 table (version 1 tables are read through the same
    columns: see ``_V1_AS_V2``)."""
    columns = ", ".join(COLUMN_PROPERTIES)
    cursor = db.execute(
        f"SELECT uuid, event, distinct_id, timestamp, {columns}, personless, properties, "
        f"groups, person_properties FROM {table} ORDER BY rowid"
    )
    width = len(COLUMN_PROPERTIES)
    for row in cursor:
        uuid, name, distinct_id, timestamp = row[:4]
        values = row[4 : 4 + width]
        personless, properties, groups, person_properties = row[4 + width :]
        merged = {
            key: value
            for key, value in zip(COLUMN_PROPERTIES, values, strict=True)
            if value is not None
        }
        merged.update(orjson.loads(properties or "{}"))
        yield Event(
            name,
            distinct_id,
            merged,
            timestamp,
            uuid,
            orjson.loads(groups) if groups else None,
            orjson.loads(person_properties) if person_properties else None,
            bool(personless),
        )


#: Version 1 kept every property in the JSON: read as version 2 columns.
_V1_AS_V2 = (
    "CREATE TEMP VIEW events_v1_as_v2 AS SELECT rowid AS rowid, uuid, event, distinct_id, "
    "timestamp, "
    + ", ".join(f"json_extract(properties, '$.{name}') AS {name}" for name in COLUMN_PROPERTIES)
    + ", personless, json_remove(properties, "
    + ", ".join(f"'$.{name}'" for name in COLUMN_PROPERTIES)
    + ") AS properties, NULLIF(groups, '{}') AS groups, "
    "NULLIF(person_properties, '{}') AS person_properties FROM events_old"
)


def _migrate_events(db: sqlite3.Connection, version: int) -> None:
    """Move the events of a version 1 or 2 ``events`` table into rows and shapes."""
    db.execute("DROP INDEX IF EXISTS events_by_name_time")
    db.execute("DROP INDEX IF EXISTS events_by_organisation")
    db.execute("ALTER TABLE events RENAME TO events_old")
    for statement in _TABLES.split(";"):
        if statement.strip():
            db.execute(statement)
    source = "events_old"
    if version == 1:
        db.execute(_V1_AS_V2)
        source = "events_v1_as_v2"
    writer = EventRows(db)
    batch: list[Event] = []
    reader = db.cursor()
    for event in _v2_events(reader, source):
        batch.append(event)
        if len(batch) >= 10_000:
            db.executemany(INSERT_ROW, writer.rows(batch))
            batch = []
    if batch:
        db.executemany(INSERT_ROW, writer.rows(batch))
    if version == 1:
        db.execute("DROP VIEW events_v1_as_v2")
    db.execute("DROP TABLE events_old")


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
        if version is not None and version < 3:
            _migrate_events(db, version)
        for statement in _TABLES.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(_VIEW)
        db.execute(_VIEW_DELETE)
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
    read the current tables.
    """
    path = Path(path)
    if readonly:
        if not path.exists():
            raise FileNotFoundError(f"no apiusage store at {path}")
        connection = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        try:
            version = _version(connection)
        except BaseException:
            connection.close()
            raise
        if version is not None and version > STORE_SCHEMA_VERSION:
            connection.close()
            raise StoreVersionError(
                f"{path} has layout version {version}, newer than this apiusage knows "
                f"({STORE_SCHEMA_VERSION}): read it with a newer apiusage"
            )
        if version is not None and version < STORE_SCHEMA_VERSION:
            connection.close()
            connect(path).close()  # migrate, then read
            return connect(path, readonly=True)
        return connection
    private_database(path)
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
