"""What the ASGI and WSGI middleware share: client set-up and exception naming."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apiusage.client import UsageClient
from apiusage.identity import Resolver
from apiusage.sinks.base import Sink

__all__ = ["exception_name", "make_client"]


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


def exception_name(exc: BaseException) -> str:
    """``ValueError`` for built-ins, ``package.module.Error`` otherwise.

    A group of one exception (what anyio task groups raise in older Starlette) is named
    after the exception inside it: that is the error the app raised.
    """
    inner = getattr(exc, "exceptions", None)  # an exception group (or its 3.10 backport)
    while isinstance(inner, tuple) and len(inner) == 1 and isinstance(inner[0], BaseException):
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
