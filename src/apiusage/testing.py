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

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from apiusage.client import UsageClient
from apiusage.feature_flags import FlagValue, force, restore
from apiusage.sinks.memory import MemorySink

__all__ = ["MemorySink", "force_flags", "recording_client"]


def recording_client(**settings: Any) -> tuple[UsageClient, MemorySink]:
    """A client that delivers to a fresh :class:`MemorySink` (settings as keyword arguments).

    It is given a fixed identity secret, so tests never create files for one.
    """
    sink = MemorySink()
    settings.setdefault("identity_secret", "apiusage-testing-identity-secret")
    return UsageClient(sink=sink, **settings), sink


@contextmanager
def force_flags(values: Mapping[str, FlagValue]) -> Iterator[None]:
    """Within the block, ``apiusage.flag(key)`` answers ``values[key]`` for every caller,
    in every thread of this process (whatever the definitions say); the answers are
    recorded on the requests' events as real ones are. Nested blocks add to the outer's.

    Example::

        def test_new_pagination(client):
            with force_flags({"new-pagination": True}):
                assert client.get("/v1/items").json()["next_cursor"]
    """
    before = force(values)
    try:
        yield
    finally:
        restore(before)
