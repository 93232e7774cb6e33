"""Turns request records into events. Runs in the delivery worker, never on the request path."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apiusage import __version__
from apiusage.detect.auth import AuthDetector
from apiusage.detect.user_agent import parse_client_library
from apiusage.detect.versions import VersionDetector
from apiusage.events import SCHEMA_VERSION, Event, GroupUpdate
from apiusage.identity import Identity
from apiusage.record import JourneyEvent, RequestRecord
from apiusage.request_view import RequestView

__all__ = ["Built", "EventBuilder"]

_SEEN_LIMIT = 100_000
_MAX_PROPERTY_KEYS = 100


@dataclass(slots=True)
class Built:
    """What one record (or standalone call) turned into."""

    events: list[Event] = field(default_factory=list)
    groups: list[GroupUpdate] = field(default_factory=list)
    sampled_out: bool = False


def _fingerprint(properties: Mapping[str, Any]) -> str:
    text = json.dumps(properties, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _status_class(status: int | None) -> str | None:
    return f"{status // 100}xx" if status else None


def _clean_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """User-supplied properties, made JSON-safe and bounded in size."""
    cleaned: dict[str, Any] = {}
    for key, value in list(properties.items())[:_MAX_PROPERTY_KEYS]:
        if value is None or isinstance(value, (str, int, float, bool)):
            cleaned[str(key)] = value
        else:
            cleaned[str(key)] = json.loads(json.dumps(value, default=str))
    return cleaned


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
    ) -> None:
        self.event_name = event_name
        self.organisation_group = organisation_group
        self.framework = framework
        self.versions = versions
        self.auth = auth
        self.sample_rate = sample_rate
        self.route_sample_rates = dict(route_sample_rates or {})
        self._groups_sent: dict[str, str] = {}
        self._persons_sent: dict[str, str] = {}

    def forget_sent(self) -> None:
        """Forget which groups/persons were sent (after a fork, the child starts fresh)."""
        self._groups_sent.clear()
        self._persons_sent.clear()

    # ------------------------------------------------------------------ requests
    def build_request(self, record: RequestRecord, view: RequestView | None = None) -> Built:
        view = view if view is not None else RequestView(record)
        route = view.route
        identity = record.identity
        built = Built()
        rate = self.route_sample_rates.get(route or "", self.sample_rate)
        keep_request = rate >= 1.0 or random.random() < rate
        version = self.versions.detect(view, route)
        if keep_request:
            auth_method, auth_location = self.auth.detect(view)
            if record.auth_method is not None:
                auth_method = record.auth_method
            library, library_version = parse_client_library(view.header("user-agent"))
            duration_ns = record.duration_ns or 0
            properties: dict[str, Any] = {
                "method": record.method,
                "route": route,
                "status_code": record.status,
                "status_class": _status_class(record.status),
                "duration_ms": round(duration_ns / 1e6, 3),
                "request_bytes": record.request_bytes,
                "response_bytes": record.response_bytes,
                "api_version": version.version,
                "api_version_source": version.source,
                "auth_method": auth_method,
                "auth_location": auth_location,
                "client_library": library,
                "client_library_version": library_version,
                "exception": record.exception,
                "client_disconnected": record.client_disconnected,
                "framework": record.framework or self.framework,
                "transport": record.transport,
                "request_id": record.request_id,
                # Multiply counts by 1/sample_rate to estimate the true volume.
                "sample_rate": rate,
            }
            built.events.append(
                self._event(
                    self.event_name,
                    properties,
                    record.started_at,
                    record.request_id,
                    identity,
                    record,
                )
            )
        else:
            built.sampled_out = True
        for journey in record.journey or ():
            inherited = {
                "request_id": record.request_id,
                "route": route,
                "method": record.method,
                "api_version": version.version,
            }
            built.events.append(self._journey(journey, inherited, identity, record))
        if identity is not None:
            built.groups.extend(self._group_updates(identity, record.started_at))
        return built

    # ------------------------------------------------------------ standalone calls
    def build_journey(self, journey: JourneyEvent) -> Built:
        """A ``track()`` made outside any request: its identity is what the call named."""
        assert journey.distinct_id is not None
        identity = Identity(journey.distinct_id, organisation=journey.organisation)
        return Built(events=[self._journey(journey, {}, identity, None)])

    def build_identify(self, identity: Identity, timestamp: float) -> Built:
        """An ``identify()`` made outside any request: person and group properties only."""
        built = Built(groups=self._group_updates(identity, timestamp))
        if identity.person_properties or identity.organisation:
            properties = {"schema_version": SCHEMA_VERSION, "apiusage_version": __version__}
            person = self._person_update(identity, force=True)
            built.events.append(
                Event(
                    name="$set",
                    distinct_id=identity.distinct_id,
                    properties=properties,
                    timestamp=timestamp,
                    uuid=str(uuid.uuid4()),
                    groups=self._groups_of(identity),
                    person_properties=person,
                )
            )
        return built

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
            journey.name, properties, journey.timestamp, str(uuid.uuid4()), identity, record
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
            anonymous_id = record.request_id if record is not None else str(uuid.uuid4())
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
        properties = _clean_properties(identity.organisation_properties)
        fingerprint = _fingerprint(properties)
        previous = self._groups_sent.get(identity.organisation)
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
                str(uuid.uuid4()),
                identity.distinct_id,
            )
        ]
