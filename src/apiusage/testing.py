"""Helpers for testing your own app's analytics: an in-memory sink and a recording client.

Example::

    from apiusage.testing import recording_client

    def test_signup_is_tracked():
        client, sink = recording_client()
        app = apiusage.ASGIMiddleware(my_app, client=client)
        ...  # send requests
        client.flush()
        assert [e.name for e in sink.events] == ["api_request", "signup"]
"""

from __future__ import annotations

from typing import Any

from apiusage.client import UsageClient
from apiusage.sinks.memory import MemorySink

__all__ = ["MemorySink", "recording_client"]


def recording_client(**settings: Any) -> tuple[UsageClient, MemorySink]:
    """A client that delivers to a fresh :class:`MemorySink` (settings as keyword arguments).

    It is given a fixed identity secret, so tests never create files for one.
    """
    sink = MemorySink()
    settings.setdefault("identity_secret", "apiusage-testing-identity-secret")
    return UsageClient(sink=sink, **settings), sink
