"""The embedded SQLite store: same events as PostHog would get, idempotent, multi-process."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import apiusage
from apiusage import ASGIMiddleware, UsageClient
from apiusage.events import Event, GroupUpdate
from apiusage.record import JourneyEvent
from apiusage.sinks.memory import MemorySink
from apiusage.sinks.store import (
    COLUMN_PROPERTIES,
    STORE_SCHEMA_VERSION,
    LocalStoreSink,
    StoreVersionError,
    connect,
)

pytestmark = pytest.mark.anyio

SECRET = "local-store-tests-identity-secret"


class TeeSink:
    """Sends every batch to the local store and to memory, to compare the two."""

    def __init__(self, path: Path) -> None:
        self.store = LocalStoreSink(path)
        self.memory = MemorySink()

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        self.memory.send(events, groups)
        return self.store.send(events, groups)

    def flush(self, timeout: float) -> None:
        self.store.flush(timeout)

    def close(self, timeout: float) -> None:
        self.store.close(timeout)


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


def make_event(uuid: str, name: str = "api_request", **properties: Any) -> Event:
    return Event(name, "user-1", {"route": "/v1/x", **properties}, 1_700_000_000.5, uuid)


async def test_events_land_with_the_same_properties(tmp_path: Path) -> None:
    # Imported here: spawned writer processes import this module, and need no web framework.
    from tests.support.apps import asgi_client, starlette_app

    path = tmp_path / "events.sqlite3"
    sink = TeeSink(path)
    client = UsageClient(sink=sink, identity_secret=SECRET, caller_header="x-caller")
    try:
        async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
            await http.get("/v1/items/1", headers={"API-Version": "1", "User-Agent": "curl/8.5.0"})
            await http.get("/track?n=2", headers={"X-Caller": "carol"})
            await http.get("/identify?user=alice&org=acme&plan=pro")
            await http.get("/nope")
        assert client.flush()
    finally:
        client.close()

    expected = {event.uuid: event for event in sink.memory.events}
    assert len(expected) == 6  # 4 requests, 1 track, 1 signed_in, and nothing else
    columns = ", ".join(COLUMN_PROPERTIES)
    stored = rows(
        path,
        f"SELECT uuid, event, distinct_id, timestamp, properties, groups, person_properties, "
        f"personless, {columns} FROM events",
    )
    assert len(stored) == len(expected)
    for uuid, name, distinct_id, timestamp, properties, groups, person, personless, *cols in stored:
        event = expected[uuid]
        assert (name, distinct_id, timestamp) == (event.name, event.distinct_id, event.timestamp)
        # The properties reports group by are columns; the rest stay JSON. Together: all.
        in_columns = {
            name: value
            for name, value in zip(COLUMN_PROPERTIES, cols, strict=True)
            if name in event.properties
        }
        assert not set(json.loads(properties)) & set(COLUMN_PROPERTIES)
        assert {**json.loads(properties), **in_columns} == event.properties
        assert (json.loads(groups) if groups else {}) == event.groups
        assert (json.loads(person) if person else {}) == event.person_properties
        assert bool(personless) is event.personless
    assert rows(path, "SELECT group_type, group_key, json(properties) FROM groups") == [
        ("organisation", "acme", '{"plan":"pro"}')
    ]
    assert rows(path, "SELECT distinct_id, json(properties) FROM persons") == [
        ("alice", '{"email":"alice@example.com"}')
    ]
    routes = rows(
        path,
        "SELECT route, status_code FROM events WHERE event = 'api_request' ORDER BY timestamp",
    )
    assert routes == [
        ("/v1/items/{item_id}", 200),
        ("/track", 200),
        ("/identify", 200),
        (None, 404),
    ]


def test_inserts_are_idempotent_on_uuid(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    sink = LocalStoreSink(path)
    batch = [make_event(f"uuid-{i}", i=i) for i in range(5)]
    assert sink.send(batch, []) == 5
    assert sink.send(batch, []) == 5  # a replayed batch
    assert sink.send([make_event("uuid-0", i=99), make_event("uuid-5", i=5)], []) == 2
    sink.close(1)
    assert rows(path, "SELECT count(*) FROM events") == [(6,)]
    # The first write of a uuid is kept; a replay never overwrites or doubles it.
    assert rows(
        path, "SELECT json_extract(properties, '$.i') FROM events WHERE uuid = 'uuid-0'"
    ) == [(0,)]
    assert rows(path, "SELECT DISTINCT route FROM events") == [("/v1/x",)]


def test_group_and_person_properties_are_merged(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    sink = LocalStoreSink(path)
    sink.send([], [GroupUpdate("organisation", "acme", {"plan": "pro", "seats": 5}, 1.0, "g1")])
    sink.send([], [GroupUpdate("organisation", "acme", {"plan": "enterprise"}, 2.0, "g2")])
    person = Event("$set", "alice", {}, 1.0, "p1", person_properties={"email": "a@x", "name": "A"})
    sink.send([person], [])
    sink.send([Event("$set", "alice", {}, 2.0, "p2", person_properties={"name": "Alice"})], [])
    sink.close(1)
    [(group,)] = rows(path, "SELECT properties FROM groups WHERE group_key = 'acme'")
    assert json.loads(group) == {"plan": "enterprise", "seats": 5}
    [(properties,)] = rows(path, "SELECT properties FROM persons WHERE distinct_id = 'alice'")
    assert json.loads(properties) == {"email": "a@x", "name": "Alice"}


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "events.sqlite3"
    sink = LocalStoreSink(path)  # creates the folder and the file
    sink.send([make_event("one")], [])
    sink.close(1)
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert rows(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(STORE_SCHEMA_VERSION),)
    ]
    readonly = connect(path, readonly=True)
    try:
        assert readonly.execute("SELECT count(*) FROM events").fetchone() == (1,)
        with pytest.raises(sqlite3.OperationalError):
            readonly.execute("DELETE FROM events")
    finally:
        readonly.close()
    with pytest.raises(FileNotFoundError):
        connect(tmp_path / "missing.sqlite3", readonly=True)


EVENTS_PER_PROCESS = 300
PROCESSES = 4


def write_from_process(store: str, worker: int, start: Any) -> None:
    """Runs in a spawned process: a full client writing to the shared store."""
    start.wait(30)
    client = UsageClient(store=store, identity_secret=SECRET, batch_size=25, flush_interval=0.01)
    for i in range(EVENTS_PER_PROCESS):
        client.record_journey_event(
            JourneyEvent("job_done", {"worker": worker, "i": i}, 1.0 + i, f"w{worker}")
        )
    client.close(timeout=30)
    assert client.stats.snapshot()["dropped"] == 0, client.stats.snapshot()


def test_several_processes_share_one_store(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [
        context.Process(target=write_from_process, args=(str(path), worker, start))
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    start.set()  # all write at the same time
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * PROCESSES

    assert rows(path, "SELECT count(*), count(DISTINCT uuid) FROM events") == [
        (PROCESSES * EVENTS_PER_PROCESS, PROCESSES * EVENTS_PER_PROCESS)
    ]
    per_worker = rows(
        path,
        "SELECT json_extract(properties, '$.worker'), "
        "count(DISTINCT json_extract(properties, '$.i')) FROM events GROUP BY 1 ORDER BY 1",
    )
    assert per_worker == [(worker, EVENTS_PER_PROCESS) for worker in range(PROCESSES)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_event_round_trip_is_complete() -> None:
    """Every Event field has a column: a new field must be stored, too."""
    assert set(make_event("x").as_dict()) == {
        "name",
        "distinct_id",
        "properties",
        "timestamp",
        "uuid",
        "groups",
        "person_properties",
        "personless",
    }


# A store as apiusage 0.1 (layout version 1) wrote it: every property in the JSON.
_VERSION_1_LAYOUT = """
CREATE TABLE events (
    uuid TEXT PRIMARY KEY, event TEXT NOT NULL, distinct_id TEXT NOT NULL,
    timestamp REAL NOT NULL, properties TEXT NOT NULL, groups TEXT NOT NULL,
    person_properties TEXT NOT NULL, personless INTEGER NOT NULL
);
CREATE INDEX events_by_name_time ON events (event, timestamp);
CREATE TABLE groups (group_type TEXT NOT NULL, group_key TEXT NOT NULL,
    properties TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (group_type, group_key));
CREATE TABLE persons (distinct_id TEXT PRIMARY KEY, properties TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def _version_1_store(path: Path) -> dict[str, Any]:
    request = {
        "method": "GET",
        "route": "/v1/items/{item_id}",
        "status_code": 200,
        "duration_ms": 1.25,
        "api_version": "v1",
        "auth_method": "api_key",
        "client_library": "curl",
        "client_library_version": "8.5",
        "organisation": "acme",
        "request_id": "r1",
        "schema_version": 1,
    }
    with sqlite3.connect(path) as db:
        db.executescript(_VERSION_1_LAYOUT)
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "r1",
                "api_request",
                "alice",
                1.5,
                json.dumps(request),
                '{"organisation": "acme"}',
                "{}",
                0,
            ),
        )
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("j1", "signup", "alice", 2.5, '{"plan": "pro"}', "{}", '{"email": "a@x"}', 0),
        )
        db.execute("INSERT INTO groups VALUES ('organisation', 'acme', '{}', 1.0)")
    return request


def test_a_version_1_store_is_migrated_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    request = _version_1_store(path)
    sink = LocalStoreSink(path)
    sink.send([make_event("new-1")], [])
    sink.close(1)
    assert rows(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]
    columns = ", ".join(COLUMN_PROPERTIES)
    [migrated] = rows(path, f"SELECT {columns}, properties, groups FROM events WHERE uuid='r1'")
    *values, rest, groups = migrated
    assert dict(zip(COLUMN_PROPERTIES, values, strict=False)) == {
        name: request[name] for name in COLUMN_PROPERTIES
    }
    assert json.loads(rest) == {"request_id": "r1", "schema_version": 1}
    assert json.loads(groups) == {"organisation": "acme"}
    [(properties, groups, person)] = rows(
        path, "SELECT properties, groups, person_properties FROM events WHERE uuid='j1'"
    )
    assert (json.loads(properties), groups, json.loads(person)) == (
        {"plan": "pro"},
        None,
        {"email": "a@x"},
    )
    assert rows(path, "SELECT count(*) FROM events") == [(3,)]
    assert rows(path, "SELECT count(*) FROM groups") == [(1,)]
    tables = {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "events_old" not in tables
    indexes = {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type='index'")}
    assert "event_rows_by_time" in indexes


# A store as apiusage wrote it with layout version 2: report properties as columns.
_VERSION_2_LAYOUT = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '2');
CREATE TABLE events (
    uuid TEXT PRIMARY KEY, event TEXT NOT NULL, distinct_id TEXT NOT NULL,
    timestamp REAL NOT NULL, organisation TEXT, route TEXT, method TEXT,
    status_code INTEGER, duration_ms REAL, api_version TEXT, auth_method TEXT,
    client_library TEXT, client_library_version TEXT, personless INTEGER NOT NULL,
    properties TEXT NOT NULL, groups TEXT, person_properties TEXT
);
CREATE INDEX events_by_name_time ON events (event, timestamp);
CREATE INDEX events_by_organisation ON events (organisation, timestamp);
CREATE TABLE groups (group_type TEXT NOT NULL, group_key TEXT NOT NULL,
    properties TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (group_type, group_key));
CREATE TABLE persons (distinct_id TEXT PRIMARY KEY, properties TEXT NOT NULL,
    updated_at REAL NOT NULL);
"""
_VERSION_2_ROWS = [
    (
        "01a23c8d-fe4a-7464-93bc-f9d7a5032723", "api_request", "alice", 10.5, "acme",
        "/v1/items/{item_id}", "GET", 200, 1.25, "v1", "api_key", "curl", "8.5", 0,
        '{"status_class":"2xx","request_id":"01a23c8d-fe4a-7464-93bc-f9d7a5032723"}',
        '{"organisation":"acme"}', '{"plan":"pro"}',
    ),
    (
        "01a23c8d-fe4a-7464-93bc-f9d7a5032724", "api_request",
        "01a23c8d-fe4a-7464-93bc-f9d7a5032724", 11.5, None, None, "GET", 404, 0.5, None,
        "none", None, None, 1,
        '{"status_class":"4xx","request_id":"01a23c8d-fe4a-7464-93bc-f9d7a5032724"}',
        None, None,
    ),
    (
        "not-a-uuid", "signup", "alice", 12.5, "acme", "/v1/signup", "POST", None, None,
        "v1", None, None, None, 0,
        '{"plan":null,"request_id":"01a23c8d-fe4a-7464-93bc-f9d7a5032723"}',
        '{"organisation":"acme"}', None,
    ),
]  # fmt: skip


def test_a_version_2_store_is_migrated_to_rows_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(_VERSION_2_LAYOUT)
        db.executemany(f"INSERT INTO events VALUES ({', '.join('?' * 17)})", _VERSION_2_ROWS)
    columns = "uuid, event, distinct_id, timestamp, " + ", ".join(COLUMN_PROPERTIES)
    columns += ", personless, properties, groups, person_properties"
    LocalStoreSink(path).close(1)
    migrated = rows(path, f"SELECT {columns} FROM events ORDER BY timestamp")
    assert len(migrated) == len(_VERSION_2_ROWS)
    for before, after in zip(_VERSION_2_ROWS, migrated, strict=True):
        assert after[:-3] == before[:-3]
        for old, new in zip(before[-3:], after[-3:], strict=True):
            assert (json.loads(new) if new else None) == (json.loads(old) if old else None)
    # Two api_request rows of different shapes, and the journey event's: three shapes.
    assert rows(path, "SELECT count(*) FROM event_shapes") == [(3,)]
    [(size,)] = rows(path, "SELECT length(uuid) FROM event_rows WHERE timestamp = 10.5")
    assert size == 16  # kept as bytes, shown as text
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events WHERE timestamp < 12")
    assert rows(path, "SELECT uuid FROM events") == [("not-a-uuid",)]


def test_a_report_migrates_a_version_1_store_before_reading(tmp_path: Path) -> None:
    from apiusage.report import summarise

    path = tmp_path / "events.sqlite3"
    _version_1_store(path)
    summary = summarise(path)
    assert summary.total_requests == 1
    assert summary.organisations == 1
    [endpoint] = summary.endpoints
    assert (endpoint.method, endpoint.route, endpoint.requests) == ("GET", "/v1/items/{item_id}", 1)
    assert endpoint.p50_ms == 1.25


def test_a_store_from_a_newer_apiusage_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    LocalStoreSink(path).close(1)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreVersionError, match="newer"):
        LocalStoreSink(path)
    with pytest.raises(apiusage.ConfigurationError, match="APIUSAGE_STORE"):
        UsageClient(store=path, identity_secret=SECRET)


def test_shared_properties_are_stored_with_the_events_own(tmp_path: Path) -> None:
    from apiusage.events import SharedProperties

    sink = LocalStoreSink(tmp_path / "events.sqlite3")
    shared = SharedProperties({"route": "/v1/x", "method": "GET", "status_code": 200, "tier": 1})
    events = [
        Event(
            "api_request", "u", {"duration_ms": 1.5, "request_id": "r1"}, 1.0, "e1", shared=shared
        ),
        Event(
            "api_request", "u", {"duration_ms": 2.5, "status_code": 503}, 2.0, "e2", shared=shared
        ),
    ]
    assert sink.send(events, []) == 2
    sink.close(1)
    assert rows(
        tmp_path / "events.sqlite3",
        "SELECT uuid, route, method, status_code, duration_ms, properties FROM events ORDER BY 1",
    ) == [
        ("e1", "/v1/x", "GET", 200, 1.5, '{"tier":1,"request_id":"r1"}'),
        ("e2", "/v1/x", "GET", 503, 2.5, '{"tier":1}'),
    ]


async def test_requests_of_one_route_and_caller_share_their_properties() -> None:
    from tests.support.apps import asgi_client, starlette_app

    memory = MemorySink()
    client = UsageClient(sink=memory, identity_secret=SECRET, caller_header="x-caller")
    try:
        async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
            for caller in ("carol", "carol", "dave"):
                await http.get("/v1/items/1", headers={"X-Caller": caller})
            await http.get("/nope", headers={"X-Caller": "carol"})
        assert client.flush()
    finally:
        client.close()
    first, second, other_caller, not_found = memory.named("api_request")
    assert first.shared is second.shared is other_caller.shared  # no organisation: same
    assert not_found.shared is not first.shared
    assert first.properties["request_id"] != second.properties["request_id"]
    assert not_found.properties["status_code"] == 404
