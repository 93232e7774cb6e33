"""What the ASGI and WSGI middleware share: client set-up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apiusage.client import UsageClient
from apiusage.identity import Resolver
from apiusage.sinks.base import Sink

__all__ = ["make_client"]


def make_client(
    client: UsageClient | None,
    identify: Resolver | Sequence[Resolver] | None,
    sink: Sink | None,
    posthog_client: Any,
    settings: dict[str, Any],
) -> UsageClient:
    """Use the given client, or build one from keyword settings (never both)."""
    if client is None:
        return UsageClient(identify=identify, sink=sink, posthog_client=posthog_client, **settings)
    if identify is not None or sink is not None or posthog_client is not None or settings:
        raise TypeError("pass either client= or settings/identify/sink, not both")
    return client
