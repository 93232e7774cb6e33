"""The current request, and the calls a handler makes on it: ``track()`` and ``identify()``.

The middleware puts the request's record in a ContextVar before calling the app. Handlers
that run in a thread pool (FastAPI sync endpoints, Django sync views under ASGI) get a copy
of the context, so they see the same record object and their changes to it are kept.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from apiusage.identity import Identity
from apiusage.record import JourneyEvent, RequestRecord

if TYPE_CHECKING:
    from apiusage.client import UsageClient

__all__ = ["current_record", "identify", "track"]

_current_record: ContextVar[RequestRecord | None] = ContextVar("apiusage_request", default=None)


def current_record() -> RequestRecord | None:
    """The record of the request being handled, or None outside a request."""
    return _current_record.get()


def _default_client() -> UsageClient:
    from apiusage.client import get_client

    return get_client()


def track(
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    distinct_id: str | None = None,
    organisation: str | None = None,
    **extra_properties: Any,
) -> None:
    """Record a journey event (``signup``, ``project_create`` …).

    Inside a request it inherits the caller's identity, organisation, API version and the
    request id, even when the identity only becomes known later in the handler. Outside a
    request (a worker, a script) ``distinct_id`` is required.
    """
    if not isinstance(event, str) or not event:
        raise ValueError("apiusage.track() needs an event name (a non-empty string)")
    merged = {**properties, **extra_properties} if properties else extra_properties
    record = _current_record.get()
    journey_event = JourneyEvent(
        event, dict(merged), time.time(), str(distinct_id) if distinct_id else None, organisation
    )
    if record is not None:
        record.add_journey_event(journey_event)
        return
    if not distinct_id:
        raise ValueError(
            f"apiusage.track({event!r}) was called outside a request, so there is no caller "
            "to attribute it to: pass distinct_id=... (and organisation=... if known)"
        )
    _default_client().record_journey_event(journey_event)


def identify(
    distinct_id: str | int,
    *,
    organisation: str | int | None = None,
    organisation_properties: Mapping[str, Any] | None = None,
    **person_properties: Any,
) -> None:
    """Name the caller of the current request (e.g. at sign-up or log-in).

    Overrides what identity resolvers would find. Keyword arguments become person
    properties; ``organisation_properties`` (plan, name …) are sent once per
    organisation with PostHog's ``group_identify``. Outside a request it updates the
    person and organisation properties directly.
    """
    identity = Identity(
        str(distinct_id),
        organisation=str(organisation) if organisation is not None else None,
        person_properties=dict(person_properties),
        organisation_properties=dict(organisation_properties or {}),
    )
    record = _current_record.get()
    if record is not None:
        record.identity = identity
        record.identity_pinned = True
        return
    _default_client().record_identity(identity)
