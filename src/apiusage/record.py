"""The compact per-request record: what the request path writes, and nothing more.

The middleware fills one :class:`RequestRecord` per request with raw facts (timings,
status, byte counts, references to the server's own header list). Parsing, hashing and
event building happen later, off the request path, in the delivery worker.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apiusage.identity import Identity

__all__ = ["JourneyEvent", "RequestRecord"]


@dataclass(frozen=True, slots=True)
class JourneyEvent:
    """An ``apiusage.track()`` call: its name, properties and when it happened."""

    name: str
    properties: dict[str, Any]
    timestamp: float
    distinct_id: str | None = None
    organisation: str | None = None


class RequestRecord:
    """Raw facts about one request, written on the request path."""

    __slots__ = (
        "_request_id",
        "auth_method",
        "client_disconnected",
        "duration_ns",
        "exception",
        "framework",
        "identity",
        "identity_pinned",
        "journey",
        "method",
        "native",
        "path",
        "query_string",
        "raw_headers",
        "request_bytes",
        "response_bytes",
        "root_path",
        "route",
        "scope",
        "started_at",
        "started_ns",
        "state",
        "status",
        "transport",
    )

    def __init__(
        self,
        *,
        transport: str,
        method: str,
        path: str,
        query_string: bytes | str,
        raw_headers: Any,
        scope: Any,
        root_path: str = "",
        framework: str | None = None,
    ) -> None:
        self.started_ns = time.perf_counter_ns()
        self.started_at = time.time()
        self.transport = transport
        self.method = method
        self.path = path
        self.root_path = root_path
        self.query_string = query_string
        #: ASGI: the scope's list of (name, value) byte pairs; a WSGI environ or Django META.
        self.raw_headers = raw_headers
        #: The ASGI scope or WSGI environ.
        self.scope = scope
        #: The framework's own request object, when an adapter supplies one.
        self.native: Any = None
        #: What the app attached to the request (Flask ``g``, Django's request), from adapters.
        self.state: Any = None
        self.framework = framework
        self.duration_ns: int | None = None
        self.status: int | None = None
        self.request_bytes = 0
        self.response_bytes = 0
        self.exception: str | None = None
        self.client_disconnected = False
        self.route: str | None = None
        self.identity: Identity | None = None
        #: The auth method when the framework knows it (e.g. DRF's authenticator); else detected.
        self.auth_method: str | None = None
        #: True once ``apiusage.identify()`` set the identity; resolvers then do not run.
        self.identity_pinned = False
        self.journey: list[JourneyEvent] | None = None
        self._request_id: str | None = None

    @property
    def request_id(self) -> str:
        """A uuid for this request; it is also the uuid of its ``api_request`` event."""
        if self._request_id is None:
            self._request_id = str(uuid.uuid4())
        return self._request_id

    def finish_timing(self) -> None:
        """Stop the clock (at the last response byte) unless it already stopped."""
        if self.duration_ns is None:
            self.duration_ns = time.perf_counter_ns() - self.started_ns

    def add_journey_event(self, event: JourneyEvent) -> None:
        if self.journey is None:
            self.journey = [event]
        else:
            self.journey.append(event)
