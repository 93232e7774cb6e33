"""A sink that accepts and forgets: what a disabled client delivers to."""

from __future__ import annotations

from collections.abc import Sequence

from apiusage.events import Event, GroupUpdate

__all__ = ["DiscardSink"]


class DiscardSink:
    """Used when ``enabled=False``: no store file, no PostHog client, nothing sent."""

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        return len(events)

    def flush(self, timeout: float) -> None:
        return None

    def close(self, timeout: float) -> None:
        return None
