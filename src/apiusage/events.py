"""The events apiusage emits, independent of where they are delivered.

The schema of ``api_request`` (its property names and their meaning) is a versioned
contract, documented in ``docs/schema.md``; :data:`SCHEMA_VERSION` changes with it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["SCHEMA_VERSION", "Event", "GroupUpdate", "SharedProperties", "new_event_uuid"]

#: Version of the event schema; bumped on any incompatible change to property names or meaning.
SCHEMA_VERSION = 2


class SharedProperties:
    """Properties that many events carry unchanged: one route, version, auth method, caller.

    The builder makes one object per distinct combination and gives the same object to
    every event that has it, so a sink works out its encoding once (in :attr:`memo`) rather
    than once per event: most of an ``api_request`` event is the same from one request of
    a route and caller to the next.
    """

    __slots__ = ("memo", "properties")

    def __init__(self, properties: dict[str, Any]) -> None:
        #: Read-only: many events share it.
        self.properties = properties
        #: What a sink derived from :attr:`properties`, under a key of the sink's own.
        self.memo: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"SharedProperties({self.properties!r})"


class Event:
    """One event: an ``api_request``, a journey event from ``track()``, or an identify.

    Treat it as read-only. ``properties`` is everything the event says; sinks that encode
    many events read its two parts instead: :attr:`shared` (the same object for many events,
    or None) and :attr:`own_properties` (this event's alone, never a key of ``shared``).
    (A plain class with slots: the delivery worker creates one per request, and a frozen
    dataclass costs four times as much to create.)
    """

    __slots__ = (
        "_merged",
        "distinct_id",
        "groups",
        "name",
        "own_properties",
        "person_properties",
        "personless",
        "shared",
        "timestamp",
        "uuid",
    )

    def __init__(
        self,
        name: str,
        distinct_id: str,
        properties: dict[str, Any],
        timestamp: float,
        uuid: str,
        groups: dict[str, str] | None = None,
        person_properties: dict[str, Any] | None = None,
        personless: bool = False,
        shared: SharedProperties | None = None,
    ) -> None:
        self.name = name
        self.distinct_id = distinct_id
        #: This event's own properties (all of them when ``shared`` is None).
        self.own_properties = properties
        self.timestamp = timestamp  # seconds since the epoch, UTC
        self.uuid = uuid
        #: ``{group type: group key}`` (PostHog ``$groups``); empty for none.
        self.groups = groups if groups is not None else {}
        #: Person properties to set (PostHog ``$set``); empty for none.
        self.person_properties = person_properties if person_properties is not None else {}
        #: True for anonymous callers: no person profile is created or updated.
        self.personless = personless
        self.shared = shared
        self._merged: dict[str, Any] | None = None

    @property
    def properties(self) -> dict[str, Any]:
        """All the event's properties: the shared ones and its own."""
        if self.shared is None:
            return self.own_properties
        merged = self._merged
        if merged is None:
            merged = self._merged = {**self.shared.properties, **self.own_properties}
        return merged

    def as_dict(self) -> dict[str, Any]:
        """Everything the event says, as plain data (``properties`` merged)."""
        return {
            "name": self.name,
            "distinct_id": self.distinct_id,
            "properties": self.properties,
            "timestamp": self.timestamp,
            "uuid": self.uuid,
            "groups": self.groups,
            "person_properties": self.person_properties,
            "personless": self.personless,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.as_dict().items())
        return f"Event({fields})"


@dataclass(slots=True)
class GroupUpdate:
    """Properties of an organisation (PostHog ``group_identify``)."""

    group_type: str
    group_key: str
    properties: dict[str, Any]
    timestamp: float
    uuid: str
    #: The caller whose request brought the update (PostHog would otherwise invent a person).
    distinct_id: str | None = None


_random_bits = random.getrandbits  # reseeded in a forked child by the random module itself
_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)
_LOW_62_BITS = (1 << 62) - 1


def new_event_uuid() -> str:
    """A UUIDv7 (RFC 9562): milliseconds since the epoch, then 74 random bits.

    PostHog de-duplicates on the uuid and recommends v7: time-ordered ids keep its (and the
    local store's) indexes local. Four times cheaper than ``str(uuid.uuid4())``, which
    reads ``os.urandom`` for every event; uniqueness, not secrecy, is what an event id needs.
    """
    bits = _random_bits(74)
    value = (
        (time.time_ns() // 1_000_000) << 80
        | (bits >> 62) << 64
        | (bits & _LOW_62_BITS)
        | _VERSION_AND_VARIANT
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
