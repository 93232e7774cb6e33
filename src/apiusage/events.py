"""The events apiusage emits, independent of where they are delivered.

The schema of ``api_request`` (its property names and their meaning) is a versioned
contract, documented in ``docs/schema.md``; :data:`SCHEMA_VERSION` changes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEMA_VERSION", "Event", "GroupUpdate"]

#: Version of the event schema; bumped on any incompatible change to property names or meaning.
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Event:
    """One event: an ``api_request``, a journey event from ``track()``, or an identify."""

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


@dataclass(frozen=True, slots=True)
class GroupUpdate:
    """Properties of an organisation (PostHog ``group_identify``)."""

    group_type: str
    group_key: str
    properties: dict[str, Any]
    timestamp: float
    uuid: str
    #: The caller whose request brought the update (PostHog would otherwise invent a person).
    distinct_id: str | None = None
