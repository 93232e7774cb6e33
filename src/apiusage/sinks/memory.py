"""An in-memory sink for tests: assert on the events your app produced."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from apiusage.events import Event, GroupUpdate

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps every event and group update in lists; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self.groups: list[GroupUpdate] = []
        self.closed = False

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        with self._lock:
            self.events.extend(events)
            self.groups.extend(groups)
        return len(events)

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def flush(self, timeout: float) -> None:
        return None

    def close(self, timeout: float) -> None:
        self.closed = True

    def named(self, name: str) -> list[Event]:
        """The events called ``name``, in the order they were delivered."""
        with self._lock:
            return [event for event in self.events if event.name == name]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.groups.clear()
