"""apiusage: know how your API is used.

One line of middleware records every request (route template, status, latency, API
version, auth method, client library, caller and organisation) and delivers it in the
background to PostHog, or to an embedded local store when no PostHog key is set.

The names below are imported when first used (PEP 562), so a command such as
``apiusage report`` does not pay for the middleware, the HTTP client and the frameworks'
helpers it never touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from apiusage.client import UsageClient
    from apiusage.config import ConfigurationError, Settings, load_settings
    from apiusage.context import identify, track
    from apiusage.events import SCHEMA_VERSION, Event, GroupUpdate, SharedProperties
    from apiusage.feature_flags import FlagValue, flag, flags
    from apiusage.identity import (
        Identity,
        KeyedHasher,
        Resolver,
        ResolverChain,
        StateResolver,
        from_api_key,
        from_header,
        from_state,
    )
    from apiusage.inventory import Route, deprecated
    from apiusage.middleware import ASGIMiddleware, WSGIMiddleware
    from apiusage.recording import Recording, annotate, current_record
    from apiusage.registry import get_client, use_client
    from apiusage.request_view import RequestView
    from apiusage.sinks.base import Sink

#: Where each public name lives.
_HOMES = {
    "UsageClient": "apiusage.client",
    "ConfigurationError": "apiusage.config",
    "Settings": "apiusage.config",
    "load_settings": "apiusage.config",
    "identify": "apiusage.context",
    "track": "apiusage.context",
    "SCHEMA_VERSION": "apiusage.events",
    "Event": "apiusage.events",
    "GroupUpdate": "apiusage.events",
    "SharedProperties": "apiusage.events",
    "FlagValue": "apiusage.feature_flags",
    "flag": "apiusage.feature_flags",
    "flags": "apiusage.feature_flags",
    "Identity": "apiusage.identity",
    "KeyedHasher": "apiusage.identity",
    "Resolver": "apiusage.identity",
    "ResolverChain": "apiusage.identity",
    "StateResolver": "apiusage.identity",
    "from_api_key": "apiusage.identity",
    "from_header": "apiusage.identity",
    "from_state": "apiusage.identity",
    "Route": "apiusage.inventory",
    "deprecated": "apiusage.inventory",
    "ASGIMiddleware": "apiusage.middleware",
    "WSGIMiddleware": "apiusage.middleware",
    "Recording": "apiusage.recording",
    "annotate": "apiusage.recording",
    "current_record": "apiusage.recording",
    "get_client": "apiusage.registry",
    "use_client": "apiusage.registry",
    "RequestView": "apiusage.request_view",
    "Sink": "apiusage.sinks.base",
}

__all__ = [
    "SCHEMA_VERSION",
    "ASGIMiddleware",
    "ConfigurationError",
    "Event",
    "FlagValue",
    "GroupUpdate",
    "Identity",
    "KeyedHasher",
    "Recording",
    "RequestView",
    "Resolver",
    "ResolverChain",
    "Route",
    "Settings",
    "SharedProperties",
    "Sink",
    "StateResolver",
    "UsageClient",
    "WSGIMiddleware",
    "__version__",
    "annotate",
    "current_record",
    "deprecated",
    "flag",
    "flags",
    "flush",
    "from_api_key",
    "from_header",
    "from_state",
    "get_client",
    "identify",
    "load_settings",
    "stats",
    "track",
    "use_client",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'apiusage' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def flush(timeout: float | None = None) -> bool:
    """Deliver everything the default client recorded so far (blocking; not on an event loop)."""
    from apiusage.registry import get_client

    return get_client().flush(timeout)


def stats() -> dict[str, int]:
    """The default client's counters: events built, delivered, dropped (by reason) …"""
    from apiusage.registry import get_client

    return get_client().stats.snapshot()
