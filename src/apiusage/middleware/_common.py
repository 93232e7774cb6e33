"""What the ASGI and WSGI middleware share: client set-up, blocking calls off the loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from apiusage.client import UsageClient
from apiusage.identity import Resolver
from apiusage.registry import serve, shared_client
from apiusage.sinks.base import Sink

__all__ = ["make_client", "run_in_thread"]

_T = TypeVar("_T")


def make_client(
    client: UsageClient | None,
    identify: Resolver | Sequence[Resolver] | None,
    sink: Sink | None,
    posthog_client: Any,
    settings: dict[str, Any],
) -> UsageClient:
    """The given client, or the shared one for these keyword settings (never both)."""
    if client is None:
        return shared_client(identify, sink, posthog_client, **settings)
    if identify is not None or sink is not None or posthog_client is not None or settings:
        raise TypeError("pass either client= or settings/identify/sink, not both")
    serve(client)
    return client


async def run_in_thread(function: Callable[[], _T]) -> _T:
    """Run a blocking call in a thread and await it, under asyncio or trio.

    (asgiref's ``sync_to_async`` needs asyncio: under trio it fails.)
    """
    trio: Any = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass  # trio is imported but this is not a trio task
        else:
            result: _T = await trio.to_thread.run_sync(function)
            return result
    return await asyncio.get_running_loop().run_in_executor(None, function)
