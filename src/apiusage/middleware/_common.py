"""What the ASGI and WSGI middleware share: client set-up, blocking calls off the loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from apiusage.client import UsageClient
from apiusage.identity import Resolver
from apiusage.registry import use_client
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
    """The middleware's client: see :func:`apiusage.use_client`."""
    return use_client(
        client, identify=identify, sink=sink, posthog_client=posthog_client, **settings
    )


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
