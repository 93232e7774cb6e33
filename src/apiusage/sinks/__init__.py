"""Where events go: PostHog, the embedded local store, or memory (for tests).

Imported when first used (PEP 562): reading the local store does not load the HTTP
client that PostHog delivery needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apiusage.sinks.base import Sink
    from apiusage.sinks.discard import DiscardSink
    from apiusage.sinks.memory import MemorySink
    from apiusage.sinks.posthog import PostHogSink
    from apiusage.sinks.store import LocalStoreSink

_HOMES = {
    "DiscardSink": "apiusage.sinks.discard",
    "LocalStoreSink": "apiusage.sinks.store",
    "MemorySink": "apiusage.sinks.memory",
    "PostHogSink": "apiusage.sinks.posthog",
    "Sink": "apiusage.sinks.base",
}

__all__ = ["DiscardSink", "LocalStoreSink", "MemorySink", "PostHogSink", "Sink"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'apiusage.sinks' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
