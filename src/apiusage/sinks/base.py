"""The sink interface: the one seam between event building and event transport."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from apiusage.events import Event, GroupUpdate

__all__ = ["Sink"]


@runtime_checkable
class Sink(Protocol):
    """Receives built events from the delivery worker.

    ``send`` is called from one background thread at a time and never from an event loop.
    It returns how many of ``events`` it accepted (the rest are counted as dropped) and
    raises when it could take none (all are counted as dropped).

    A sink may also have ``when_idle()``: the worker calls it when a ``flush_interval``
    passed without a full batch (the PostHog sink replays spooled events then).
    """

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int: ...

    def flush(self, timeout: float) -> None:
        """Deliver whatever the sink itself still buffers, waiting at most ``timeout`` seconds."""

    def close(self, timeout: float) -> None:
        """Flush and release resources; the sink is not used again."""
