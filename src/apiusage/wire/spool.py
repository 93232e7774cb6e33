"""Durable delivery: events PostHog could not take wait on disk and are sent again later.

When every attempt at a batch failed (PostHog down, 5xx, 429, timeouts), its encoded
events go into a SQLite file instead of being dropped; once PostHog answers again, they
are replayed oldest first with their original uuid and timestamp (PostHog de-duplicates
on the uuid, so a replay that raced a crash cannot double-count), from this process or,
after a restart, from the next one. Events PostHog refused for good (400, 413, an event
too large) are kept aside in another table for inspection, never sent again.

The file is bounded (``max_bytes`` of event data): when it is full the oldest waiting
events are dropped, and counted. It is created only when something has to be written, so
a healthy process never touches the disk. Several processes (gunicorn workers) may share
it: a process claims the rows it replays for a while (a lease), so two processes do not
send the same rows, and rows of a process that died mid-replay are claimed again later.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from apiusage.private_paths import private_database
from apiusage.wire.encoding import EncodedEvent

__all__ = ["Spool"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS waiting (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    spooled_at REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    reason TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
"""
_BUSY_TIMEOUT_MS = 5000
#: Seconds a process holds the rows it replays before another may take them.
_LEASE_SECONDS = 60.0
#: Rows kept aside as rejected, at most (the oldest go first).
_MAX_REJECTED = 10_000


class Spool:
    """A bounded on-disk queue of encoded events. One thread of a process uses it at a time."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writing
    def put(self, events: Sequence[EncodedEvent]) -> int:
        """Keep ``events`` for a later replay; returns how many older waiting events were
        dropped to stay within ``max_bytes`` (counted by the caller)."""
        if not events:
            return 0
        now = time.time()
        rows = [(event.uuid, event.name, event.data, now) for event in events]
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO waiting (uuid, name, data, spooled_at) VALUES (?, ?, ?, ?)", rows
            )
            return self._trim(db)

    def reject(self, events: Sequence[EncodedEvent], reason: str) -> None:
        """Keep events PostHog refused for good aside, for inspection; never replayed."""
        if not events:
            return
        now = time.time()
        rows = [(event.uuid, event.name, event.data, reason, now) for event in events]
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO rejected (uuid, name, data, reason, rejected_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.execute(
                "DELETE FROM rejected WHERE id <= (SELECT max(id) FROM rejected) - ?",
                (_MAX_REJECTED,),
            )

    def _trim(self, db: sqlite3.Connection) -> int:
        (total,) = db.execute("SELECT coalesce(sum(length(data)), 0) FROM waiting").fetchone()
        if total <= self.max_bytes:
            return 0
        dropped = 0
        for row_id, size in db.execute("SELECT id, length(data) FROM waiting ORDER BY id"):
            if total <= self.max_bytes:
                break
            db.execute("DELETE FROM waiting WHERE id = ?", (row_id,))
            total -= size
            dropped += 1
        return dropped

    # ------------------------------------------------------------------ replaying
    def claim(self, max_bytes: int) -> list[tuple[int, EncodedEvent]]:
        """The oldest waiting events not claimed by anyone, up to ``max_bytes`` of data
        (at least one), now claimed by this process for a while."""
        if not self.path.exists():
            return []
        now = time.time()
        with self._transaction() as db:
            found: list[tuple[int, EncodedEvent]] = []
            size = 0
            for row_id, event_uuid, name, data in db.execute(
                "SELECT id, uuid, name, data FROM waiting WHERE claimed_until < ? "
                "ORDER BY id LIMIT 10000",
                (now,),
            ):
                if found and size + len(data) > max_bytes:
                    break
                found.append((row_id, EncodedEvent(event_uuid, name, bytes(data))))
                size += len(data)
            db.executemany(
                "UPDATE waiting SET claimed_until = ? WHERE id = ?",
                [(now + _LEASE_SECONDS, row_id) for row_id, _ in found],
            )
        return found

    def done(self, row_ids: Sequence[int]) -> None:
        """Claimed events that were delivered (or rejected): gone from the queue."""
        if row_ids:
            with self._transaction() as db:
                db.executemany("DELETE FROM waiting WHERE id = ?", [(i,) for i in row_ids])

    def release(self, row_ids: Sequence[int]) -> None:
        """Claimed events that could not be delivered: waiting again."""
        if row_ids:
            with self._transaction() as db:
                db.executemany(
                    "UPDATE waiting SET claimed_until = 0 WHERE id = ?", [(i,) for i in row_ids]
                )

    def waiting(self) -> int:
        """How many events wait for a replay."""
        if not self.path.exists():
            return 0
        with self._transaction() as db:
            (count,) = db.execute("SELECT count(*) FROM waiting").fetchone()
        return int(count)

    def status(self) -> dict[str, object]:
        """What waits and what was refused, for ``apiusage health``: ``waiting`` (events),
        ``oldest_waiting_at`` (epoch seconds or None), ``rejected`` (events) and
        ``rejected_by_reason`` ({reason: events})."""
        if not self.path.exists():
            return {
                "waiting": 0,
                "oldest_waiting_at": None,
                "rejected": 0,
                "rejected_by_reason": {},
            }
        with self._transaction() as db:
            waiting, oldest = db.execute("SELECT count(*), min(spooled_at) FROM waiting").fetchone()
            reasons = dict(
                db.execute("SELECT reason, count(*) FROM rejected GROUP BY reason ORDER BY 2 DESC")
            )
        return {
            "waiting": int(waiting),
            "oldest_waiting_at": oldest,
            "rejected": sum(reasons.values()),
            "rejected_by_reason": {str(k): int(v) for k, v in reasons.items()},
        }

    def rejected(self) -> list[tuple[str, str, str]]:
        """``(uuid, event name, reason)`` of the events kept aside, oldest first."""
        if not self.path.exists():
            return []
        with self._transaction() as db:
            return [
                (str(u), str(n), str(r))
                for u, n, r in db.execute("SELECT uuid, name, reason FROM rejected ORDER BY id")
            ]

    # ------------------------------------------------------------------ plumbing
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            private_database(self.path)
            connection = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(_SCHEMA)
            self._connection = connection
        return self._connection

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def after_fork(self) -> None:
        """A forked child opens its own connection (SQLite's may not cross a fork)."""
        self._connection = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class _Transaction:
    """``with spool._transaction() as db``: one immediate transaction, under the lock."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def __enter__(self) -> sqlite3.Connection:
        self._spool._lock.acquire()
        try:
            db = self._spool._db()
            db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._spool._lock.release()
            raise
        self._db = db
        return db

    def __exit__(self, kind: object, exc: object, traceback: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc is not None else "COMMIT")
        finally:
            self._spool._lock.release()
