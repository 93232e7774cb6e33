"""What docs/security.md promises: refused credentials name no caller whoever resolves
them, credential callers can be turned off, callers' data is kept private on disk, plain
http is called out, and forged values stay inert in CSV."""

from __future__ import annotations

import base64
import csv
import io
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

import apiusage
from apiusage import Identity, KeyedHasher, from_api_key, from_header
from apiusage.backends import spool_for
from apiusage.config import load_settings
from apiusage.private_paths import owned_privately
from apiusage.report import summarise
from apiusage.report.tables import write_csv
from apiusage.sinks.memory import MemorySink
from apiusage.wire.encoding import EncodedEvent
from tests.adapters.drivers import IDENTITY_SECRET


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Accepts ``key-good``; refuses every other key."""
    accepted = environ.get("HTTP_X_API_KEY") == "key-good"
    apiusage.annotate(route="/v1/export")
    start_response("200 OK" if accepted else "401 Unauthorized", [("content-type", "text/plain")])
    return [b"."]


def record(wrapped: apiusage.WSGIMiddleware, *headers: dict[str, str]) -> None:
    http = Client(wrapped)
    for sent in headers:
        http.get("/v1/export", headers=sent, buffered=True)
    assert wrapped.client.flush(10)


def test_resolvers_from_credentials_handed_in_also_skip_refused_requests() -> None:
    """``from_api_key`` / ``from_header`` in ``identify=`` run on the request path, before
    the built-ins; a refused credential names no caller there either."""
    sink = MemorySink()
    hasher = KeyedHasher(IDENTITY_SECRET.encode())
    wrapped = apiusage.WSGIMiddleware(
        app,
        sink=sink,
        identity_secret=IDENTITY_SECRET,
        identify=[from_header("x-caller"), from_api_key(hasher)],
    )
    record(wrapped, {"X-Api-Key": "key-good"}, {"X-Api-Key": "key-random"}, {"X-Caller": "eve"})

    accepted, refused, forged = sink.named("api_request")
    assert accepted.distinct_id == hasher("key-good")
    assert refused.personless
    assert forged.personless  # a 401: the header names no one


def test_credential_callers_can_be_turned_off() -> None:
    sink = MemorySink()
    wrapped = apiusage.WSGIMiddleware(
        app, sink=sink, identity_secret=IDENTITY_SECRET, credential_callers=False
    )
    basic = "Basic " + base64.b64encode(b"alice:pw").decode()
    record(wrapped, {"X-Api-Key": "key-good"}, {"Authorization": basic})

    events = sink.named("api_request")
    assert [event.personless for event in events] == [True, True]
    assert events[0].properties["auth_method"] == "api_key"  # still detected


def test_identity_ids_are_cut_however_they_are_built() -> None:
    identity = Identity("u" * 1000, organisation="o" * 1000)
    assert (len(identity.distinct_id), len(identity.organisation or "")) == (200, 200)


# ---------------------------------------------------------------------------- files
@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask (022): what apiusage creates must still be private."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_store_and_its_secret_are_private(tmp_path: Path, open_umask: None) -> None:
    store = tmp_path / "data" / "events.sqlite3"
    wrapped = apiusage.WSGIMiddleware(app, store=store)
    record(wrapped, {"X-Api-Key": "key-good"})
    wrapped.client.close(5)

    assert mode(store.parent) == 0o700
    assert mode(store) == 0o600
    assert mode(store.parent / "identity_secret") == 0o600
    assert not [p for p in store.parent.iterdir() if mode(p) & 0o077]  # -wal, -shm too


def test_a_spool_is_private_and_never_in_a_folder_others_can_write(
    tmp_path: Path,
    open_umask: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(posthog_api_key="phc_test", spool=str(tmp_path / "s" / "spool.db"))
    spool = spool_for(settings, "phc_test")
    assert spool is not None
    assert spool.put([EncodedEvent("u-1", "api_request", b"{}")]) == 0  # none dropped
    spool.close()
    assert (mode(spool.path.parent), mode(spool.path)) == (0o700, 0o600)

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert not owned_privately(shared)
    assert owned_privately(tmp_path / "not-yet")
    assert owned_privately(spool.path.parent)

    # The automatic location falls back to the temporary folder (no usable cache folder:
    # here a file stands where it would be) where someone else made apiusage-<uid>.
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(shared))
    ours = shared / f"apiusage-{os.getuid()}"
    ours.mkdir()
    ours.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="apiusage"):
        assert spool_for(load_settings(posthog_api_key="phc_test"), "phc_test") is None
    assert "Set APIUSAGE_SPOOL to a path of your own" in caplog.text
    ours.chmod(0o700)
    spool = spool_for(load_settings(posthog_api_key="phc_test"), "phc_test")
    assert spool is not None
    assert spool.path.parent == ours


def test_plain_http_to_another_host_is_called_out(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="apiusage"):
        apiusage.UsageClient(posthog_api_key="phc_x", posthog_host="http://127.0.0.1:9").close(1)
        assert "unencrypted" not in caplog.text
        apiusage.UsageClient(posthog_api_key="phc_x", posthog_host="http://ph.example").close(1)
    assert "posthog_host http://ph.example is plain http" in caplog.text


def test_forged_values_are_inert_in_csv(tmp_path: Path) -> None:
    store = tmp_path / "events.sqlite3"
    wrapped = apiusage.WSGIMiddleware(
        app,
        store=store,
        identity_secret=IDENTITY_SECRET,
        caller_header="x-caller",
        deprecated_routes=["GET /v1/export"],
    )
    formula = '=HYPERLINK("https://evil.example","click")'
    record(wrapped, {"X-Api-Key": "key-good", "X-Caller": formula})
    wrapped.client.close(5)

    out = io.StringIO()
    write_csv(summarise(store, deprecated_routes=["GET /v1/export"]), "deprecated", out)
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["caller"] == "'" + formula
    assert row["requests"] == "1"
