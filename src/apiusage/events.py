"""The events apiusage emits, independent of where they are delivered.

The schema of ``api_request`` (its property names and their meaning) is a versioned
contract, documented in ``docs/schema.md``; :data:`SCHEMA_VERSION` changes with it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEMA_VERSION", "Event", "GroupUpdate", "new_event_uuid"]

#: Version of the event schema; bumped on any incompatible change to property names or meaning.
SCHEMA_VERSION = 1


@dataclass(slots=True)
class Event:
    """One event: an ``api_request``, a journey event from ``track()``, or an identify.

    Treat it as read-only. (Not a frozen dataclass only because a frozen one costs four
    times as much to create, and the delivery worker creates one per request.)
    """

    name: str
    distinct_id: str
    properties: dict[str, Any]
    timestamp: float  # seconds since the epoch, UTC
    uuid: str
    groups: dict[str, str] = field(default_factory=dict)
    #: Person properties to set (PostHog ``$set``); empty for none.
    person_properties: dict[str, Any] = field(default_factory=dict)
    #: True for anonymous callers: no person profile is created or updated.
    personless: bool = False


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
