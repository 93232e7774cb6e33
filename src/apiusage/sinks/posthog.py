"""Delivery to PostHog: events encoded and posted to its ``/batch/`` endpoint by apiusage itself.

No ``posthog.capture()`` per event: that call rebuilds runtime and OS properties for every
event, checks sizes with a second JSON encoding and hands each event to a second queue and
thread. Here the delivery worker encodes a whole batch with orjson and posts it gzipped over
one keep-alive connection (``apiusage.wire``), with retries.

A ``posthog.Posthog`` client handed in by the user supplies the project key and host (and,
when it is disabled or made with ``send=False``, turns delivery off); its queue, threads,
``before_send``, ``super_properties`` and ``on_error`` are not used.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from apiusage.events import Event, GroupUpdate
from apiusage.health import Stats
from apiusage.wire.encoding import BatchEncoder, EncodedEvent
from apiusage.wire.spool import Spool
from apiusage.wire.transport import BatchSender, HttpTransport, SendOutcome

__all__ = ["DEFAULT_HOST", "PostHogSink", "ingestion_host"]

DEFAULT_HOST = "https://us.i.posthog.com"

#: With a spool, attempts a batch gets before it waits on disk: a second one rides out a
#: blip (after the sender's backoff); more would hold the worker for seconds while the
#: events exist only in memory, where a crash or SIGKILL loses them.
ATTEMPTS_BEFORE_SPOOLING = 2
#: Seconds between tries to replay spooled events while no batch is being sent (the first
#: try comes at the first idle moment); doubled after each failed try, up to the maximum.
REPLAY_PROBE_SECONDS = 1.0
MAX_REPLAY_PROBE_SECONDS = 60.0


#: PostHog Cloud's app hosts, which do not take events, and the ingestion host of each.
_INGESTION_HOSTS = {
    "https://app.posthog.com": DEFAULT_HOST,
    "https://us.posthog.com": DEFAULT_HOST,
    "https://eu.posthog.com": "https://eu.i.posthog.com",
}


def ingestion_host(host: str | None) -> str:
    """The capture host for a configured one: PostHog Cloud's app hosts map to their
    ingestion hosts (as the posthog SDK maps them); any other host is used as given."""
    host = (host or "").strip().rstrip("/") or DEFAULT_HOST
    return _INGESTION_HOSTS.get(host, host)


class PostHogSink:
    """Encodes events into ``/batch/`` bodies and sends them, retrying transient failures.

    Args:
        api_key: the PostHog project API key (``phc_…``).
        host: the PostHog host, e.g. ``https://eu.i.posthog.com``.
        stats: the client's counters and rate-limited log (a private one if omitted).
        timeout: seconds one HTTP request may take.
        max_attempts: attempts per batch before its events count as dropped.
    """

    def __init__(
        self,
        api_key: str,
        host: str = DEFAULT_HOST,
        *,
        stats: Stats | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
        spool: Spool | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("PostHogSink needs a PostHog project API key")
        self.host = ingestion_host(host)
        self.stats = stats if stats is not None else Stats()
        self.encoder = BatchEncoder(api_key)
        self.transport = HttpTransport(self.host, timeout=timeout)
        self.sender = BatchSender(
            self.transport, self.encoder, self.stats, max_attempts=max_attempts
        )
        #: What the last :meth:`send` could not deliver (for tests and diagnostics).
        self.last_outcome = SendOutcome()
        #: Where events wait while PostHog cannot be reached (None: they are dropped).
        self.spool = spool
        self._outage = False
        # Whether events may wait on disk (from an earlier process, or spooled since), and
        # when an idle worker next tries to replay them (see ``when_idle``).
        self._maybe_waiting = spool is not None and spool.path.exists()
        self._probe_interval = REPLAY_PROBE_SECONDS
        self._next_probe = 0.0

    @classmethod
    def from_client(
        cls, client: Any, *, stats: Stats | None = None, spool: Spool | None = None
    ) -> PostHogSink:
        """Key and host of a ``posthog.Posthog`` client; nothing else of it is used."""
        api_key = getattr(client, "api_key", None)
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("posthog_client= has no project API key (its api_key is empty)")
        host = getattr(client, "raw_host", None) or getattr(client, "host", None)
        timeout = getattr(client, "timeout", 10.0)
        return cls(
            api_key,
            host if isinstance(host, str) else DEFAULT_HOST,
            stats=stats,
            timeout=float(timeout) if isinstance(timeout, (int, float)) else 10.0,
            spool=spool,
        )

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        """Deliver a batch; returns how many of ``events`` were delivered or spooled."""
        encoder = self.encoder
        encoded: list[EncodedEvent] = [encoder.encode_group(group) for group in groups]
        encode_event = encoder.encode_event
        encoded.extend([encode_event(event) for event in events])
        # With a spool a batch gets few attempts, during an outage one, then waits on disk.
        attempts = None
        if self.spool is not None:
            attempts = (
                1 if self._outage else min(ATTEMPTS_BEFORE_SPOOLING, self.sender.max_attempts)
            )
        outcome = self.last_outcome = self.sender.send(encoded, attempts=attempts)
        lost = [*outcome.rejected]
        if outcome.failed:
            if self._spooled(outcome.failed):
                self._outage = True
            else:
                lost.extend(outcome.failed)
        elif outcome.delivered:
            self._outage = False
            if self._maybe_waiting:
                self._replay()
        if outcome.rejected and self.spool is not None:
            with self.stats.guard("keeping rejected events aside"):
                self.spool.reject(outcome.rejected, outcome.rejected_because)
        if lost and groups:  # group updates are not events: count only the events lost
            group_ids = {group.uuid for group in groups}
            return len(events) - sum(1 for event in lost if event.uuid not in group_ids)
        return len(events) - len(lost)

    def _spooled(self, failed: list[EncodedEvent]) -> bool:
        """Keep undeliverable events on disk; False if there is no spool or it failed."""
        if self.spool is None:
            return False
        try:
            dropped = self.spool.put(failed)
        except Exception as exc:
            self.stats.error("spooling undelivered events", exc)
            return False
        self.stats.add("events_spooled", len(failed))
        self._maybe_waiting = True
        self.stats.warn(
            "spooled",
            "apiusage: %d events PostHog could not take wait in %s; they are sent (with their "
            "original uuid and time) once it answers, by this process or the next.",
            len(failed),
            self.spool.path,
        )
        if dropped:
            self.stats.add("dropped_spool_full", dropped)
            self.stats.warn(
                "spool full",
                "apiusage: the spool at %s is full (%d bytes); the oldest %d events waiting "
                "for PostHog were dropped (counted). Raise APIUSAGE_SPOOL_MAX_BYTES.",
                self.spool.path,
                self.spool.max_bytes,
                dropped,
            )
        return True

    def _replay(self, max_bodies: int = 8) -> None:
        """PostHog answers again: send what waits on disk, oldest first, a few bodies at a
        time (the rest goes after the next batches)."""
        spool = self.spool
        assert spool is not None
        with self.stats.guard("replaying spooled events"):
            for _ in range(max_bodies):
                claimed = spool.claim(self.sender.max_body_bytes)
                if not claimed:
                    # Nothing left, or what is left is claimed by another process (which
                    # will send or release it): look again only once something is spooled.
                    self._maybe_waiting = False
                    return
                outcome = self.sender.send([event for _, event in claimed], attempts=1)
                undelivered = {event.uuid for event in outcome.failed}
                spool.release([row for row, event in claimed if event.uuid in undelivered])
                spool.done([row for row, event in claimed if event.uuid not in undelivered])
                if outcome.rejected:
                    spool.reject(outcome.rejected, outcome.rejected_because)
                    self.stats.add("dropped_delivery_failed", len(outcome.rejected))
                self.stats.add("events_replayed", outcome.delivered)
                if undelivered:
                    self._outage = True
                    return
                self._outage = False

    def spill(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> bool:
        """Shutdown ran out of time: keep these events on disk, unsent, for the next
        process to replay. False (nothing kept) without a spool or if writing failed."""
        if self.spool is None:
            return False
        encoder = self.encoder
        encoded = [encoder.encode_group(group) for group in groups]
        encoded.extend([encoder.encode_event(event) for event in events])
        return self._spooled(encoded)

    def when_idle(self) -> None:
        """The delivery worker has nothing to send: replay what waits on disk, so that
        spooled events (this process's, or those of one that crashed) do not wait for
        the next request. During an outage a try is made every second at first, then
        less and less often (up to a minute apart)."""
        if not self._maybe_waiting:
            return
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._replay()
        if self._outage:
            self._next_probe = now + self._probe_interval
            self._probe_interval = min(MAX_REPLAY_PROBE_SECONDS, self._probe_interval * 2)
        else:
            self._probe_interval = REPLAY_PROBE_SECONDS
            self._next_probe = 0.0

    def after_fork(self) -> None:
        self.sender.after_fork()
        if self.spool is not None:
            self.spool.after_fork()

    def shutdown_by(self, deadline: float) -> None:
        """Shutdown has begun: no retry wait or request may go past ``deadline`` (monotonic)."""
        self.sender.finish_by(deadline)

    def flush(self, timeout: float) -> None:
        """Nothing is buffered here: ``send()`` returns once a batch is settled. What
        waits on disk is the worker's to replay (:meth:`when_idle`); flushing, which may
        run on any thread and within any time left, does not send it."""
        return

    def close(self, timeout: float) -> None:
        self.sender.finish_by(time.monotonic() + timeout)
        if self._maybe_waiting:  # a last try, within the shutdown budget, whatever the outage
            self._replay()
        self.sender.stop()
        self.transport.close()
        if self.spool is not None:
            self.spool.close()
