"""The fault suite's process scenarios: real servers and runtimes, stopped, frozen or killed.

Each test runs a server (or an emulated AWS Lambda runtime) as a subprocess with this
interpreter, configured only through the environment, against the local capture endpoint,
and then does to the process what production does: a stop signal during traffic, a
freeze right after the handler returned, a SIGKILL in the middle of a PostHog outage,
forking workers from a preloaded app. What a test asserts is about events: every one
accepted reaches PostHog, exactly once, with its original uuid.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.capture_server import CaptureServer
from tests.support.servers import (
    REPO_ROOT,
    Server,
    free_port,
    server_environment,
    uvicorn_server,
)

pytestmark = pytest.mark.process

API_KEY = "phc_fault_suite"


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def _get(url: str, paths: list[str], *, headers: dict[str, str] | None = None) -> list[Any]:
    """GET each path on a fresh connection (so the server can stop at once); the bodies."""
    bodies = []
    with httpx.Client(headers={"connection": "close", **(headers or {})}) as client:
        for path in paths:
            response = client.get(f"{url}{path}", timeout=10.0)
            assert response.status_code == 200, response.text
            bodies.append(response.json())
    return bodies


def _api_requests(capture: CaptureServer) -> list[dict[str, Any]]:
    return [event for event in capture.events() if event["event"] == "api_request"]


def _assert_each_once(events: list[dict[str, Any]], count: int) -> None:
    uuids = [event["uuid"] for event in events]
    assert len(uuids) == count, f"{len(uuids)} events arrived, {count} expected"
    assert len(set(uuids)) == count, "an event arrived twice"


# ------------------------------------------------------------------ stop signals
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_django_runserver_delivers_every_event_when_stopped(
    capture: CaptureServer, tmp_path: Path, stop: signal.Signals
) -> None:
    """``manage.py runserver`` (Django's own server, threaded) stopped with SIGTERM, as a
    process manager does, or SIGINT, as Ctrl-C does."""
    port = free_port()
    server = Server(
        [sys.executable, "docs/examples/django_app.py", f"127.0.0.1:{port}"],
        server_environment(capture, API_KEY),
        port,
        tmp_path / "runserver.log",
        cwd=REPO_ROOT,
    )
    try:
        server.wait_ready()
        _get(server.url, [f"/v1/items/{n}" for n in range(12)], headers={"X-API-Key": "key-alice"})
        assert capture.events() == []  # the flush interval is a minute: nothing sent yet
        server.process.send_signal(stop)
        server.process.wait(timeout=15)
        events = _api_requests(capture)
        _assert_each_once(events, 12)
        assert {event["distinct_id"] for event in events} == {"usr_alice"}
        assert {event["properties"]["route"] for event in events} == {"/v1/items/{item_id}"}
    finally:
        server.kill()


def test_a_stop_takes_one_shutdown_timeout_when_posthog_hangs(
    capture: CaptureServer, tmp_path: Path
) -> None:
    """uvicorn on SIGTERM: apiusage's signal handler, the lifespan shutdown and the exit
    path each flush; with PostHog hanging they share one ``shutdown_timeout`` (2 s here),
    rather than taking 2 s each."""
    capture.fail_next(1000, 200, delay=30.0)  # every answer hangs
    server = uvicorn_server(
        "tests.support.proc_asgi_app:app",
        {
            **server_environment(capture, API_KEY),
            "APIUSAGE_FLUSH_INTERVAL": "0.2",
            "APIUSAGE_SHUTDOWN_TIMEOUT": "2",
            "APIUSAGE_SPOOL": str(tmp_path / "spool.sqlite3"),
        },
        tmp_path / "uvicorn.log",
    )
    try:
        server.wait_ready()
        _get(server.url, [f"/v1/items/{n}" for n in range(5)])
        time.sleep(1.0)  # a batch is on its way (flush interval 0.2 s), and hangs
        _get(server.url, [f"/v1/items/{n}" for n in range(5, 10)])
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        elapsed = time.monotonic() - started
        assert elapsed < 3.5, f"stopping took {elapsed:.1f} s with a 2 s shutdown_timeout"
    finally:
        server.kill()


def test_gunicorn_preloaded_app_forked_into_workers_loses_and_doubles_nothing(
    capture: CaptureServer, tmp_path: Path
) -> None:
    """``--preload``: the app, and apiusage's client with it, is made once in the master
    and forked into every worker; each worker delivers its own events, none twice."""
    port = free_port()
    server = Server(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            "3",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "10",
            "tests.support.proc_wsgi_app:app",
        ],
        {**server_environment(capture, API_KEY), "APIUSAGE_FLUSH_INTERVAL": "0.2"},
        port,
        tmp_path / "gunicorn.log",
    )
    try:
        server.wait_ready()
        pids: set[int] = set()
        sent = 0
        deadline = time.monotonic() + 15
        with ThreadPoolExecutor(6) as pool:
            while sent < 60 or len(pids) < 2:
                assert time.monotonic() < deadline, f"requests reached only workers {pids}"
                paths = [[f"/v1/items/{sent + n}?caller=c{sent + n}"] for n in range(6)]
                for bodies in pool.map(lambda p: _get(server.url, p), paths):
                    pids.update(body["pid"] for body in bodies)
                sent += 6
        assert server.terminate() == 0, server.output()
        events = _api_requests(capture)
        _assert_each_once(events, sent)
        assert sorted(event["distinct_id"] for event in events) == sorted(
            f"c{n}" for n in range(sent)
        )
        assert "Traceback" not in server.output(), server.output()
    finally:
        server.kill()


def test_gunicorn_sigterm_during_load_delivers_the_requests_it_finishes(
    capture: CaptureServer, tmp_path: Path
) -> None:
    """SIGTERM while requests are being served: gunicorn lets its workers finish them
    (graceful timeout), and each worker delivers their events before it exits."""
    port = free_port()
    server = Server(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--threads",
            "4",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "10",
            "tests.support.proc_wsgi_app:app",
        ],
        {**server_environment(capture, API_KEY), "PROC_APP_DELAY": "0.5"},
        port,
        tmp_path / "gunicorn.log",
    )

    def one(number: int) -> str | None:
        try:
            _get(server.url, [f"/v1/items/{number}?caller=load-{number}"])
        except (httpx.TransportError, AssertionError):
            return None  # not accepted before the server stopped listening
        return f"load-{number}"

    try:
        server.wait_ready()
        with ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(one, number) for number in range(8)]
            time.sleep(0.25)  # every request is inside a worker, sleeping
            server.process.send_signal(signal.SIGTERM)
            served = [answer.result() for answer in answers]
        assert server.process.wait(timeout=20) == 0, server.output()
        finished = sorted(caller for caller in served if caller is not None)
        assert len(finished) >= 4, f"too few requests were in flight: {served}"
        events = _api_requests(capture)
        _assert_each_once(events, len(finished))
        assert sorted(event["distinct_id"] for event in events) == finished
    finally:
        server.kill()


# ------------------------------------------------------------------ outage + SIGKILL
def _waiting_in_spool(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return int(db.execute("SELECT count(*) FROM waiting").fetchone()[0])
    except sqlite3.OperationalError:  # the table is being created
        return 0


def test_events_spooled_before_a_sigkill_mid_outage_are_replayed_after_a_restart(
    capture: CaptureServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    environment = {
        **server_environment(capture, API_KEY),
        "APIUSAGE_FLUSH_INTERVAL": "0.2",
        "APIUSAGE_SPOOL": str(spool),
    }

    def start(name: str) -> Server:
        log = tmp_path / f"{name}.log"
        server = uvicorn_server("tests.support.proc_asgi_app:app", environment, log)
        server.wait_ready()
        return server

    capture.fail_next(100_000, 503)  # PostHog is down
    first = start("first")
    try:
        _get(first.url, [f"/v1/items/{n}?caller=before-{n}" for n in range(10)])
        deadline = time.monotonic() + 15
        while _waiting_in_spool(spool) < 10:
            assert time.monotonic() < deadline, "the events never reached the spool"
            time.sleep(0.1)
        os.killpg(first.process.pid, signal.SIGKILL)  # no handler, no atexit, nothing runs
        first.process.wait(timeout=10)
    finally:
        first.kill()
    time.sleep(0.5)  # a replay attempt already on the wire is answered (503) before...
    refused = {e["uuid"]: e for e in capture.events(accepted_only=False)}
    capture.reset()  # ...PostHog is back
    second = start("second")
    try:
        _get(second.url, ["/v1/items/99?caller=after"])
        deadline = time.monotonic() + 15
        while len(_api_requests(capture)) < 11:
            assert time.monotonic() < deadline, f"{len(_api_requests(capture))} of 11 arrived"
            time.sleep(0.1)
        events = _api_requests(capture)
        _assert_each_once(events, 11)
        replayed = [event for event in events if event["distinct_id"] != "after"]
        assert sorted(event["distinct_id"] for event in replayed) == sorted(
            f"before-{n}" for n in range(10)
        )
        for event in replayed:  # as first sent: PostHog de-duplicates on the uuid
            assert refused[event["uuid"]]["timestamp"] == event["timestamp"]
        assert _waiting_in_spool(spool) == 0
    finally:
        second.kill()


# ------------------------------------------------------------------ freeze (Lambda)
def test_a_lambda_frozen_after_each_invocation_and_then_killed_loses_nothing(
    capture: CaptureServer,
) -> None:
    """Lambda freezes the instance when the handler returns and may reclaim it frozen:
    with nothing but ``AWS_LAMBDA_FUNCTION_NAME`` set (``delivery="auto"``), each
    invocation's event is at PostHog before the process is stopped."""
    environment = {
        name: value
        for name, value in server_environment(capture, API_KEY).items()
        if name != "APIUSAGE_FLUSH_INTERVAL"
    }
    environment["AWS_LAMBDA_FUNCTION_NAME"] = "orders-api"
    runtime = subprocess.Popen(
        [sys.executable, "-m", "tests.support.proc_lambda"],
        env=environment,
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert runtime.stdin is not None
    assert runtime.stdout is not None
    try:
        assert runtime.stdout.readline().strip() == "ready"
        for number in range(6):
            runtime.stdin.write(f"/v1/orders/{number}\n")
            runtime.stdin.flush()
            done = runtime.stdout.readline().split()
            runtime.send_signal(signal.SIGSTOP)  # frozen: no thread of it runs any more
            assert done[:2] == ["done", "200"], done
            events = _api_requests(capture)
            assert len(events) == number + 1, f"invocation {number}: not delivered by its end"
            assert events[-1]["distinct_id"] == "lambda-caller"
            assert events[-1]["properties"]["route"] == "/v1/orders/{order_id}"
            runtime.send_signal(signal.SIGCONT)  # the next invocation thaws it
        runtime.send_signal(signal.SIGSTOP)
        runtime.kill()  # reclaimed while frozen
        runtime.wait(timeout=10)
        _assert_each_once(_api_requests(capture), 6)
        assert len(capture.batches()) == 6  # one batch per invocation
    finally:
        if runtime.poll() is None:
            runtime.kill()
            runtime.wait(timeout=10)
        for pipe in (runtime.stdin, runtime.stdout, runtime.stderr):
            if pipe is not None:
                pipe.close()
