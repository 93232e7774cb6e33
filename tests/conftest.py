"""Shared fixtures: an isolated environment per test and a recording client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import apiusage
from apiusage.sinks.memory import MemorySink
from apiusage.testing import recording_client


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No POSTHOG_*/APIUSAGE_* from the developer's shell, and a private working directory
    (so the local store and `.env` lookups never touch the checkout)."""
    for name in list(os.environ):
        if name.startswith(("POSTHOG_", "APIUSAGE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def recording() -> Iterator[tuple[apiusage.UsageClient, MemorySink]]:
    """A client delivering to memory; closed after the test."""
    client, sink = recording_client()
    yield client, sink
    client.close(timeout=5)
