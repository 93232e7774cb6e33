"""Counters and rate-limited error logging: how apiusage reports on itself.

apiusage never lets its own failures reach the host application. Each one is counted
here and logged at most once per interval and place, so a persistent fault cannot flood
the logs. Every event that is accepted and then not delivered is counted as a drop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["Guard", "Stats", "logger"]

logger = logging.getLogger("apiusage")

_LOG_INTERVAL_SECONDS = 60.0


@dataclass
class Stats:
    """Process-wide counters of one client; read them with :meth:`snapshot`."""

    requests_recorded: int = 0
    journey_events_recorded: int = 0
    sampled_out: int = 0
    events_built: int = 0
    events_delivered: int = 0
    dropped_queue_full: int = 0
    dropped_delivery_failed: int = 0
    dropped_at_shutdown: int = 0
    dropped_build_failed: int = 0
    #: Events PostHog could not take, kept on disk for a replay; those replayed since; and
    #: the oldest dropped because the spool was full.
    events_spooled: int = 0
    events_replayed: int = 0
    dropped_spool_full: int = 0
    #: Requests whose building failed and were sent with their certain facts only.
    events_built_partially: int = 0
    calls_rejected: int = 0
    #: Requests that ended before their events were delivered (``end_of_request``: the
    #: time budget ran out); the events stay queued for the next batch.
    requests_ended_undelivered: int = 0
    internal_errors: int = 0
    resolver_errors: int = 0
    #: Requests to which the app attached something that named no caller (see
    #: :class:`apiusage.attached.CallerNotRead`): recorded anonymous.
    callers_unresolved: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_logged: dict[str, float] = field(default_factory=dict, repr=False)

    def after_fork(self) -> None:
        """A forked child gets a fresh lock: the parent's may have been held at the fork."""
        self._lock = threading.Lock()

    def add(self, counter: str, amount: int = 1) -> None:
        """Increase one counter; safe from any thread."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + amount)

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict (for logs, health endpoints and tests).

        ``dropped`` is their sum over every reason an accepted event was lost.
        """
        with self._lock:
            values = {
                name: value
                for name, value in vars(self).items()
                if not name.startswith("_") and isinstance(value, int)
            }
        values["dropped"] = sum(
            value for name, value in values.items() if name.startswith("dropped_")
        )
        return values

    def error(
        self,
        where: str,
        exc: BaseException,
        *,
        counter: str = "internal_errors",
        hint: str = "",
    ) -> None:
        """Count an error of ours (or of a user hook) and log it, rate-limited per place;
        ``hint`` says how to fix it."""
        self.add(counter)
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(where)
            if last is not None and now - last < _LOG_INTERVAL_SECONDS:
                return
            self._last_logged[where] = now
        logger.error(
            "apiusage: %s failed (%s: %s); the request was not affected. %s"
            "Further errors here are counted and logged at most once a minute.",
            where,
            type(exc).__name__,
            exc,
            f"{hint}. " if hint else "",
            exc_info=exc,
        )

    def guard(self, where: str, *, counter: str = "internal_errors") -> Guard:
        """``with stats.guard("reading the request"):`` — an error inside is ours: it is
        counted and logged (rate-limited), and never reaches the app. Make it once and
        reuse it: it keeps no state between uses."""
        return Guard(self, where, counter)

    def warn(self, where: str, message: str, *args: object) -> None:
        """Log a warning at most once per interval and place."""
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(where)
            if last is not None and now - last < _LOG_INTERVAL_SECONDS:
                return
            self._last_logged[where] = now
        logger.warning(message, *args)


class Guard:
    """A reusable context manager that turns an ``Exception`` into a counted, logged error.

    ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``, cancellation) passes through.
    """

    __slots__ = ("_counter", "_stats", "_where")

    def __init__(self, stats: Stats, where: str, counter: str = "internal_errors") -> None:
        self._stats = stats
        self._where = where
        self._counter = counter

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self._stats.error(self._where, exc, counter=self._counter)
        return True
