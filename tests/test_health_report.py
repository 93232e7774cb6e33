"""Drops are visible outside the process: ``apiusage report`` and ``apiusage health``.

A counter only the app can read is lost with the process; the local store keeps each
writing process's counters, and the PostHog spool says what waits and what was refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import apiusage
from apiusage.cli import NOT_HEALTHY, main
from apiusage.record import JourneyEvent
from apiusage.report import delivery_health, format_summary, summarise
from tests.support.capture_server import CaptureServer

SECRET = "health-report-identity-secret-0123"


def _track(client: apiusage.UsageClient, count: int) -> None:
    for number in range(count):
        client.record_journey_event(JourneyEvent("step", {"n": number}, time.time(), "job"))


def _store_with_drops(path: Path) -> None:
    """Two processes' worth of counters: one clean, one that dropped records at shutdown."""
    clean = apiusage.UsageClient(store=str(path), identity_secret=SECRET, flush_interval=0.01)
    _track(clean, 5)
    clean.close(timeout=5)
    lossy = apiusage.UsageClient(
        store=str(path), identity_secret=SECRET, max_queue_size=3, flush_interval=3600
    )
    _track(lossy, 5)  # two over the queue's bound: dropped, counted
    lossy.close(timeout=5)


def test_the_report_says_what_the_writers_delivered_and_dropped(tmp_path: Path) -> None:
    store = tmp_path / "events.sqlite3"
    _store_with_drops(store)
    health = delivery_health(store)
    assert health.processes == 2
    assert health.counters["events_delivered"] == 8
    assert health.dropped == {"queue_full": 2}
    text = format_summary(summarise(store))
    assert "Delivery (2 processes)" in text
    assert "events delivered: 8   dropped: 2" in text
    assert "dropped (queue full): 2" in text


def test_health_of_a_store_with_drops_is_not_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "events.sqlite3"
    _store_with_drops(store)
    monkeypatch.setenv("APIUSAGE_STORE", str(store))
    assert main(["health"]) == NOT_HEALTHY
    out = capsys.readouterr().out
    assert f"events go to: local store at {store}" in out
    assert "dropped (queue full): 2" in out
    assert "NOT HEALTHY" in out


def test_health_of_a_clean_store_is_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "events.sqlite3"
    client = apiusage.UsageClient(store=str(store), identity_secret=SECRET, flush_interval=0.01)
    _track(client, 3)
    client.close(timeout=5)
    monkeypatch.setenv("APIUSAGE_STORE", str(store))
    assert main(["health", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is True
    assert report["store"]["events_delivered"] == 3
    assert report["store"]["dropped"] == 0


def test_health_shows_events_waiting_for_posthog_and_refused_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "spool.sqlite3"
    with CaptureServer() as capture:
        settings = {
            "posthog_api_key": "phc_health",
            "posthog_host": capture.url,
            "identity_secret": SECRET,
            "spool": str(spool),
            "flush_interval": 0.01,
            "batch_size": 2,
        }
        capture.fail_next(1, 400)  # two events refused for good
        capture.fail_next(1000, 503)  # then PostHog is down
        client = apiusage.UsageClient(**settings)
        _track(client, 2)
        assert client.flush(10)
        _track(client, 3)
        assert client.flush(10)
        client.close(timeout=2)
    for name, value in {
        "POSTHOG_API_KEY": "phc_health",
        "POSTHOG_HOST": capture.url,
        "APIUSAGE_SPOOL": str(spool),
        "APIUSAGE_STORE": str(tmp_path / "no-store.sqlite3"),
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["health", "--json"]) == NOT_HEALTHY
    report = json.loads(capsys.readouterr().out)
    assert report["destination"] == f"PostHog at {capture.url}"
    assert report["spool"]["waiting"] == 3
    assert report["spool"]["rejected"] == 2
    [reason] = report["spool"]["rejected_by_reason"]
    assert reason.startswith("HTTP 400")
    assert main(["health"]) == NOT_HEALTHY
    out = capsys.readouterr().out
    assert "waiting for PostHog: 3 events" in out
    assert "refused by PostHog (kept aside, not retried): 2" in out


def test_the_report_behaves_in_a_pipe_that_closes_early(tmp_path: Path) -> None:
    """``apiusage report | head -1``: no BrokenPipeError traceback."""
    import subprocess
    import sys

    store = tmp_path / "events.sqlite3"
    client = apiusage.UsageClient(store=str(store), identity_secret=SECRET, flush_interval=0.01)
    for number in range(3000):  # enough journey rows to fill the pipe's buffer
        client.record_journey_event(JourneyEvent(f"step-{number}", {}, time.time(), "job"))
    client.close(timeout=30)
    process = subprocess.Popen(
        [sys.executable, "-m", "apiusage", "report", "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    assert process.stdout.readline().strip() == b"API usage summary"
    process.stdout.close()  # the reader goes away, as head does
    errors = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=30) == 1
    assert "Traceback" not in errors
    assert "BrokenPipeError" not in errors
