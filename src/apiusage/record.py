"""The compact per-request record: what the request path writes, and nothing more.

The middleware fills one :class:`RequestRecord` per request with raw facts (timings,
status, byte counts, references to the server's own header list). Parsing, hashing and
event building happen later, off the request path, in the delivery worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

from apiusage.events import new_event_uuid

if TYPE_CHECKING:
    from apiusage.caller import Identity

__all__ = ["IdentifyCall", "JourneyEvent", "RequestRecord", "exception_name"]

#: Estimated bytes of a queued record without its strings and headers, of a kept header
#: beyond its value, the length assumed for a value that was not measured, of a
#: ``track()`` event and of each of its properties (calibrated with
#: ``benchmarks/bench_memory.py``). The queue's byte bound counts these.
RECORD_BYTES = 640
HEADER_BYTES = 100
AVERAGE_HEADER_LENGTH = 40
AVERAGE_HEADER_BYTES = HEADER_BYTES + AVERAGE_HEADER_LENGTH
JOURNEY_EVENT_BYTES = 400
PROPERTY_BYTES = 160
_flatten = chain.from_iterable


@dataclass(frozen=True, slots=True)
class JourneyEvent:
    """An ``apiusage.track()`` call: its name, properties and when it happened."""

    name: str
    properties: dict[str, Any]
    timestamp: float
    distinct_id: str | None = None
    organisation: str | None = None


class IdentifyCall:
    """An ``apiusage.identify()`` call made outside a request, queued for the worker."""

    __slots__ = ("identity", "timestamp")

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.timestamp = time.time()


class RequestRecord:
    """Raw facts about one request, written on the request path.

    Fields that most requests never change are class-level defaults, so creating a record
    sets only what every request has; this object is made once per request.
    """

    # Set by adapters, handlers and the middleware when there is something to say.
    #: The framework's own request object, when an adapter supplies one.
    native: Any = None
    #: What the app attached to the request (Flask ``g``, Django's request), from adapters.
    state: Any = None
    duration_ns: int | None = None
    status: int | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    exception: str | None = None
    client_disconnected: bool = False
    route: str | None = None
    identity: Identity | None = None
    #: The auth method when the framework knows it (e.g. DRF's authenticator); else detected.
    auth_method: str | None = None
    #: True once ``apiusage.identify()`` set the identity; resolvers then do not run.
    identity_pinned: bool = False
    #: Resolvers of the chain already tried while the framework's request existed (Flask):
    #: the rest (the async ones on) run after the response.
    resolvers_tried: int = 0
    journey: list[JourneyEvent] | None = None
    #: Feature flags answered during the request, by key (see :mod:`apiusage.feature_flags`).
    flags: dict[str, bool | str] | None = None
    #: Flags asked for during the request that had no answer (their default applied).
    unanswered: set[str] | None = None
    #: The client recording the request, while it is handled (flags are its flags).
    client: Any = None
    #: Estimated bytes the record holds while queued (the queue's byte bound counts it).
    queued_bytes: int = 1024
    _request_id: str | None = None

    def __init__(  # positional calls from the middleware: half the cost of keywords
        self,
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
        self.framework = framework

    @property
    def request_id(self) -> str:
        """A uuid for this request; it is also the uuid of its ``api_request`` event."""
        if self._request_id is None:
            self._request_id = new_event_uuid()
        return self._request_id

    def measured_bytes(self) -> int:
        """``queued_bytes`` with every kept header measured rather than taken as average.

        Call only after the record was detached from its request (headers copied).
        """
        raw = self.raw_headers
        values = raw.values() if isinstance(raw, dict) else _flatten(raw)
        return self.queued_bytes - AVERAGE_HEADER_LENGTH * len(raw) + sum(map(len, values))

    def finish_timing(self) -> None:
        """Stop the clock (at the last response byte) unless it already stopped."""
        if self.duration_ns is None:
            self.duration_ns = time.perf_counter_ns() - self.started_ns

    def add_journey_event(self, event: JourneyEvent) -> None:
        if self.journey is None:
            self.journey = [event]
        else:
            self.journey.append(event)


def exception_name(exc: BaseException) -> str:
    """``ValueError`` for built-ins, ``package.module.Error`` otherwise.

    A group of one exception (what anyio task groups raise in older Starlette) is named
    after the exception inside it: that is the error the app raised.
    """
    inner = getattr(exc, "exceptions", None)  # an exception group (or its 3.10 backport)
    while isinstance(inner, tuple) and len(inner) == 1 and isinstance(inner[0], BaseException):
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
