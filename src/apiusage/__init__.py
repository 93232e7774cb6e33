"""apiusage: know how your API is used.

One line of middleware records every request (route template, status, latency, API
version, auth method, client library, caller and organisation) and delivers it in the
background to PostHog, or to an embedded local store when no PostHog key is set.
"""

__version__ = "0.1.0"

from apiusage.client import UsageClient
from apiusage.config import ConfigurationError, Settings, load_settings
from apiusage.context import identify, track
from apiusage.events import SCHEMA_VERSION, Event, GroupUpdate, SharedProperties
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

__all__ = [
    "SCHEMA_VERSION",
    "ASGIMiddleware",
    "ConfigurationError",
    "Event",
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


def flush(timeout: float | None = None) -> bool:
    """Deliver everything the default client recorded so far (blocking; not on an event loop)."""
    return get_client().flush(timeout)


def stats() -> dict[str, int]:
    """The default client's counters: events built, delivered, dropped (by reason) …"""
    return get_client().stats.snapshot()
