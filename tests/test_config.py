"""Configuration: keyword arguments, environment, `.env`, and clear start-up errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

import apiusage
from apiusage import ASGIMiddleware, ConfigurationError, Settings, UsageClient, WSGIMiddleware
from apiusage.config import DEFAULT_EXCLUDED_PATHS, load_settings
from apiusage.record import JourneyEvent
from apiusage.sinks.memory import MemorySink
from apiusage.sinks.posthog import PostHogSink
from apiusage.sinks.store import LocalStoreSink
from tests.support.apps import plain_wsgi_app, starlette_app


@pytest.fixture
def clients() -> Iterator[list[UsageClient]]:
    """Clients a test creates; closed afterwards."""
    created: list[UsageClient] = []
    yield created
    for client in created:
        client.close(timeout=5)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.posthog_api_key is None
    assert settings.uses_posthog is False
    assert settings.posthog_host == "https://us.i.posthog.com"
    assert settings.event_name == "api_request"
    assert settings.sample_rate == 1.0
    assert settings.flush_interval == 1.0
    assert settings.exclude_paths == DEFAULT_EXCLUDED_PATHS
    assert {"/ping", "/metrics"} <= set(settings.exclude_paths)
    assert {"health", "healthz", "health-check", "openapi.json"} <= set(settings.exclude_path_names)
    assert settings.exclude_framework_paths is True
    assert settings.enabled is True


def test_keyword_arguments() -> None:
    settings = load_settings(
        posthog_api_key="phc_kw",
        posthog_host="https://eu.i.posthog.com/",
        event_name="api_call",
        sample_rate=0.25,
        exclude_paths=["/internal/"],
        api_key_headers=["X-Acme-Key"],
        caller_header=" X-Caller ",
        route_sample_rates={"/v1/events": 0.1},
    )
    assert settings.posthog_api_key is not None
    assert settings.posthog_api_key.get_secret_value() == "phc_kw"
    assert settings.posthog_host == "https://eu.i.posthog.com"  # trailing slash dropped
    assert (settings.event_name, settings.sample_rate) == ("api_call", 0.25)
    assert settings.exclude_paths == ("/internal/",)
    assert settings.api_key_headers == ("x-acme-key",)  # header names are case-insensitive
    assert settings.caller_header == "x-caller"
    assert settings.route_sample_rates == {"/v1/events": 0.1}
    assert "phc_kw" not in repr(settings)  # the key is a secret


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTHOG_API_KEY", "phc_env")
    monkeypatch.setenv("POSTHOG_HOST", "http://posthog.internal:8000")
    monkeypatch.setenv("APIUSAGE_FLUSH_INTERVAL", "2.5")
    monkeypatch.setenv("APIUSAGE_EXCLUDE_PATHS", '["/status", "/internal/"]')
    monkeypatch.setenv("APIUSAGE_ROUTE_SAMPLE_RATES", '{"/v1/events": 0.5}')
    monkeypatch.setenv("APIUSAGE_ENABLED", "false")
    monkeypatch.setenv("APIUSAGE_VERSION_SOURCES", '["header", "path"]')
    settings = load_settings()
    assert settings.posthog_api_key is not None
    assert settings.posthog_api_key.get_secret_value() == "phc_env"
    assert settings.uses_posthog
    assert settings.posthog_host == "http://posthog.internal:8000"
    assert settings.flush_interval == 2.5
    assert settings.exclude_paths == ("/status", "/internal/")
    assert settings.route_sample_rates == {"/v1/events": 0.5}
    assert settings.enabled is False
    assert settings.version_sources == ("header", "path")
    # Keyword arguments beat the environment.
    assert load_settings(flush_interval=9).flush_interval == 9
    assert (
        load_settings(posthog_host="https://eu.i.posthog.com").posthog_host
        == "https://eu.i.posthog.com"
    )


def test_prefixed_posthog_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIUSAGE_POSTHOG_API_KEY", "phc_prefixed")
    settings = load_settings()
    assert settings.posthog_api_key is not None
    assert settings.posthog_api_key.get_secret_value() == "phc_prefixed"


def test_dotenv_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Path.cwd() == tmp_path  # the autouse fixture's private working directory
    (tmp_path / ".env").write_text(
        "POSTHOG_API_KEY=phc_dotenv\n"
        "APIUSAGE_FLUSH_INTERVAL=4\n"
        'APIUSAGE_EXCLUDE_PATHS=["/from-dotenv"]\n'
        "UNRELATED_VARIABLE=ignored\n",
        encoding="utf-8",
    )
    settings = load_settings()
    assert settings.posthog_api_key is not None
    assert settings.posthog_api_key.get_secret_value() == "phc_dotenv"
    assert settings.flush_interval == 4
    assert settings.exclude_paths == ("/from-dotenv",)
    # The real environment beats the .env file.
    monkeypatch.setenv("APIUSAGE_FLUSH_INTERVAL", "6")
    assert load_settings().flush_interval == 6


def test_settings_object_with_overrides() -> None:
    base = Settings(event_name="api_call", sample_rate=0.5)
    assert load_settings(base) is base
    merged = load_settings(base, sample_rate=0.1)
    assert (merged.event_name, merged.sample_rate) == ("api_call", 0.1)


INVALID = [
    ({"sample_rate": 2}, "sample_rate (APIUSAGE_SAMPLE_RATE)"),
    ({"sample_rate": "often"}, "sample_rate (APIUSAGE_SAMPLE_RATE)"),
    ({"posthog_host": "ftp://example.com"}, "posthog_host (POSTHOG_HOST)"),
    ({"exclude_paths": ["health"]}, "exclude_paths (APIUSAGE_EXCLUDE_PATHS)"),
    ({"flush_interval": 0}, "flush_interval (APIUSAGE_FLUSH_INTERVAL)"),
    ({"route_sample_rates": {"/a": 3}}, "route_sample_rates (APIUSAGE_ROUTE_SAMPLE_RATES)"),
    ({"version_sources": ["cookie"]}, "version_sources (APIUSAGE_VERSION_SOURCES)"),
    ({"max_queue_size": 0}, "max_queue_size (APIUSAGE_MAX_QUEUE_SIZE)"),
    ({"event_name": ""}, "event_name (APIUSAGE_EVENT_NAME)"),
    ({"shutdown_timeout": -1}, "shutdown_timeout (APIUSAGE_SHUTDOWN_TIMEOUT)"),
]


@pytest.mark.parametrize(
    ("settings", "named"), INVALID, ids=[next(iter(case[0])) for case in INVALID]
)
def test_invalid_keyword_fails_at_construction(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        UsageClient(sink=MemorySink(), **settings)
    assert named in str(info.value)
    with pytest.raises(ConfigurationError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ASGIMiddleware(starlette_app(), **settings)
    with pytest.raises(ConfigurationError):
        WSGIMiddleware(plain_wsgi_app, **settings)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("APIUSAGE_SAMPLE_RATE", "1.5", "sample_rate (APIUSAGE_SAMPLE_RATE)"),
        ("APIUSAGE_SAMPLE_RATE", "lots", "sample_rate (APIUSAGE_SAMPLE_RATE)"),
        ("POSTHOG_HOST", "not a url", "posthog_host (POSTHOG_HOST)"),
        ("APIUSAGE_FLUSH_INTERVAL", "-3", "flush_interval (APIUSAGE_FLUSH_INTERVAL)"),
        ("APIUSAGE_EXCLUDE_PATHS", "/health,/metrics", "exclude_paths (APIUSAGE_EXCLUDE_PATHS)"),
        (
            "APIUSAGE_ROUTE_SAMPLE_RATES",
            "{not json",
            "route_sample_rates (APIUSAGE_ROUTE_SAMPLE_RATES)",
        ),
        ("APIUSAGE_ENABLED", "perhaps", "enabled (APIUSAGE_ENABLED)"),
    ],
)
def test_invalid_environment_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        UsageClient(sink=MemorySink())
    assert named in str(info.value)
    assert str(info.value).startswith("invalid apiusage configuration")


def test_invalid_dotenv_value_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("APIUSAGE_EXCLUDE_PATHS=/health\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"exclude_paths \(APIUSAGE_EXCLUDE_PATHS\)"):
        load_settings()


def test_unknown_keyword() -> None:
    with pytest.raises(ConfigurationError, match="sampel_rate"):
        UsageClient(sink=MemorySink(), sampel_rate=0.5)
    with pytest.raises(ConfigurationError, match="flush_intervall"):
        ASGIMiddleware(starlette_app(), flush_intervall=1)
    with pytest.raises(ConfigurationError, match="not_a_setting"):
        WSGIMiddleware(plain_wsgi_app, not_a_setting=True)


def test_short_identity_secret() -> None:
    with pytest.raises(ConfigurationError, match=r"identity_secret \(APIUSAGE_IDENTITY_SECRET\)"):
        UsageClient(sink=MemorySink(), identity_secret="short")


def test_middleware_takes_a_client_or_settings_not_both(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, _ = recording
    with pytest.raises(TypeError, match="not both"):
        ASGIMiddleware(starlette_app(), client=client, sample_rate=0.5)


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"."]


def test_no_key_uses_the_local_store_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clients: list[UsageClient]
) -> None:
    caplog.set_level(logging.INFO, logger="apiusage")
    client = UsageClient()
    clients.append(client)
    assert isinstance(client.sink, LocalStoreSink)
    store = tmp_path / ".apiusage" / "events.sqlite3"
    assert client.sink.path.resolve() == store
    assert store.exists()
    # Said when the first events are written (not by a process that records nothing).
    assert not [r for r in caplog.records if "POSTHOG_API_KEY" in r.getMessage()]
    Client(apiusage.WSGIMiddleware(_hello, client=client)).get("/v1/items", buffered=True)
    assert client.flush(10)
    [message] = [r.getMessage() for r in caplog.records if "POSTHOG_API_KEY" in r.getMessage()]
    assert "local store" in message
    assert str(store) in message


def test_store_setting_and_unusable_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clients: list[UsageClient]
) -> None:
    monkeypatch.setenv("APIUSAGE_STORE", str(tmp_path / "data" / "usage.db"))
    client = UsageClient()
    clients.append(client)
    assert isinstance(client.sink, LocalStoreSink)
    assert (tmp_path / "data" / "usage.db").exists()

    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ConfigurationError, match=r"store \(APIUSAGE_STORE\)"):
        UsageClient(store=tmp_path / "a-file" / "usage.db")


def test_key_uses_posthog_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, clients: list[UsageClient]
) -> None:
    caplog.set_level(logging.INFO, logger="apiusage")
    monkeypatch.setenv("POSTHOG_API_KEY", "phc_test_key")
    monkeypatch.setenv("POSTHOG_HOST", "http://127.0.0.1:9")
    client = UsageClient()
    clients.append(client)
    assert isinstance(client.sink, PostHogSink)
    messages = [record.getMessage() for record in caplog.records]
    assert any("PostHog at http://127.0.0.1:9" in message for message in messages)
    # No identity secret of our own: derived from the project key, with a warning.
    assert any("APIUSAGE_IDENTITY_SECRET is not set" in message for message in messages)
    assert not (Path.cwd() / ".apiusage").exists()  # no local store when PostHog is used


def test_settings_reach_the_detectors_and_client(clients: list[UsageClient]) -> None:
    client = UsageClient(
        sink=MemorySink(),
        api_key_headers=["X-Acme-Key"],
        version_headers=["X-Acme-Version"],
        version_sources=["header"],
        exclude_paths=["/internal/", "/status"],
    )
    clients.append(client)
    assert client.auth_detector.api_key_headers == ("x-acme-key",)
    assert client.builder.versions.headers == ("x-acme-version",)
    assert client.builder.versions.sources == ("header",)
    assert client.is_excluded("/internal/anything")
    assert client.is_excluded("/status")
    assert client.is_excluded("/status/")
    assert client.is_excluded("/health")  # a health-check name, under any prefix
    assert client.is_excluded("/api/v1/utils/health-check/")
    assert not client.is_excluded("/api/v1/healthy")
    assert not client.is_excluded("/statuses")


def test_disabled_client_creates_no_files_and_records_nothing(tmp_path: Path) -> None:
    client = apiusage.UsageClient(enabled=False)
    try:
        apiusage.track("ignored", distinct_id="someone")
        client.record_journey_event(JourneyEvent("ignored", {}, 0.0, "someone"))
        assert client.flush()
        assert client.stats.snapshot()["events_built"] == 0
        assert not (tmp_path / ".apiusage").exists()
    finally:
        client.close()
