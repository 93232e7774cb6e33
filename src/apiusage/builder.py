"""Turns request records into events. Runs in the delivery worker, never on the request path."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from apiusage import __version__
from apiusage.caller import REFUSED_STATUSES, Identity
from apiusage.detect.auth import AuthDetector
from apiusage.detect.routes import openapi_template
from apiusage.detect.user_agent import parse_client_library
from apiusage.detect.versions import VersionDetector, VersionResult
from apiusage.events import SCHEMA_VERSION, Event, GroupUpdate, SharedProperties, new_event_uuid
from apiusage.inventory import (
    INVENTORY_DISTINCT_ID,
    INVENTORY_EVENT,
    RouteInventory,
    configured_deprecations,
    is_deprecated,
)
from apiusage.record import JourneyEvent, RequestRecord
from apiusage.request_view import RequestView

__all__ = ["Built", "Detected", "EventBuilder"]

_SEEN_LIMIT = 100_000
#: Combinations of shared request properties kept (a few per route and caller kind).
_SHARED_LIMIT = 4096
#: Flag exposures remembered as sent (per process); beyond it the memory starts afresh,
#: and a caller's exposure may be sent once more (PostHog counts it once).
_SENT_LIMIT = 100_000
_MAX_PROPERTY_KEYS = 100
#: Bounds of user-supplied properties (``track()``, ``identify()``), documented in the
#: schema: a string is cut to this many characters, ending with TRUNCATED ...
MAX_STRING_LENGTH = 1024
TRUNCATED = "…[truncated]"
#: ... a list or mapping whose JSON is larger is replaced by a marker, and keys are cut.
MAX_STRUCTURE_BYTES = 8 * 1024
MAX_KEY_LENGTH = 200


class Detected(NamedTuple):
    """What :meth:`EventBuilder.detect` found in a request."""

    version: VersionResult
    auth_method: str
    auth_location: str | None
    library: str | None
    library_version: str | None


@dataclass(slots=True)
class Built:
    """What a batch of records (and standalone calls) turned into."""

    events: list[Event] = field(default_factory=list)
    groups: list[GroupUpdate] = field(default_factory=list)
    #: Requests left out by sampling (their journey events are still built).
    sampled_out: int = 0


def _fingerprint(properties: Mapping[str, Any]) -> int:
    """Equal for equal properties within this process (it only decides what to send again)."""
    return hash(
        orjson.dumps(properties, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    )


_STATUS_CLASSES = {digit: f"{digit}xx" for digit in range(1, 6)}


def _openapi(template: Any) -> str | None:
    """The ``route`` property: the template in OpenAPI's syntax (``route_template`` keeps
    the framework's own)."""
    return openapi_template(template) if isinstance(template, str) else None


#: The properties of :meth:`EventBuilder.build_request`'s shared key, in its order.
_SHARED_KEY_NAMES = (
    "route",
    "method",
    "status_code",
    "api_version",
    "api_version_source",
    "auth_method",
    "auth_location",
    "client_library",
    "client_library_version",
    "exception",
    "client_disconnected",
    "framework",
    "transport",
    "sample_rate",  # multiply counts by 1/sample_rate to estimate the true volume
    "organisation",
)


def _bounded(value: Any) -> Any:
    """One user-supplied value, JSON-safe and bounded: long strings are cut and end with
    :data:`TRUNCATED`; a structure over :data:`MAX_STRUCTURE_BYTES` of JSON is replaced
    by a marker saying how large it was."""
    if isinstance(value, str):
        if len(value) <= MAX_STRING_LENGTH:
            return value
        return value[: MAX_STRING_LENGTH - len(TRUNCATED)] + TRUNCATED
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else _bounded(str(value))
    try:
        encoded = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits, surrogates
        encoded = json.dumps(value, default=str).encode("utf-8", "replace")
    if len(encoded) > MAX_STRUCTURE_BYTES:
        return f"{TRUNCATED[:-1]}: {len(encoded)} bytes of JSON]"
    return orjson.loads(encoded)


def _clean_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """User-supplied properties, made JSON-safe and bounded in size (see :func:`_bounded`)."""
    return {
        str(key)[:MAX_KEY_LENGTH]: _bounded(value)
        for key, value in list(properties.items())[:_MAX_PROPERTY_KEYS]
    }


class EventBuilder:
    """Builds ``api_request`` and journey events, and de-duplicates group/person updates.

    Not thread-safe by design: one worker thread owns it.
    """

    def __init__(
        self,
        *,
        event_name: str,
        organisation_group: str,
        framework: str | None,
        versions: VersionDetector,
        auth: AuthDetector,
        sample_rate: float = 1.0,
        route_sample_rates: Mapping[str, float] | None = None,
        deprecated_routes: Iterable[str] = (),
    ) -> None:
        self.event_name = event_name
        self.organisation_group = organisation_group
        self.framework = framework
        self.versions = versions
        self.auth = auth
        self.sample_rate = sample_rate
        self.route_sample_rates = dict(route_sample_rates or {})
        self._groups_sent: dict[str, int] = {}
        self._persons_sent: dict[str, int] = {}
        self._shared: dict[tuple[Any, ...], SharedProperties] = {}
        #: (caller, flag, answer) already sent as ``$feature_flag_called``.
        self._flags_called: dict[tuple[str, str, bool | str], None] = {}
        #: (method, route) of deprecated routes: the configured ones until the route
        #: inventory arrives, then the inventory's (which include them).
        self._deprecated = configured_deprecations(deprecated_routes)
        #: Told the deprecated routes whenever a route inventory arrives (the notices).
        self.on_deprecated: Callable[[frozenset[tuple[str, str]]], None] | None = None

    def forget_sent(self) -> None:
        """Forget which groups/persons were sent (after a fork, the child starts fresh)."""
        self._groups_sent.clear()
        self._persons_sent.clear()
        self._flags_called.clear()

    # ------------------------------------------------------------------ requests
    def detect(self, view: RequestView) -> Detected:
        """What the detectors read from a request's route, path, query and headers.

        A pure function of those (the pipeline reuses it for requests that have the same).
        """
        route = view.route
        auth_method, auth_location = self.auth.detect(view)
        library, library_version = parse_client_library(view.header("user-agent"))
        return Detected(
            self.versions.detect(view, route), auth_method, auth_location, library, library_version
        )

    def build_request(self, record: RequestRecord, detected: Detected, into: Built) -> None:
        """Add the events of one request (its ``api_request`` and journey events) to ``into``.

        Runs once per request on the worker: written for speed (what requests have in
        common is looked up, not rebuilt), since every µs here is a µs of the host
        process's CPU.
        """
        route = record.route
        identity = record.identity
        rate = self._sample_rate(route) if self.route_sample_rates else self.sample_rate
        version = detected.version
        request_id = record.request_id
        if rate >= 1.0 or random.random() < rate:
            auth_method = record.auth_method or detected.auth_method
            organisation = identity.organisation if identity is not None else None
            framework = record.framework or self.framework
            status = record.status
            exception = record.exception
            disconnected = record.client_disconnected
            # What requests of one route and caller have in common is made once (see
            # SharedProperties); only the lines below are this request's own. The key's
            # order is _SHARED_KEY_NAMES's.
            key = (
                route,
                record.method,
                status,
                version.version,
                version.source,
                auth_method,
                detected.auth_location,
                detected.library,
                detected.library_version,
                exception,
                disconnected,
                framework,
                record.transport,
                rate,
                organisation,
                tuple(sorted(record.flags.items())) if record.flags else (),
            )
            shared = self._shared.get(key)
            if shared is None:
                shared = self._share(key)
            own = {
                "duration_ms": round((record.duration_ns or 0) / 1e6, 3),
                "request_bytes": record.request_bytes,
                "response_bytes": record.response_bytes,
                "request_id": request_id,
            }
            if identity is None:
                # Anonymous: a personless event keyed by the request, so nothing is profiled.
                into.events.append(
                    Event(
                        self.event_name,
                        request_id,
                        own,
                        record.started_at,
                        request_id,
                        personless=True,
                        shared=shared,
                    )
                )
            else:
                into.events.append(
                    Event(
                        self.event_name,
                        identity.distinct_id,
                        own,
                        record.started_at,
                        request_id,
                        {self.organisation_group: organisation} if organisation else None,
                        self._person_update(identity) if identity.person_properties else None,
                        shared=shared,
                    )
                )
        else:
            into.sampled_out += 1
        if record.journey:
            for journey in record.journey:
                inherited = {
                    "request_id": request_id,
                    "route": _openapi(route),
                    "method": record.method,
                    "api_version": version.version,
                }
                into.events.append(self._journey(journey, inherited, identity, record))
        if record.flags and identity is not None:
            self._flag_exposures(record, record.flags, identity, into)
        if identity is not None and identity.organisation:
            into.groups.extend(self._group_updates(identity, record.started_at))

    def _flag_exposures(
        self,
        record: RequestRecord,
        flags: dict[str, bool | str],
        identity: Identity,
        into: Built,
    ) -> None:
        """``$feature_flag_called``, once per caller, flag and answer: what PostHog's
        experiments count as exposures (anonymous requests have no person to count)."""
        sent = self._flags_called
        organisation = identity.organisation
        for flag, value in flags.items():
            marker = (identity.distinct_id, flag, value)
            if marker in sent:
                continue
            if len(sent) >= _SENT_LIMIT:
                sent.clear()
            sent[marker] = None
            into.events.append(
                Event(
                    "$feature_flag_called",
                    identity.distinct_id,
                    {
                        "$feature_flag": flag,
                        "$feature_flag_response": value,
                        "locally_evaluated": True,
                        "request_id": record.request_id,
                        "schema_version": SCHEMA_VERSION,
                        "apiusage_version": __version__,
                    },
                    record.started_at,
                    new_event_uuid(),
                    {self.organisation_group: organisation} if organisation else None,
                )
            )

    def build_unreadable(self, record: RequestRecord, error: str, into: Built) -> None:
        """The events of a request whose building failed: what the record holds for
        certain (no detector runs), with ``build_error`` naming what went wrong."""
        identity = record.identity if isinstance(record.identity, Identity) else None
        route = record.route if isinstance(record.route, str) else None
        status = record.status
        request_id = record.request_id
        # Every property of the schema is present; what a detector would have said is null.
        properties: dict[str, Any] = dict.fromkeys(_SHARED_KEY_NAMES)
        properties |= {
            "route": _openapi(route),
            "route_template": route,
            "deprecated": is_deprecated(self._deprecated, record.method, _openapi(route)),
            "auth_failed": None,
            "method": record.method,
            "status_code": status,
            "status_class": _STATUS_CLASSES.get(status // 100) if status else None,
            "duration_ms": round((record.duration_ns or 0) / 1e6, 3),
            "request_bytes": record.request_bytes,
            "response_bytes": record.response_bytes,
            "request_id": request_id,
            "exception": record.exception,
            "client_disconnected": record.client_disconnected,
            "framework": record.framework or self.framework,
            "transport": record.transport,
            "sample_rate": 1.0,
            "build_error": error,
        }
        into.events.append(
            self._event(
                self.event_name, properties, record.started_at, request_id, identity, record
            )
        )
        for journey in record.journey or ():
            inherited = {
                "request_id": request_id,
                "route": _openapi(route),
                "method": record.method,
            }
            into.events.append(self._journey(journey, inherited, identity, record))
        if identity is not None and identity.organisation:
            into.groups.extend(self._group_updates(identity, record.started_at))

    def build_inventory(self, inventory: RouteInventory, into: Built) -> None:
        """The ``api_route_inventory`` event; requests built from now on say whether their
        route is deprecated by the inventory's account."""
        deprecated = inventory.deprecated() | self._deprecated
        if deprecated != self._deprecated:
            self._deprecated = deprecated
            self._shared.clear()  # shared properties carry the old ``deprecated``
        if self.on_deprecated is not None:
            self.on_deprecated(deprecated)
        properties = inventory.properties()
        properties["schema_version"] = SCHEMA_VERSION
        properties["apiusage_version"] = __version__
        into.events.append(
            Event(
                INVENTORY_EVENT,
                INVENTORY_DISTINCT_ID,
                properties,
                time.time(),
                inventory.uuid,
                personless=True,
            )
        )

    def _sample_rate(self, route: str | None) -> float:
        """The route's rate in ``route_sample_rates``, named by its template in either the
        framework's syntax or OpenAPI's."""
        rates = self.route_sample_rates
        if route is None:
            return rates.get("", self.sample_rate)
        found = rates.get(route)
        if found is None:
            found = rates.get(_openapi(route) or "", self.sample_rate)
        return found

    def _share(self, key: tuple[Any, ...]) -> SharedProperties:
        """The properties of one combination in :meth:`build_request`'s key, made once."""
        *named, flags = key
        properties = dict(zip(_SHARED_KEY_NAMES, named, strict=True))
        template = properties["route"]
        route = properties["route"] = _openapi(template)
        properties["route_template"] = template if isinstance(template, str) else None
        properties["deprecated"] = is_deprecated(self._deprecated, properties["method"], route)
        status = properties["status_code"]
        properties["status_class"] = _STATUS_CLASSES.get(status // 100) if status else None
        # Credentials were presented and the app refused them: a failed authentication.
        properties["auth_failed"] = status in REFUSED_STATUSES and properties[
            "auth_method"
        ] not in (
            None,
            "none",
        )
        if flags:  # as PostHog's experiments read them
            properties.update((f"$feature/{flag}", value) for flag, value in flags)
            properties["$active_feature_flags"] = [flag for flag, value in flags if value]
        properties["schema_version"] = SCHEMA_VERSION
        properties["apiusage_version"] = __version__
        shared = SharedProperties(properties)
        if len(self._shared) >= _SHARED_LIMIT:
            self._shared.clear()
        self._shared[key] = shared
        return shared

    # ------------------------------------------------------------ standalone calls
    def build_journey(self, journey: JourneyEvent, into: Built) -> None:
        """A ``track()`` made outside any request: its identity is what the call named."""
        assert journey.distinct_id is not None
        identity = Identity(journey.distinct_id, organisation=journey.organisation)
        into.events.append(self._journey(journey, {}, identity, None))

    def build_identify(self, identity: Identity, timestamp: float, into: Built) -> None:
        """An ``identify()`` made outside any request: person and group properties only."""
        into.groups.extend(self._group_updates(identity, timestamp))
        if identity.person_properties or identity.organisation:
            properties = {"schema_version": SCHEMA_VERSION, "apiusage_version": __version__}
            person = self._person_update(identity, force=True)
            into.events.append(
                Event(
                    name="$set",
                    distinct_id=identity.distinct_id,
                    properties=properties,
                    timestamp=timestamp,
                    uuid=new_event_uuid(),
                    groups=self._groups_of(identity),
                    person_properties=person,
                )
            )

    # -------------------------------------------------------------------- helpers
    def _journey(
        self,
        journey: JourneyEvent,
        inherited: dict[str, Any],
        identity: Identity | None,
        record: RequestRecord | None,
    ) -> Event:
        if journey.distinct_id is not None:
            identity = Identity(
                journey.distinct_id,
                organisation=journey.organisation or (identity.organisation if identity else None),
            )
        elif journey.organisation is not None and identity is not None:
            identity = Identity(identity.distinct_id, organisation=journey.organisation)
        properties = {**_clean_properties(journey.properties), **inherited}
        return self._event(
            journey.name, properties, journey.timestamp, new_event_uuid(), identity, record
        )

    def _event(
        self,
        name: str,
        properties: dict[str, Any],
        timestamp: float,
        event_uuid: str,
        identity: Identity | None,
        record: RequestRecord | None,
    ) -> Event:
        properties["schema_version"] = SCHEMA_VERSION
        properties["apiusage_version"] = __version__
        if identity is None:
            # Anonymous: a personless event keyed by the request, so nothing is profiled.
            anonymous_id = record.request_id if record is not None else new_event_uuid()
            properties["organisation"] = None
            return Event(name, anonymous_id, properties, timestamp, event_uuid, personless=True)
        properties["organisation"] = identity.organisation
        return Event(
            name,
            identity.distinct_id,
            properties,
            timestamp,
            event_uuid,
            groups=self._groups_of(identity),
            person_properties=self._person_update(identity),
        )

    def _groups_of(self, identity: Identity) -> dict[str, str]:
        return {self.organisation_group: identity.organisation} if identity.organisation else {}

    def _person_update(self, identity: Identity, force: bool = False) -> dict[str, Any]:
        if not identity.person_properties:
            return {}
        properties = _clean_properties(identity.person_properties)
        fingerprint = _fingerprint(properties)
        if not force and self._persons_sent.get(identity.distinct_id) == fingerprint:
            return {}
        if len(self._persons_sent) >= _SEEN_LIMIT:
            self._persons_sent.clear()
        self._persons_sent[identity.distinct_id] = fingerprint
        return properties

    def _group_updates(self, identity: Identity, timestamp: float) -> list[GroupUpdate]:
        if not identity.organisation:
            return []
        previous = self._groups_sent.get(identity.organisation)
        if previous is not None and not identity.organisation_properties:
            return []  # the common case: known organisation, nothing new to say about it
        properties = _clean_properties(identity.organisation_properties)
        fingerprint = _fingerprint(properties)
        # Sent once per organisation; again only when it brings new, different properties.
        if previous is not None and (not properties or previous == fingerprint):
            return []
        if len(self._groups_sent) >= _SEEN_LIMIT:
            self._groups_sent.clear()
        self._groups_sent[identity.organisation] = fingerprint
        return [
            GroupUpdate(
                self.organisation_group,
                identity.organisation,
                properties,
                timestamp,
                new_event_uuid(),
                identity.distinct_id,
            )
        ]
