"""From queued items to delivered events: one batch at a time, on the delivery worker.

The request path queues raw :class:`~apiusage.record.RequestRecord` objects (and the
``track()`` / ``identify()`` calls made outside a request). The worker hands a batch of
them to :meth:`EventPipeline.process`, which resolves the callers no one named yet, builds
the events, and gives the whole batch to the sink in one call: one encode and one POST
for PostHog, one transaction for the local store. Every item ends up counted: built and
delivered, sampled out, or dropped with its reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

from apiusage.builder import Built, Detected, EventBuilder
from apiusage.caller import REFUSED_STATUSES
from apiusage.health import Stats
from apiusage.identity import Identity, ResolverChain
from apiusage.inventory import InventoryRequest
from apiusage.record import IdentifyCall, JourneyEvent, RequestRecord, exception_name
from apiusage.request_view import RequestView
from apiusage.sinks.base import Sink

__all__ = ["EventPipeline"]

_NOT_RESOLVED: Any = object()


class _Found:
    """What a batch's requests with the same detection inputs have in common."""

    __slots__ = ("detected", "fallback")

    def __init__(self, detected: Detected) -> None:
        self.detected = detected
        #: The built-in resolvers' answer, once asked.
        self.fallback: Identity | None = _NOT_RESOLVED


#: Detection results kept from one batch to the next; beyond it the memory starts afresh.
_DETECTIONS_KEPT = 1024

#: What :meth:`EventPipeline._build_guarded` made of an item.
_BUILT, _PARTIAL, _FAILED = "built", "partial", "failed"

#: Records built between two short sleeps of the worker (see ``_let_others_run``).
_BUILD_SLICE = 16
_PAUSE_SECONDS = 0.00005


def _let_others_run() -> None:
    """Give the GIL to a thread that waits for it (an event loop) now, not after 5 ms.

    Building is pure Python: without a pause, a waiting thread gets the GIL only when
    ``sys.getswitchinterval()`` (5 ms) forces a switch, stalling an event loop that long.
    ``time.sleep(0)`` is not enough: the worker takes the GIL back before the waiting
    thread has woken up. A 50 µs sleep lets it in; it costs the worker no CPU.
    """
    time.sleep(_PAUSE_SECONDS)


class EventPipeline:
    """Builds the events of a batch of queued items and delivers them to the sink."""

    def __init__(
        self,
        builder: EventBuilder,
        fallback_resolver: ResolverChain,
        sink: Sink,
        stats: Stats,
        *,
        behind: Callable[[], bool] = lambda: False,
    ) -> None:
        self.builder = builder
        self.fallback_resolver = fallback_resolver
        self.sink = sink
        self.stats = stats
        #: True when the worker is falling behind: it then stops pausing, since a saturated
        #: loop would hold the GIL a whole switch interval after every pause, and the queue
        #: would overflow.
        self.behind = behind
        #: What was detected, by what detection reads, kept across batches: a batch of one
        #: request (``end_of_request``, a quiet server) is then not detected afresh.
        self._detected: dict[Hashable, _Found] = {}

    def build(self, item: Any, into: Built, seen: dict[Hashable, _Found]) -> None:
        """Add the events of one queued item to ``into``.

        ``seen``: what was detected in earlier requests, by what detection reads; a
        request that reads the same is not parsed again.
        """
        if isinstance(item, RequestRecord):
            view = RequestView(item)  # one view per record: detectors share its parsing
            # The route first: looking it up may need what the record still holds.
            key = self._detection_key(item, view.route)
            found = seen.get(key) if key is not None else None
            if found is None:
                found = _Found(self.builder.detect(view))
                if key is not None:
                    seen[key] = found
            if item.identity is None and item.status not in REFUSED_STATUSES:
                # A credential the app refused (401, 403) names no caller: a wrong
                # password or a random token would otherwise become a phantom one.
                if found.fallback is _NOT_RESOLVED:
                    identity = self.fallback_resolver(view)
                    found.fallback = identity if isinstance(identity, Identity) else None
                item.identity = found.fallback
            self.builder.build_request(item, found.detected, into)
        elif isinstance(item, JourneyEvent):
            self.builder.build_journey(item, into)
        elif isinstance(item, IdentifyCall):
            self.builder.build_identify(item.identity, item.timestamp, into)
        elif isinstance(item, InventoryRequest):
            inventory = item.inventory(self.stats.error)
            self.builder.build_inventory(inventory, into)
        else:
            raise TypeError(f"cannot build events from {type(item).__name__}")

    def _detection_key(self, record: RequestRecord, route: str | None) -> Hashable | None:
        """Everything detection and the built-in resolvers read of a request: its route,
        query string, headers, and its path when the route names no version. None when it
        cannot be a key (headers that are not pairs of bytes or strings).

        Queued records keep only the headers the worker reads (``UsageClient._detach``).
        Detectors and built-in resolvers must read nothing else (not the status, not the
        state): requests with equal keys share what was detected.
        """
        raw = record.raw_headers
        headers = tuple(raw.items()) if isinstance(raw, dict) else tuple(raw)
        path = record.path if self.builder.versions.reads_path(route) else None
        key = (route, path, record.query_string, headers)
        try:
            hash(key)
        except TypeError:  # header pairs as lists: allowed by ASGI, and Mangum's way
            try:
                key = (route, path, record.query_string, tuple(map(tuple, headers)))
                hash(key)
            except TypeError:
                return None
        return key

    def _detections(self) -> dict[Hashable, _Found]:
        """The detections kept so far, emptied first when it holds too many."""
        if len(self._detected) >= _DETECTIONS_KEPT:
            self._detected.clear()
        return self._detected

    def _build_unreadable(self, item: Any, error: BaseException, into: Built) -> bool:
        """After a failed build: the request's event from its certain facts; False if
        even that failed (the record is then dropped and counted)."""
        if not isinstance(item, RequestRecord):
            return False
        try:
            self.builder.build_unreadable(item, exception_name(error), into)
        except Exception as exc:
            self.stats.error("building an event from a record's certain facts", exc)
            return False
        return True

    def spill(self, items: list[Any]) -> int:
        """Shutdown ran out of time with ``items`` still queued: build their events and
        have the sink keep them for a later process (``sink.spill``), instead of sending.
        Returns how many items were kept; 0 when the sink cannot keep anything."""
        spill = getattr(self.sink, "spill", None)
        if spill is None:
            return 0
        built = Built()
        seen = self._detections()
        kept = sum(1 for item in items if self._build_guarded(item, built, seen) != _FAILED)
        if not built.events and not built.groups:
            return kept
        return kept if spill(built.events, built.groups) else 0

    def _build_guarded(self, item: Any, into: Built, seen: dict[Hashable, _Found]) -> str:
        """:meth:`build`, with a failure contained: ``_BUILT``, or ``_PARTIAL`` when only the
        request's certain facts could be built, or ``_FAILED`` (logged and counted as an
        error; nothing half-built of the item is left in ``into``)."""
        events, groups = into.events, into.groups
        events_before, groups_before = len(events), len(groups)
        try:
            self.build(item, into, seen)
        except Exception as exc:
            del events[events_before:]
            del groups[groups_before:]
            self.stats.error("building an event", exc)
            if self._build_unreadable(item, exc, into):
                return _PARTIAL
            del events[events_before:]
            del groups[groups_before:]
            return _FAILED
        return _BUILT

    def process(self, items: list[Any]) -> None:
        """Build and deliver one batch; the delivery worker calls this."""
        stats = self.stats
        built = Built()
        events = built.events
        requests = journeys = build_failed = partial = 0
        build = self._build_guarded
        seen = self._detections()
        pause = not self.behind()
        for position, item in enumerate(items):
            if pause and position and not position % _BUILD_SLICE:
                _let_others_run()
            if isinstance(item, RequestRecord):
                requests += 1
                if item.journey:
                    journeys += len(item.journey)
            outcome = build(item, built, seen)
            if outcome != _BUILT:
                if outcome == _PARTIAL:
                    partial += 1
                else:
                    build_failed += 1
        if requests:
            stats.add("requests_recorded", requests)
        if journeys:
            stats.add("journey_events_recorded", journeys)
        if built.sampled_out:
            stats.add("sampled_out", built.sampled_out)
        if build_failed:
            stats.add("dropped_build_failed", build_failed)
        if partial:
            stats.add("events_built_partially", partial)
        if not events and not built.groups:
            return
        stats.add("events_built", len(events))
        try:
            accepted = self.sink.send(events, built.groups)
        except Exception as exc:
            stats.error("sending events", exc)
            stats.add("dropped_delivery_failed", len(events))
            return
        stats.add("events_delivered", accepted)
        if accepted < len(events):
            stats.add("dropped_delivery_failed", len(events) - accepted)
