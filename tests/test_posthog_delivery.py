"""apiusage's own PostHog transport: the payload against ``posthog.capture()``'s, and retries.

Real HTTP to the local capture endpoint (:mod:`tests.support.capture_server`) throughout;
the sink is driven directly with built events so each test controls exactly one behaviour.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import posthog
import pytest

import apiusage
from apiusage.events import Event, GroupUpdate, SharedProperties, new_event_uuid
from apiusage.health import Stats
from apiusage.sinks.discard import DiscardSink
from apiusage.sinks.posthog import PostHogSink, ingestion_host
from apiusage.wire import process_properties, transport
from tests.support.capture_server import CaptureServer

API_KEY = "phc_delivery_test"


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as capture:
        yield capture


def request_event(number: int = 0, **properties: Any) -> Event:
    return Event(
        "api_request",
        "user-1",
        {"route": "/v1/items/{item_id}", "status_code": 200, "n": number, **properties},
        time.time(),
        new_event_uuid(),
        groups={"organisation": "acme"},
    )


def make_sink(server: CaptureServer, **options: Any) -> tuple[PostHogSink, Stats]:
    stats = Stats()
    sink = PostHogSink(API_KEY, server.url, stats=stats, **options)
    sink.sender.backoff = 0.05  # keep retry waits short in tests
    return sink, stats


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------ the payload
def test_payload_matches_what_posthog_capture_sends(server: CaptureServer) -> None:
    """The same event through ``posthog.capture()`` and through apiusage: same shape."""
    timestamp = datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
    properties = {"route": "/v1/x", "status_code": 201, "duration_ms": 1.5, "ok": True}
    reference = posthog.Posthog(API_KEY, host=server.url, disable_geoip=True, sync_mode=True)
    try:
        reference.capture(
            "api_request",
            distinct_id="user-1",
            properties={**properties, "$set": {"plan": "pro"}},
            groups={"organisation": "acme"},
            timestamp=timestamp,
            uuid="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        )
        reference.capture(
            "api_request",
            distinct_id="anon-1",
            properties={**properties, "$process_person_profile": False},
            timestamp=timestamp,
            uuid="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
        )
        reference.group_identify(
            "organisation",
            "acme",
            {"plan": "pro"},
            timestamp=timestamp,
            uuid="0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d",
            distinct_id="user-1",
        )
    finally:
        reference.shutdown()
    theirs = server.events()
    server.reset()

    sink, _ = make_sink(server)
    epoch = timestamp.timestamp()
    sink.send(
        [
            Event(
                "api_request",
                "user-1",
                properties,
                epoch,
                "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                groups={"organisation": "acme"},
                person_properties={"plan": "pro"},
            ),
            Event(
                "api_request",
                "anon-1",
                properties,
                epoch,
                "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
                personless=True,
            ),
        ],
        [
            GroupUpdate(
                "organisation",
                "acme",
                {"plan": "pro"},
                epoch,
                "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d",
                "user-1",
            )
        ],
    )
    ours = server.events()
    [batch] = server.batches()
    assert set(batch.payload) == {"api_key", "batch", "sent_at", "historical_migration"}
    assert batch.payload["api_key"] == API_KEY
    assert batch.payload["historical_migration"] is False
    assert datetime.fromisoformat(batch.payload["sent_at"]).utcoffset() is not None

    by_uuid = {event["uuid"]: event for event in ours}
    assert len(by_uuid) == len(theirs) == 3
    for reference_event in theirs:
        event = by_uuid[reference_event["uuid"]]
        assert set(event) == set(reference_event), reference_event["event"]
        for key in ("event", "distinct_id", "uuid"):
            assert event[key] == reference_event[key]
        assert datetime.fromisoformat(event["timestamp"]) == datetime.fromisoformat(
            reference_event["timestamp"]
        )
        mine, expected = event["properties"], reference_event["properties"]
        # Every property capture() sends is there, with the same value, except the library.
        for key, value in expected.items():
            assert key in mine, key
            if key == "$lib":
                assert mine[key] == "apiusage-python"
            elif key == "$lib_version":
                assert mine[key] == apiusage.__version__
            else:
                assert mine[key] == value, key
        # Beyond them, at most the process's constant properties (capture() leaves the runtime
        # out of $groupidentify; sending it there too costs nothing and changes nothing).
        assert set(mine) - set(expected) <= set(process_properties())


def test_values_json_cannot_hold_are_sent_as_text_and_reserved_keys_once(
    server: CaptureServer,
) -> None:
    sink, _ = make_sink(server)
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    event = request_event(
        amount=Decimal("1.50"),
        at=when,
        huge=2**70,
        tags=("a", "b"),
        **{"$lib": "mine", "$groups": {"x": "y"}},
    )
    assert sink.send([event], []) == 1
    raw = gzip.decompress(server.batches()[0].raw_body).decode()
    assert raw.count('"$lib":') == 1
    assert raw.count('"$groups":') == 1
    [sent] = server.events()
    properties = sent["properties"]
    assert properties["amount"] == "1.50"
    assert properties["at"] == str(when)
    assert properties["huge"] == 2**70
    assert properties["tags"] == ["a", "b"]
    assert properties["$lib"] == "apiusage-python"
    assert properties["$groups"] == {"organisation": "acme"}


def test_shared_properties_are_sent_as_if_every_event_had_them(server: CaptureServer) -> None:
    """Events built from one SharedProperties send exactly what inline properties would,
    their own values win, and a value orjson refuses in the shared part still gets sent."""
    sink, _ = make_sink(server)
    shared = SharedProperties({"route": "/v1/items/{item_id}", "status_code": 200, "$lib": "x"})
    odd = SharedProperties({"route": "/v1/big", "huge": 2**70})
    moment = time.time()
    events = [
        Event("api_request", "u1", {"n": 1}, moment, "a", shared=shared),
        Event("api_request", "u2", {"n": 2}, moment, "b", {"organisation": "acme"}, shared=shared),
        Event("api_request", "u3", {}, moment, "c", personless=True, shared=shared),
        Event("api_request", "u4", {"n": 4}, moment, "d", shared=odd),
    ]
    inline = [
        Event(
            e.name,
            e.distinct_id,
            dict(e.properties),
            e.timestamp,
            e.uuid,
            e.groups,
            e.person_properties,
            e.personless,
        )
        for e in events
    ]
    assert sink.send(events, []) == 4
    assert sink.send(inline, []) == 4
    sent = server.events()
    assert sent[:4] == sent[4:]
    assert [event["properties"].get("n") for event in sent[:4]] == [1, 2, None, 4]
    assert {event["properties"]["$lib"] for event in sent} == {"apiusage-python"}
    assert sent[3]["properties"]["huge"] == 2**70
    assert sent[2]["properties"]["$process_person_profile"] is False


def test_timestamps_are_utc_iso_with_microseconds(server: CaptureServer) -> None:
    sink, _ = make_sink(server)
    moments = [1_700_000_000.0, 1_700_000_000.999999, 1_700_000_001.000001, 946_684_799.5]
    sink.send([Event("tick", "u", {}, moment, new_event_uuid()) for moment in moments], [])
    sent = [datetime.fromisoformat(event["timestamp"]) for event in server.events()]
    expected = [datetime.fromtimestamp(moment, timezone.utc) for moment in moments]
    differences = [abs((a - b).total_seconds()) for a, b in zip(sent, expected, strict=True)]
    assert max(differences) < 1e-6


# --------------------------------------------------------------------- retries
def test_retry_after_is_honoured(server: CaptureServer) -> None:
    sink, _stats = make_sink(server)
    server.fail_next(1, status=429, headers={"Retry-After": "1"})
    assert sink.send([request_event(1), request_event(2)], []) == 2
    first, second = server.batches(accepted_only=False)
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 0.95
    assert [e["uuid"] for e in first.batch] == [e["uuid"] for e in second.batch]
    # sent_at is the time of each attempt: PostHog corrects clock skew with it.
    assert second.payload["sent_at"] > first.payload["sent_at"]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_transient_statuses_are_retried(server: CaptureServer, status: int) -> None:
    sink, _ = make_sink(server)
    server.fail_next(2, status=status)
    assert sink.send([request_event()], []) == 1
    assert [b.status for b in server.batches(accepted_only=False)] == [status, status, 200]


def test_timeouts_are_retried(server: CaptureServer) -> None:
    sink, _ = make_sink(server, timeout=0.3)
    server.fail_next(1, status=200, delay=1.0)  # answered only after the client gave up
    events = [request_event(n) for n in range(3)]
    assert sink.send(events, []) == 3
    server.wait_for_requests(2, timeout=3)
    assert sink.last_outcome.failed == []


@pytest.mark.parametrize("fault", ["reset", "garbage"])
def test_broken_answers_are_retried_on_a_new_connection(server: CaptureServer, fault: str) -> None:
    """A connection reset (TCP RST) or bytes that are not HTTP (a broken proxy): the batch
    is sent again, on a fresh connection, with the same uuids; nothing is lost or doubled."""
    sink, stats = make_sink(server)
    server.fail_next(1, fault=fault)
    events = [request_event(n) for n in range(3)]
    assert sink.send(events, []) == 3
    first, second = server.batches(accepted_only=False)
    assert second.status == 200
    assert [e["uuid"] for e in first.batch] == [e["uuid"] for e in second.batch]
    assert sorted(e["uuid"] for e in server.events()) == sorted(e.uuid for e in events)
    assert sink.last_outcome.failed == sink.last_outcome.rejected == []
    assert stats.snapshot()["internal_errors"] == 0
    assert sink.send([request_event(9)], []) == 1  # and the connection after it works


def test_unreachable_posthog_is_retried_then_counted(server: CaptureServer) -> None:
    stats = Stats()
    sink = PostHogSink(API_KEY, f"http://127.0.0.1:{free_port()}", stats=stats, max_attempts=3)
    sink.sender.backoff = 0.05
    started = time.monotonic()
    assert sink.send([request_event(n) for n in range(4)], []) == 0
    assert len(sink.last_outcome.failed) == 4
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status", [400, 401, 403])
def test_refusals_are_not_retried(server: CaptureServer, status: int) -> None:
    sink, _ = make_sink(server)
    server.fail_next(1, status=status)
    assert sink.send([request_event(1), request_event(2)], []) == 0
    assert len(server.batches(accepted_only=False)) == 1
    assert len(sink.last_outcome.rejected) == 2
    assert sink.send([request_event(3)], []) == 1  # and delivery goes on


def test_too_large_batches_are_split(server: CaptureServer) -> None:
    sink, _ = make_sink(server)
    events = [request_event(n, padding="x" * 2000) for n in range(10)]
    server.max_body_bytes = 7000  # about three events a body
    assert sink.send(events, []) == 10
    delivered = server.events()
    assert sorted(e["properties"]["n"] for e in delivered) == list(range(10))
    refused = [b for b in server.batches(accepted_only=False) if b.status == 413]
    assert refused
    assert all(len(b.batch) > 1 for b in refused)


def test_bodies_are_kept_under_the_size_limit_up_front(server: CaptureServer) -> None:
    sink, _ = make_sink(server)
    sink.sender.max_body_bytes = 10_000
    events = [request_event(n, padding="x" * 1500) for n in range(20)]
    assert sink.send(events, []) == 20
    batches = server.batches(accepted_only=False)
    assert len(batches) > 1
    assert all(b.status == 200 for b in batches)
    assert all(len(gzip.decompress(b.raw_body)) <= 10_000 for b in batches)


def test_an_oversized_event_is_dropped_alone(server: CaptureServer) -> None:
    sink, _ = make_sink(server)
    big = request_event(99, blob="y" * (1024 * 1024 + 10))
    assert sink.send([request_event(1), big, request_event(2)], []) == 2
    assert [e["properties"]["n"] for e in server.events()] == [1, 2]
    assert [event.uuid for event in sink.last_outcome.rejected] == [big.uuid]


def test_group_updates_lost_are_not_counted_as_events(server: CaptureServer) -> None:
    sink, _ = make_sink(server)
    server.fail_next(1, status=400)
    group = GroupUpdate("organisation", "acme", {}, time.time(), new_event_uuid(), "user-1")
    assert sink.send([request_event()], [group]) == 0  # one event lost, not two
    assert len(sink.last_outcome.rejected) == 2


@pytest.mark.parametrize("spool", ["auto", "off"])
def test_shutdown_cuts_retry_waits_short(server: CaptureServer, spool: str) -> None:
    client = apiusage.UsageClient(
        posthog_api_key=API_KEY,
        posthog_host=server.url,
        identity_secret="s" * 32,
        flush_interval=60.0,
        spool=spool,
    )
    server.fail_next(10, status=503, headers={"Retry-After": "30"})
    client.record_journey_event(
        apiusage.record.JourneyEvent("nightly", {}, time.time(), distinct_id="u")
    )
    client.delivery.flush(0.3)  # the worker is now waiting 30 s before its retry
    started = time.monotonic()
    client.close(timeout=1.0)
    assert time.monotonic() - started < 2.0
    stats = client.stats.snapshot()
    if spool == "off":
        assert stats["events_delivered"] == 0
        assert stats["dropped"] == 1
    else:  # kept on disk for the next process to send
        assert stats["events_spooled"] == 1
        assert stats["dropped"] == 0


def test_one_connection_is_kept_alive(server: CaptureServer) -> None:
    sink, _ = make_sink(server)
    for n in range(5):
        sink.send([request_event(n)], [])
    assert len(server.batches()) == 5
    assert len(server.client_ports()) == 1


@pytest.mark.parametrize("compressor", ["isal", "zlib"])
def test_the_body_is_gzipped_json(
    server: CaptureServer, monkeypatch: pytest.MonkeyPatch, compressor: str
) -> None:
    if compressor == "zlib":  # as on a platform without isal's wheels
        monkeypatch.setattr(transport, "_isal_zlib", None)
    else:
        assert transport._isal_zlib is not None  # installed with apiusage here
    sink, _ = make_sink(server)
    sink.send([request_event(n) for n in range(50)], [])
    [batch] = server.batches()
    assert batch.headers["content-encoding"] == "gzip"
    body = json.loads(gzip.decompress(batch.raw_body))
    assert [event["properties"]["n"] for event in body["batch"]] == list(range(50))
    assert len(batch.raw_body) < len(gzip.decompress(batch.raw_body)) / 5


# ------------------------------------------------------------------ configuration
def test_settings_reach_the_transport(server: CaptureServer) -> None:
    client = apiusage.UsageClient(
        posthog_api_key=API_KEY,
        posthog_host=server.url + "/",
        identity_secret="s" * 32,
        posthog_timeout=2.5,
        max_attempts=2,
    )
    try:
        assert isinstance(client.sink, PostHogSink)
        assert client.sink.host == server.url
        assert client.sink.transport.timeout == 2.5
        assert client.sink.sender.max_attempts == 2
    finally:
        client.close(timeout=1)


def test_posthog_app_hosts_map_to_their_ingestion_hosts() -> None:
    assert ingestion_host("https://app.posthog.com") == "https://us.i.posthog.com"
    assert ingestion_host("https://eu.posthog.com/") == "https://eu.i.posthog.com"
    assert ingestion_host("https://us.posthog.com") == "https://us.i.posthog.com"
    assert ingestion_host("https://posthog.example.com/") == "https://posthog.example.com"
    assert ingestion_host(" ") == ingestion_host(None) == "https://us.i.posthog.com"


def test_delivering_to_posthog_does_not_import_the_posthog_package(
    server: CaptureServer,
) -> None:
    """The posthog package with its client, requests and httpx adds ~18,000 objects to the
    heap that every full collection of the host app walks; apiusage needs none of it."""
    script = textwrap.dedent(
        """
        import sys
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient
        import apiusage

        async def hello(request):
            return PlainTextResponse("hi")

        app = apiusage.ASGIMiddleware(Starlette(routes=[Route("/hello", hello)]))
        with TestClient(app) as client:
            assert client.get("/hello").status_code == 200
        assert apiusage.flush(timeout=10)
        print(sorted(name for name in sys.modules if name.split(".")[0] == "posthog"))
        """
    )
    environment = {
        **os.environ,
        "POSTHOG_API_KEY": "phc_test",
        "POSTHOG_HOST": server.url,
        "APIUSAGE_IDENTITY_SECRET": "s" * 32,
    }
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
    assert [event["event"] for event in server.events()] == ["api_request"]


@pytest.mark.parametrize("options", [{"disabled": True}, {"send": False}])
def test_a_disabled_posthog_client_turns_delivery_off(
    server: CaptureServer, options: dict[str, Any]
) -> None:
    own = posthog.Posthog(API_KEY, host=server.url, **options)
    client = apiusage.UsageClient(posthog_client=own, identity_secret="s" * 32)
    try:
        assert isinstance(client.sink, DiscardSink)
    finally:
        client.close(timeout=1)
        own.shutdown()


def test_a_posthog_client_without_a_key_fails_at_start_up() -> None:
    class NotAClient:
        api_key = ""

    with pytest.raises(apiusage.ConfigurationError, match="posthog_client"):
        apiusage.UsageClient(posthog_client=NotAClient(), identity_secret="s" * 32)


def test_a_slow_posthog_never_holds_up_requests_or_the_event_loop(server: CaptureServer) -> None:
    """Every answer of PostHog takes a second: requests and the event loop go on as if
    it answered at once (the worker waits, on its own thread), and nothing is lost."""
    import asyncio

    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    server.fail_next(1000, 200, delay=1.0)

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    client = apiusage.UsageClient(
        posthog_api_key=API_KEY,
        posthog_host=server.url,
        identity_secret="slow-posthog-secret-0123456789",
        flush_interval=0.05,
        batch_size=5,
    )
    app = apiusage.ASGIMiddleware(Starlette(routes=[Route("/hello", hello)]), client=client)

    async def scenario() -> tuple[float, float]:
        lateness = 0.0
        stop = asyncio.Event()

        async def watch_the_loop() -> None:
            nonlocal lateness
            while not stop.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                lateness = max(lateness, time.perf_counter() - started - 0.001)

        watcher = asyncio.create_task(watch_the_loop())
        slowest = 0.0
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            for _ in range(40):  # over about 1.2 s: several batches are stuck meanwhile
                started = time.perf_counter()
                assert (await http.get("/hello")).status_code == 200
                slowest = max(slowest, time.perf_counter() - started)
                await asyncio.sleep(0.03)
        stop.set()
        await watcher
        return slowest, lateness

    try:
        slowest, lateness = asyncio.run(scenario())
        assert slowest < 0.5, f"a request took {slowest:.2f} s"
        assert lateness < 0.5, f"the event loop stalled {lateness:.2f} s"
        assert client.flush(30)
        assert len([e for e in server.events() if e["event"] == "api_request"]) == 40
        assert client.stats.snapshot()["dropped"] == 0
    finally:
        client.close(timeout=5)
