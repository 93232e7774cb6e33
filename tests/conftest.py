"""Shared fixtures: an isolated environment per test and a recording client."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import apiusage
from apiusage.sinks.memory import MemorySink
from apiusage.testing import recording_client


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No POSTHOG_*/APIUSAGE_* from the developer's shell, and a private working directory
    (so the local store, `.env` lookups and the spool never touch the checkout or home)."""
    for name in list(os.environ):
        if name.startswith(("POSTHOG_", "APIUSAGE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    # Spools (events waiting for PostHog) go under the test's directory, servers included.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def recording() -> Iterator[tuple[apiusage.UsageClient, MemorySink]]:
    """A client delivering to memory; closed after the test."""
    client, sink = recording_client()
    yield client, sink
    client.close(timeout=5)


MakeClient = Callable[..., tuple[apiusage.UsageClient, MemorySink]]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (anyio's pytest plugin)."""
    return "asyncio"


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """Recording clients with custom settings, all closed after the test."""
    clients: list[apiusage.UsageClient] = []

    def make(**settings: Any) -> tuple[apiusage.UsageClient, MemorySink]:
        client, sink = recording_client(**settings)
        clients.append(client)
        return client, sink

    yield make
    for client in clients:
        client.close(timeout=5)
