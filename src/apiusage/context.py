"""The current request, and the calls a handler makes on it: ``track()`` and ``identify()``.

The middleware puts the request's record in a ContextVar before calling the app. Handlers
that run in a thread pool (FastAPI sync endpoints, Django sync views under ASGI) get a copy
of the context, so they see the same record object and their changes to it are kept.

Neither call ever raises into the application: a call that cannot be recorded (no caller
outside a request, apiusage not set up) is logged, rate-limited, and counted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from apiusage.caller import MAX_ID_LENGTH, Identity
from apiusage.health import Stats
from apiusage.record import JourneyEvent
from apiusage.recording import IGNORED_REQUEST, annotate, current, current_record

if TYPE_CHECKING:
    from apiusage.client import UsageClient

__all__ = ["IGNORED_REQUEST", "annotate", "current_record", "identify", "track"]

#: Counts and logs misuse when there is no client to count it on.
_unattached = Stats()


def _default_client() -> UsageClient | None:
    from apiusage.registry import default_client

    return default_client()


def _rejected(client: UsageClient | None, call: str, message: str) -> None:
    stats = client.stats if client is not None else _unattached
    stats.add("calls_rejected")
    stats.warn(call, "apiusage: %s was not recorded: %s", call, message)


def track(
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    distinct_id: str | int | None = None,
    organisation: str | int | None = None,
    **extra_properties: Any,
) -> None:
    """Record a journey event (``signup``, ``project_create`` …).

    Inside a request it inherits the caller's identity, organisation, API version and the
    request id, even when the identity only becomes known later in the handler. Outside a
    request (a worker, a script) ``distinct_id`` is required.
    """
    record = current.get()
    if record is IGNORED_REQUEST:
        return
    if not isinstance(event, str) or not event:
        client = _default_client()
        _rejected(client, "apiusage.track()", "the event name must be a non-empty string")
        return
    merged = {**properties, **extra_properties} if properties else extra_properties
    journey_event = JourneyEvent(
        event,
        dict(merged),
        time.time(),
        str(distinct_id)[:MAX_ID_LENGTH] if distinct_id is not None and distinct_id != "" else None,
        str(organisation)[:MAX_ID_LENGTH] if organisation is not None else None,
    )
    if record is not None:
        record.add_journey_event(journey_event)
        return
    client = _default_client()
    if client is None:
        _rejected(None, f"apiusage.track({event!r})", "apiusage is not set up in this process")
    elif journey_event.distinct_id is None:
        _rejected(
            client,
            f"apiusage.track({event!r})",
            "it was called outside a request, so there is no caller to attribute it to: "
            "pass distinct_id=... (and organisation=... if known)",
        )
    else:
        client.record_journey_event(journey_event)


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
    record = current.get()
    if record is IGNORED_REQUEST:
        return
    if distinct_id is None or distinct_id == "" or isinstance(distinct_id, bool):
        _rejected(_default_client(), "apiusage.identify()", "distinct_id must be a non-empty id")
        return
    identity = Identity(
        str(distinct_id)[:MAX_ID_LENGTH],
        organisation=str(organisation)[:MAX_ID_LENGTH] if organisation is not None else None,
        person_properties=dict(person_properties),
        organisation_properties=dict(organisation_properties or {}),
    )
    if record is not None:
        record.identity = identity
        record.identity_pinned = True
        return
    client = _default_client()
    if client is None:
        _rejected(None, "apiusage.identify()", "apiusage is not set up in this process")
    else:
        client.record_identity(identity)
