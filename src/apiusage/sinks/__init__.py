"""Where events go: PostHog, the embedded local store, or memory (for tests)."""

from apiusage.sinks.base import Sink
from apiusage.sinks.discard import DiscardSink
from apiusage.sinks.memory import MemorySink
from apiusage.sinks.posthog import PostHogSink
from apiusage.sinks.store import LocalStoreSink

__all__ = ["DiscardSink", "LocalStoreSink", "MemorySink", "PostHogSink", "Sink"]
