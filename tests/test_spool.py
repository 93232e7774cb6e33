"""Durable delivery: what PostHog cannot take waits on disk and is replayed, exactly once.

Real HTTP to the local capture endpoint, which is made to fail (503) for a while.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import apiusage
import apiusage.sinks.posthog as posthog_sink
from apiusage.events import Event, new_event_uuid
from apiusage.record import JourneyEvent
from apiusage.sinks.posthog import ATTEMPTS_BEFORE_SPOOLING
from apiusage.wire.encoding import EncodedEvent
from apiusage.wire.spool import Spool
from tests.support.capture_server import CaptureServer

API_KEY = "phc_spool_test"


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def _client(capture: CaptureServer, spool: Path, **settings: object) -> apiusage.UsageClient:
    client = apiusage.UsageClient(
        posthog_api_key=API_KEY,
        posthog_host=capture.url,
        identity_secret="spool-test-secret-0123456789",
        spool=str(spool),
        **{"max_attempts": 2, "batch_size": 10, "flush_interval": 0.05, **settings},
    )
    client.sink.sender.backoff = 0.01  # type: ignore[attr-defined]  # short retry waits
    return client


def _track(client: apiusage.UsageClient, first: int, count: int) -> None:
    for number in range(first, first + count):
        client.record_journey_event(
            JourneyEvent("step", {"n": number}, time.time(), distinct_id="job")
        )


def _received_numbers(capture: CaptureServer) -> Counter[int]:
    return Counter(e["properties"]["n"] for e in capture.events() if e["event"] == "step")


def test_an_outage_loses_nothing_and_duplicates_nothing(
    capture: CaptureServer, tmp_path: Path
) -> None:
    client = _client(capture, tmp_path / "spool.sqlite3")
    try:
        _track(client, 0, 30)
        assert client.flush(10)
        capture.fail_next(1000, 503)  # PostHog is down
        _track(client, 30, 100)
        assert client.flush(10)
        stats = client.stats.snapshot()
        assert stats["events_spooled"] == 100
        assert stats["dropped"] == 0
        capture.reset()  # PostHog is back (what it refused is forgotten)
        _track(client, 130, 20)
        deadline = time.monotonic() + 10
        while sum(_received_numbers(capture).values()) < 120 and time.monotonic() < deadline:
            assert client.flush(10)
            time.sleep(0.05)
        received = _received_numbers(capture)
        assert set(received) == set(range(30, 150))
        assert max(received.values()) == 1  # no duplicates
        uuids = [e["uuid"] for e in capture.events()]
        assert len(uuids) == len(set(uuids))
        stats = client.stats.snapshot()
        assert stats["events_replayed"] == 100
        assert stats["dropped"] == 0
        assert client.sink.spool.waiting() == 0  # type: ignore[attr-defined]
    finally:
        client.close(timeout=5)


def test_events_spooled_by_one_process_are_sent_by_the_next(
    capture: CaptureServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    capture.fail_next(1000, 503)
    before = _client(capture, spool)
    _track(before, 0, 25)
    started = time.time()
    before.close(timeout=5)  # exits mid-outage: the events wait on disk
    assert before.stats.snapshot()["events_spooled"] == 25
    refused = {e["uuid"]: e for e in capture.events(accepted_only=False) if e["event"] == "step"}
    capture.reset()

    after = _client(capture, spool)  # a restart, PostHog back
    try:
        _track(after, 100, 1)
        deadline = time.monotonic() + 10
        while sum(_received_numbers(capture).values()) < 26 and time.monotonic() < deadline:
            assert after.flush(10)
            time.sleep(0.05)
        replayed = [e for e in capture.events() if e["properties"]["n"] < 100]
        assert sorted(e["properties"]["n"] for e in replayed) == list(range(25))
        for event in replayed:  # the original uuid and timestamp, as first sent
            assert refused[event["uuid"]]["timestamp"] == event["timestamp"]
        assert all(
            time.mktime(time.strptime(e["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            <= started + 1
            for e in replayed
        )
        assert after.stats.snapshot()["events_replayed"] == 25
    finally:
        after.close(timeout=5)


def test_events_posthog_refuses_are_kept_aside_not_retried(
    capture: CaptureServer, tmp_path: Path
) -> None:
    client = _client(capture, tmp_path / "spool.sqlite3")
    try:
        capture.fail_next(1, 400)
        _track(client, 0, 3)
        assert client.flush(10)
        _track(client, 3, 1)
        assert client.flush(10)
        stats = client.stats.snapshot()
        assert stats["dropped_delivery_failed"] == 3
        assert stats["events_spooled"] == 0
        spool = client.sink.spool  # type: ignore[attr-defined]
        assert [(name, reason[:8]) for _, name, reason in spool.rejected()] == [
            ("step", "HTTP 400")
        ] * 3
        assert spool.waiting() == 0
        assert set(_received_numbers(capture)) == {3}
    finally:
        client.close(timeout=5)


def _event(number: int, size: int = 1000) -> EncodedEvent:
    return EncodedEvent(f"uuid-{number}", "step", b"x" * size)


def test_a_full_spool_drops_the_oldest_and_says_how_many(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite3", max_bytes=10_000)
    assert spool.put([_event(n) for n in range(8)]) == 0
    assert spool.put([_event(n) for n in range(8, 12)]) == 2
    claimed = spool.claim(1_000_000)
    assert [event.uuid for _, event in claimed] == [f"uuid-{n}" for n in range(2, 12)]


def test_claimed_rows_are_not_claimed_twice_until_released(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    first, second = Spool(path, max_bytes=10**6), Spool(path, max_bytes=10**6)  # two processes
    first.put([_event(n) for n in range(5)])
    taken = first.claim(2_500)
    assert [event.uuid for _, event in taken] == ["uuid-0", "uuid-1"]
    assert [event.uuid for _, event in second.claim(10**6)] == ["uuid-2", "uuid-3", "uuid-4"]
    assert second.claim(10**6) == []
    first.release([row for row, _ in taken])
    assert [event.uuid for _, event in second.claim(10**6)] == ["uuid-0", "uuid-1"]


def test_a_healthy_process_never_creates_the_spool(capture: CaptureServer, tmp_path: Path) -> None:
    client = _client(capture, tmp_path / "spool.sqlite3")
    try:
        _track(client, 0, 5)
        assert client.flush(10)
    finally:
        client.close(timeout=5)
    assert not (tmp_path / "spool.sqlite3").exists()


def test_spooled_events_are_replayed_once_posthog_answers_with_no_new_traffic(
    capture: CaptureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(posthog_sink, "REPLAY_PROBE_SECONDS", 0.1)
    client = _client(capture, tmp_path / "spool.sqlite3", max_attempts=5)
    try:
        capture.fail_next(1000, 503)  # PostHog is down
        _track(client, 0, 10)
        deadline = time.monotonic() + 10
        while client.stats.snapshot()["events_spooled"] < 10:  # the worker's own pace
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Two attempts, not five, before the batch waits on disk rather than in memory.
        first, second = capture.requests[:ATTEMPTS_BEFORE_SPOOLING]
        assert [e["uuid"] for e in first.batch] == [e["uuid"] for e in second.batch]
        assert len(first.batch) == 10
        assert client.flush(10)
        before = len(capture.requests)
        time.sleep(0.5)  # idle probes during the outage: each is one attempt, then a longer wait
        assert 1 <= len(capture.requests) - before <= 4
        capture.reset()  # PostHog is back; nothing new is recorded
        deadline = time.monotonic() + 10
        while sum(_received_numbers(capture).values()) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(_received_numbers(capture).elements()) == list(range(10))
        assert client.stats.snapshot()["events_replayed"] == 10
        assert client.sink.spool.waiting() == 0  # type: ignore[attr-defined]
        requests = len(capture.requests)
        time.sleep(0.3)  # nothing waits any more: the idle worker does not knock again
        assert len(capture.requests) == requests
    finally:
        client.close(timeout=5)


def test_closing_tries_once_more_to_send_what_waits(
    capture: CaptureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostHog came back after the last try: the process stopping sends what waits on
    disk (within its shutdown budget) rather than leaving it to the next process."""
    monkeypatch.setattr(posthog_sink, "REPLAY_PROBE_SECONDS", 30.0)  # no idle try in time
    client = _client(capture, tmp_path / "spool.sqlite3")
    capture.fail_next(1000, 503)
    _track(client, 0, 10)
    assert client.flush(10)
    assert client.stats.snapshot()["events_spooled"] == 10
    capture.reset()
    client.close(timeout=5)
    assert sorted(_received_numbers(capture).elements()) == list(range(10))
    assert Spool(tmp_path / "spool.sqlite3", max_bytes=10**6).waiting() == 0


def test_what_shutdown_could_not_send_in_time_waits_on_disk_for_the_next_process(
    capture: CaptureServer, tmp_path: Path
) -> None:
    """PostHog hangs while the process stops: the batch in flight gives up when the
    shutdown budget runs out, and it and what is still queued are kept on disk, not
    dropped; the next process sends them (PostHog de-duplicates the one that may have
    arrived after all)."""
    spool = tmp_path / "spool.sqlite3"
    capture.fail_next(3, 200, delay=3.0)  # PostHog hangs past the shutdown budget
    before = _client(capture, spool, flush_interval=3600, batch_size=10)
    _track(before, 0, 30)
    before.close(timeout=0.5)
    stats = before.stats.snapshot()
    assert stats["events_spooled"] == 30
    assert stats["dropped"] == 0
    after = _client(capture, spool)
    try:
        _track(after, 100, 1)
        deadline = time.monotonic() + 10
        while not set(range(30)) <= set(_received_numbers(capture)):
            assert time.monotonic() < deadline, sorted(_received_numbers(capture))
            assert after.flush(10)
            time.sleep(0.05)
        replayed = before.stats.snapshot()["events_replayed"]  # its last try, if in time
        assert replayed + after.stats.snapshot()["events_replayed"] == 30
    finally:
        after.close(timeout=5)


def test_records_still_queued_when_shutdown_runs_out_are_spilled_not_dropped() -> None:
    """The worker is stuck with a batch past the deadline: the records behind it go to
    the spill (the PostHog sink keeps them on disk); only the batch in hand is lost."""
    from apiusage.delivery import BackgroundDelivery
    from apiusage.health import Stats

    stuck = threading.Event()
    spilled: list[int] = []
    stats = Stats()
    delivery = BackgroundDelivery(
        lambda batch: stuck.wait(10),
        stats,
        max_queue_size=1000,
        batch_size=5,
        flush_interval=3600,
        spill=lambda items: spilled.extend(items) or len(items) - 1,  # one it cannot keep
    )
    for number in range(15):
        assert delivery.submit(number)
    try:
        delivery.close(timeout=0.3)
    finally:
        stuck.set()
    assert spilled == list(range(5, 15))
    counts = stats.snapshot()
    assert counts["dropped_at_shutdown"] == 5 + 1  # the batch in hand, and the one not kept


def test_the_posthog_sink_keeps_spilled_events_for_the_next_process(
    capture: CaptureServer, tmp_path: Path
) -> None:
    client = _client(capture, tmp_path / "spool.sqlite3")
    try:
        built = [Event("step", "job", {"n": n}, time.time(), new_event_uuid()) for n in range(4)]
        assert client.sink.spill(built, [])  # type: ignore[attr-defined]
        assert client.sink.spool.waiting() == 4  # type: ignore[attr-defined]
        assert capture.requests == []  # kept, not sent
    finally:
        client.close(timeout=5)
    assert sorted(_received_numbers(capture).elements()) == [0, 1, 2, 3]  # the last try
