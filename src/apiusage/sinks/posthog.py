"""Delivery to PostHog through the official ``posthog`` client (its queue, batching and retries)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from apiusage.events import Event, GroupUpdate

__all__ = ["PostHogSink", "posthog_properties"]


def posthog_properties(event: Event) -> dict[str, Any]:
    """The PostHog ``properties`` of an event: ours plus ``$set`` / personless markers."""
    properties = dict(event.properties)
    if event.person_properties:
        properties["$set"] = event.person_properties
    if event.personless:
        properties["$process_person_profile"] = False
    return properties


class PostHogSink:
    """Hands events to a ``posthog.Posthog`` client, which batches and sends them over HTTP.

    The client either comes from the user (it is then not shut down by us) or is created
    here, with its ``on_error`` wired to apiusage's drop counter.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        api_key: str | None = None,
        host: str | None = None,
        on_dropped: Callable[[int], None] | None = None,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_queue_size: int = 10_000,
    ) -> None:
        self._owns_client = client is None
        if client is None:
            if not api_key:
                raise ValueError("PostHogSink needs a posthog client or an api_key")
            from posthog import Posthog

            def on_error(exc: Exception, batch: Sequence[Any]) -> None:
                if on_dropped is not None:
                    on_dropped(len(batch))

            client = Posthog(
                api_key,
                host=host,
                on_error=on_error,
                flush_at=batch_size,
                flush_interval=flush_interval,
                max_queue_size=max_queue_size,
                gzip=True,
                disable_geoip=True,
            )
        self.client = client

    def send(self, events: Sequence[Event], groups: Sequence[GroupUpdate]) -> int:
        client = self.client
        for group in groups:
            client.group_identify(
                group.group_type,
                group.group_key,
                properties=group.properties,
                timestamp=datetime.fromtimestamp(group.timestamp, tz=timezone.utc),
                uuid=group.uuid,
                distinct_id=group.distinct_id,
            )
        accepted = 0
        for event in events:
            sent = client.capture(
                event=event.name,
                distinct_id=event.distinct_id,
                properties=posthog_properties(event),
                groups=event.groups or None,
                timestamp=datetime.fromtimestamp(event.timestamp, tz=timezone.utc),
                uuid=event.uuid,
            )
            # capture() returns None when the client drops the event (queue full, disabled).
            if sent is not None:
                accepted += 1
        return accepted

    def flush(self, timeout: float) -> None:
        self.client.flush(timeout_seconds=timeout)

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        if self._owns_client:
            # posthog's shutdown() drains with no time limit; give it what is left of ours.
            closer = threading.Thread(target=self.client.shutdown, name="apiusage-posthog-shutdown")
            closer.daemon = True
            closer.start()
            closer.join(max(0.0, deadline - time.monotonic()))
