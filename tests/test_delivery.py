"""Background delivery: bounded queue, failing and stuck sinks, flush, close, fork."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from apiusage import UsageClient, WSGIMiddleware
from apiusage.events import Event, GroupUpdate
from apiusage.record import JourneyEvent
from apiusage.sinks.memory import MemorySink
from tests.support.apps import plain_wsgi_app

SECRET = "delivery-tests-identity-secret"


class BlockingSink(MemorySink):
    """Blocks in send() until released: a stuck network, a slow database."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        self.entered.set()
        if not self.release.wait(30):
            raise RuntimeError("the test never released the sink")
        return super().send(events, groups)


class FailingSink(MemorySink):
    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        raise ConnectionError("ingestion is down")


class HalfSink(MemorySink):
    """Accepts only the first event of every batch."""

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        return super().send(events[:1], groups)


MakeClient = Callable[..., UsageClient]


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    clients: list[UsageClient] = []
    blocking: list[BlockingSink] = []

    def make(sink: Any, **settings: Any) -> UsageClient:
        client = UsageClient(sink=sink, identity_secret=SECRET, **settings)
        clients.append(client)
        if isinstance(sink, BlockingSink):
            blocking.append(sink)
        return client

    yield make
    for sink in blocking:
        sink.release.set()  # let stuck workers finish
    for client in clients:
        client.close(timeout=5)


def journey(name: str = "job_done", **properties: Any) -> JourneyEvent:
    return JourneyEvent(name, properties, time.time(), "worker-user")


def test_queue_full_drops_and_counts(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="apiusage")
    sink = BlockingSink()
    client = make_client(sink, max_queue_size=3, batch_size=1, flush_interval=0.01)
    client.record_journey_event(journey(i=0))
    assert sink.entered.wait(5)  # the worker holds event 0 and is stuck in the sink

    for i in range(1, 4):
        client.record_journey_event(journey(i=i))  # fills the queue
    assert client.delivery.pending == 3
    for i in range(4, 6):
        client.record_journey_event(journey(i=i))  # dropped
    # The request path is never blocked by a full queue.
    app = WSGIMiddleware(plain_wsgi_app, client=client)
    body = app({"PATH_INFO": "/hello", "REQUEST_METHOD": "GET"}, lambda status, headers: None)
    assert list(body) == [b"hello"]
    body.close()  # type: ignore[attr-defined]

    stats = client.stats.snapshot()
    assert stats["dropped_queue_full"] == 3
    assert stats["journey_events_recorded"] == 4
    warnings = [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    assert "APIUSAGE_MAX_QUEUE_SIZE" in warnings[0].getMessage()

    sink.release.set()
    assert client.flush(timeout=10)
    assert [event.properties["i"] for event in sink.events] == [0, 1, 2, 3]
    stats = client.stats.snapshot()
    assert (stats["events_delivered"], stats["dropped"]) == (4, 3)


def test_queue_is_bounded_in_bytes_too(make_client: MakeClient) -> None:
    """Big requests (an 8 KB cookie each) fill the byte bound long before the record bound."""
    sink = BlockingSink()
    client = make_client(sink, max_queue_bytes=64 * 1024, batch_size=1, flush_interval=0.01)
    app = WSGIMiddleware(plain_wsgi_app, client=client)

    def request() -> None:
        environ = {
            "PATH_INFO": "/hello",
            "REQUEST_METHOD": "GET",
            "HTTP_COOKIE": "session=" + "c" * 8192,
        }
        body = app(environ, lambda status, headers: None)
        assert list(body) == [b"hello"]
        body.close()  # type: ignore[attr-defined]

    request()
    assert sink.entered.wait(5)  # the worker is stuck holding the first record
    for _ in range(20):
        request()
    pending, pending_bytes = client.delivery.pending, client.delivery.pending_bytes
    # About 64 KB of ~9 KB records; the first two (up to 2 x batch_size, while the worker
    # still kept up) counted their headers at an average length.
    assert 6 <= pending <= 10
    assert pending_bytes <= 64 * 1024
    assert client.delivery.behind  # the worker is stuck: more than two batches wait
    stats = client.stats.snapshot()
    assert stats["dropped_queue_full"] == 20 - pending
    sink.release.set()
    assert client.flush(timeout=10)
    assert client.delivery.pending_bytes == 0
    assert len(sink.events) == 1 + pending


def test_failing_sink_counts_drops_and_logs(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="apiusage")
    client = make_client(FailingSink(), flush_interval=600)
    for i in range(3):
        client.record_journey_event(journey(i=i))
    assert client.flush(timeout=10)  # done, though nothing could be delivered
    stats = client.stats.snapshot()
    assert stats["dropped_delivery_failed"] == 3
    assert stats["events_delivered"] == 0
    assert stats["dropped"] == 3
    [logged] = [r for r in caplog.records if "sending events" in r.getMessage()]
    assert "ConnectionError" in logged.getMessage()
    assert "ingestion is down" in logged.getMessage()

    # Later failures are counted but not logged again (rate-limited).
    client.record_journey_event(journey(i=3))
    assert client.flush(timeout=10)
    assert client.stats.snapshot()["dropped_delivery_failed"] == 4
    assert len([r for r in caplog.records if "sending events" in r.getMessage()]) == 1


def test_partially_accepted_batch_counts_the_rest(make_client: MakeClient) -> None:
    sink = HalfSink()
    client = make_client(sink, flush_interval=600, batch_size=100)
    for i in range(4):
        client.record_journey_event(journey(i=i))
    assert client.flush(timeout=10)
    stats = client.stats.snapshot()
    assert (stats["events_delivered"], stats["dropped_delivery_failed"]) == (1, 3)


def test_close_with_a_stuck_sink_is_bounded(make_client: MakeClient) -> None:
    sink = BlockingSink()
    client = make_client(sink, batch_size=1, flush_interval=0.01, shutdown_timeout=0.5)
    client.record_journey_event(journey(i=0))
    assert sink.entered.wait(5)
    for i in range(1, 6):
        client.record_journey_event(journey(i=i))

    started = time.monotonic()
    client.close()
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.5
    # The 5 still queued, and the 1 the stuck sink still holds: none vanish uncounted.
    assert client.stats.snapshot()["dropped_at_shutdown"] == 6

    # After close, new records are refused and counted.
    client.record_journey_event(journey(i=6))
    assert client.stats.snapshot()["dropped_at_shutdown"] == 7


def test_flush_delivers_everything(make_client: MakeClient) -> None:
    sink = MemorySink()
    client = make_client(sink, flush_interval=600, batch_size=50)
    threads = [
        threading.Thread(
            target=lambda t=t: [client.record_journey_event(journey(t=t, i=i)) for i in range(250)]
        )
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=10)
    assert client.delivery.pending == 0
    assert len(sink.events) == 1000
    for t in range(4):
        assert [e.properties["i"] for e in sink.events if e.properties["t"] == t] == list(
            range(250)
        )
    stats = client.stats.snapshot()
    assert (stats["events_delivered"], stats["dropped"]) == (1000, 0)


class SlowSink(MemorySink):
    """Takes 20 ms per batch, as a POST to a distant endpoint does; records batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        self.batch_sizes.append(len(events))
        time.sleep(0.02)
        return super().send(events, groups)


def test_under_steady_load_only_full_batches_are_sent(make_client: MakeClient) -> None:
    """Records that arrive while a batch is being sent wait for their own full batch: a
    worker that sent every few of them at once would pay a request per few events."""
    sink = SlowSink()
    client = make_client(sink, flush_interval=600, batch_size=50)
    for i in range(420):
        client.record_journey_event(journey(i=i))
        time.sleep(0.0005)  # a steady stream: a few records arrive during every send
    deadline = time.monotonic() + 10
    while len(sink.events) < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.batch_sizes == [50] * 8
    assert client.delivery.pending == 20  # the rest waits for a batch or the interval
    assert client.flush(timeout=10)
    assert sink.batch_sizes == [50] * 8 + [20]
    assert [event.properties["i"] for event in sink.events] == list(range(420))


def test_the_interval_sends_a_partial_batch(make_client: MakeClient) -> None:
    sink = SlowSink()
    client = make_client(sink, flush_interval=0.05, batch_size=50)
    for i in range(7):
        client.record_journey_event(journey(i=i))
    deadline = time.monotonic() + 5
    while len(sink.events) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.batch_sizes == [7]


def test_flush_with_nothing_queued_returns_at_once(make_client: MakeClient) -> None:
    client = make_client(MemorySink())
    started = time.monotonic()
    assert client.flush(timeout=10)
    assert time.monotonic() - started < 1


def test_close_flushes_what_is_queued(make_client: MakeClient) -> None:
    sink = MemorySink()
    client = make_client(sink, flush_interval=600)
    for i in range(10):
        client.record_journey_event(journey(i=i))
    assert sink.events == []
    client.close()
    assert [event.properties["i"] for event in sink.events] == list(range(10))
    assert sink.closed
    assert client.stats.snapshot()["dropped"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_forked_child_delivers_its_own_records(make_client: MakeClient) -> None:
    sink = MemorySink()
    client = make_client(sink, flush_interval=600)
    client.record_journey_event(journey("delivered_before_fork"))
    assert client.flush(timeout=10)
    client.record_journey_event(journey("queued_in_parent"))  # still queued at the fork
    parent_worker = client.delivery._thread
    assert parent_worker is not None

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        status = 0
        try:
            os.close(read_end)
            sink.clear()
            client.record_journey_event(journey("from_child"))
            flushed = client.flush(timeout=10)
            worker = client.delivery._thread
            report = {
                "flushed": flushed,
                "names": [event.name for event in sink.events],
                "own_worker": worker is not None
                and worker is not parent_worker
                and worker.is_alive(),
                "delivered": client.stats.snapshot()["events_delivered"],
            }
        except BaseException as exc:
            report = {"error": repr(exc)}
            status = 1
        os.write(write_end, json.dumps(report).encode())
        os._exit(status)

    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks))
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert report["flushed"] is True
    assert report["names"] == ["from_child"]  # not the parent's queued record
    assert report["own_worker"] is True
    assert report["delivered"] == 2  # the parent's count before the fork, plus its own

    assert client.flush(timeout=10)
    assert [event.name for event in sink.events] == ["delivered_before_fork", "queued_in_parent"]


@pytest.mark.parametrize(("behind", "pauses"), [(False, 2), (True, 0)])
def test_worker_pauses_for_the_loop_unless_it_is_falling_behind(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, behind: bool, pauses: int
) -> None:
    """Every 16 records the worker lets a waiting thread have the GIL, but not when records
    pile up behind it: then each pause would cost a switch interval and the queue overflow."""
    from apiusage import pipeline

    taken: list[float] = []
    monkeypatch.setattr(pipeline, "_let_others_run", lambda: taken.append(time.monotonic()))
    sink = MemorySink()
    client = make_client(sink)
    client.pipeline.behind = lambda: behind
    client.pipeline.process([journey(i=i) for i in range(40)])
    assert len(taken) == pauses
    assert len(sink.events) == 40


def test_a_guard_counts_and_logs_our_errors_and_lets_base_exceptions_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from apiusage.health import Stats

    stats = Stats()
    guard = stats.guard("reading the request")
    with caplog.at_level("ERROR", logger="apiusage"):
        for _ in range(3):  # reusable; logged once a minute per place
            with guard:
                raise ValueError("bad header")
    assert stats.internal_errors == 3
    assert len([r for r in caplog.records if "reading the request" in r.getMessage()]) == 1
    with pytest.raises(KeyboardInterrupt), guard:
        raise KeyboardInterrupt
    with stats.guard("a resolver", counter="resolver_errors"):
        raise RuntimeError("boom")
    assert stats.snapshot()["resolver_errors"] == 1
    assert stats.internal_errors == 3
