"""Real processes: events recorded before a stop signal reach PostHog before the process ends.

Each test starts uvicorn, gunicorn or a plain script (same interpreter), configured only
through the environment, pointed at a local capture endpoint, with a flush interval of a
minute: nothing is delivered while it runs, so only the shutdown path (ASGI lifespan
shutdown, ``atexit``, or apiusage's stop-signal handler) can deliver what the test finds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.capture_server import CaptureServer
from tests.support.servers import Server, free_port, server_environment

pytestmark = pytest.mark.process

API_KEY = "phc_process_test"
REQUESTS = 20


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def _send_requests(url: str, callers: list[str], *, concurrency: int = 1) -> list[dict[str, Any]]:
    def one(client: httpx.Client, index: int, caller: str) -> dict[str, Any]:
        response = client.get(f"{url}/v1/items/{index}", params={"caller": caller}, timeout=5.0)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # A fresh connection per request: closed connections let the server shut down at once.
    with httpx.Client(headers={"connection": "close"}) as client:
        if concurrency == 1:
            return [one(client, index, caller) for index, caller in enumerate(callers)]
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda pair: one(client, *pair), enumerate(callers)))


def _assert_delivered(capture: CaptureServer, callers: list[str], route: str | None) -> None:
    # Delivery happens inside the server process before it exits, so the events are
    # already here; the short wait only absorbs the capture server's bookkeeping.
    events = capture.wait_for(len(callers), timeout=2.0)
    api_requests = [event for event in events if event["event"] == "api_request"]
    assert sorted(event["distinct_id"] for event in api_requests) == sorted(callers)
    for event in api_requests:
        properties = event["properties"]
        assert properties["status_code"] == 200
        assert properties["method"] == "GET"
        assert properties["route"] == route
        assert properties["request_id"] == event["uuid"]
    assert len({event["uuid"] for event in api_requests}) == len(callers)
    assert {batch.payload["api_key"] for batch in capture.batches()} == {API_KEY}


@pytest.mark.parametrize("lifespan", ["auto", "off"])
def test_uvicorn_sigterm_delivers_every_event(
    capture: CaptureServer, tmp_path: Path, lifespan: str
) -> None:
    port = free_port()
    server = Server(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.support.proc_asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            lifespan,
            "--no-access-log",
        ],
        server_environment(capture, API_KEY),
        port,
        tmp_path / "uvicorn.log",
    )
    try:
        server.wait_ready()
        callers = [f"uvicorn-caller-{index}" for index in range(REQUESTS)]
        _send_requests(server.url, callers)
        # The flush interval is a minute: nothing has been sent yet.
        assert capture.events() == []
        returncode = server.terminate()
        # uvicorn re-raises the SIGTERM it caught once it has shut down: -15 is a clean exit.
        assert returncode in (0, -signal.SIGTERM), server.output()
        _assert_delivered(capture, callers, route="/v1/items/{item_id}")
        assert "Traceback" not in server.output(), server.output()
    finally:
        server.kill()


def test_gunicorn_sync_workers_sigterm_delivers_every_event(
    capture: CaptureServer, tmp_path: Path
) -> None:
    port = free_port()
    server = Server(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--worker-class",
            "sync",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "10",
            "tests.support.proc_wsgi_app:app",
        ],
        server_environment(capture, API_KEY),
        port,
        tmp_path / "gunicorn.log",
    )
    try:
        server.wait_ready()
        # Concurrent requests to a handler that pauses briefly, until both workers have
        # served some: each worker must deliver its own events when it exits.
        callers: list[str] = []
        pids: set[int] = set()
        deadline = time.monotonic() + 10.0
        while len(callers) < REQUESTS or len(pids) < 2:
            assert time.monotonic() < deadline, f"requests never reached both workers: {pids}"
            batch = [f"gunicorn-caller-{len(callers) + index}" for index in range(4)]
            pids.update(body["pid"] for body in _send_requests(server.url, batch, concurrency=4))
            callers.extend(batch)
        assert capture.events() == []
        returncode = server.terminate()
        assert returncode == 0, server.output()
        # A plain WSGI app has no route template (and the raw path is never used as one).
        _assert_delivered(capture, callers, route=None)
        assert "Traceback" not in server.output(), server.output()
    finally:
        server.kill()


@pytest.mark.parametrize("workers", [1, 2])
def test_uvicorn_sigterm_during_load_delivers_the_requests_still_being_served(
    capture: CaptureServer, tmp_path: Path, workers: int
) -> None:
    """No lifespan: after SIGTERM, uvicorn finishes the requests in flight, and each waits
    for its own events to be delivered before the server may end the process.

    With one worker uvicorn imports the app before it catches signals, so apiusage's
    handler runs last, when uvicorn hands the signal back; with several, each worker
    imports it after, so apiusage's handler runs first and the requests still being
    served deliver their own events."""
    port = free_port()
    server = Server(
        [
            *(sys.executable, "-m", "uvicorn", "tests.support.proc_asgi_app:app"),
            *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"),
            *("--workers", str(workers), "--no-access-log"),
        ],
        server_environment(capture, API_KEY),
        port,
        tmp_path / "uvicorn.log",
    )
    try:
        server.wait_ready()
        done = [f"done-before-{index}" for index in range(5)]
        _send_requests(server.url, done)
        in_flight = [f"in-flight-{index}" for index in range(6)]
        with httpx.Client(headers={"connection": "close"}) as client, ThreadPoolExecutor(6) as pool:
            answers = [
                pool.submit(
                    client.get,
                    f"{server.url}/v1/slow/{index}",
                    params={"caller": caller, "seconds": "1.0"},
                    timeout=10.0,
                )
                for index, caller in enumerate(in_flight)
            ]
            time.sleep(0.4)  # every slow request is being served
            assert capture.events() == []
            returncode = server.terminate()
            assert all(answer.result().status_code == 200 for answer in answers)
        assert returncode in (0, -signal.SIGTERM), server.output()
        events = capture.wait_for(len(done) + len(in_flight), timeout=2.0)
        assert sorted(e["distinct_id"] for e in events if e["event"] == "api_request") == sorted(
            done + in_flight
        )
        assert "Traceback" not in server.output(), server.output()
    finally:
        server.kill()


_SCRIPT = """
import os, signal, sys, time
import apiusage

if "--own-handler" in sys.argv:
    def own(signum, frame):
        print("own handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, own)
client = apiusage.use_client()  # as a management command or job would
for number in range(3):
    apiusage.track("job_step", {"step": number}, distinct_id="script-user")
print("handler", signal.getsignal(signal.SIGTERM).__qualname__, flush=True)
print("ready", flush=True)
time.sleep(30)
"""


def _run_script(capture: CaptureServer, tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    log = tmp_path / "job.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(script), *args],
            env={**server_environment(capture, API_KEY), **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while "ready" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(15)
        finally:
            process.kill()
    return returncode, log.read_text()


def test_a_script_with_no_handler_delivers_then_dies_of_the_signal(
    capture: CaptureServer, tmp_path: Path
) -> None:
    returncode, output = _run_script(capture, tmp_path)
    assert returncode == -signal.SIGTERM, output  # the signal is not swallowed
    assert "handler apiusage_sigterm_handler" in output
    steps = [event["properties"]["step"] for event in capture.wait_for(3, timeout=2.0)]
    assert sorted(steps) == [0, 1, 2]


def test_the_apps_own_handler_runs_after_delivery(capture: CaptureServer, tmp_path: Path) -> None:
    returncode, output = _run_script(capture, tmp_path, "--own-handler")
    assert returncode == 3, output
    assert "own handler ran" in output
    assert len(capture.wait_for(3, timeout=2.0)) == 3


def test_catch_signals_off_leaves_the_handlers_alone(
    capture: CaptureServer, tmp_path: Path
) -> None:
    returncode, output = _run_script(
        capture, tmp_path, "--own-handler", APIUSAGE_CATCH_SIGNALS="false"
    )
    assert returncode == 3, output
    assert "handler own" in output  # apiusage's is not in front of it
    # The app's handler exits with sys.exit(): atexit still delivers.
    assert len(capture.wait_for(3, timeout=2.0)) == 3
