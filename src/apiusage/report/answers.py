"""The report's answers, as plain data with named fields (what ``--json`` prints)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from apiusage.report.delivery import DeliveryHealth

__all__ = [
    "PERCENTILES",
    "AuthUsage",
    "CallerVersions",
    "DeprecatedCaller",
    "DeprecatedEndpoint",
    "EndpointUsage",
    "FlagAnswerUsage",
    "Funnel",
    "FunnelStep",
    "JourneyEventCount",
    "LibraryUsage",
    "OrganisationFunnel",
    "OrganisationVersions",
    "UnderusedFeature",
    "UnusedEndpoint",
    "UsageSummary",
    "VersionPeriod",
    "VersionUsage",
    "nearest_rank",
]

#: The latency percentiles the report gives, by field name.
PERCENTILES = (("p50_ms", 0.50), ("p95_ms", 0.95))


def nearest_rank(count: int, share: float) -> int:
    """The nearest-rank position (1-based) of a percentile among ``count`` values."""
    return max(1, math.ceil(share * count))


@dataclass(slots=True)
class EndpointUsage:
    """One endpoint (method and route template) over the window."""

    method: str
    route: str
    requests: int = 0
    callers: int = 0
    organisations: int = 0
    client_errors: int = 0  # 4xx responses
    server_errors: int = 0  # 5xx responses
    p50_ms: float | None = None
    p95_ms: float | None = None
    last_seen: float | None = None
    #: Requests that named no caller (refused ones, 401/403, not counted): a route whose
    #: callers sign in should have none, or the app's caller is not reaching apiusage.
    anonymous: int = 0


@dataclass(slots=True)
class FlagAnswerUsage:
    """The requests served with one answer of one feature flag."""

    flag: str
    #: ``"true"``, ``"false"`` or the variant's name.
    answer: str
    requests: int = 0
    callers: int = 0
    organisations: int = 0
    client_errors: int = 0  # 4xx responses
    server_errors: int = 0  # 5xx responses
    p50_ms: float | None = None
    p95_ms: float | None = None


@dataclass(slots=True)
class UnusedEndpoint:
    """An endpoint of the app's route inventory that no request called in the window."""

    method: str  # ``*``: any method (the framework does not say)
    route: str
    deprecated: bool = False


@dataclass(slots=True)
class DeprecatedCaller:
    """One caller still calling a deprecated endpoint: who to tell before removing it."""

    organisation: str | None
    caller: str | None  # None: anonymous requests
    requests: int = 0
    last_seen: float | None = None
    #: "name version" of each client library seen, most used first.
    client_libraries: list[str] = field(default_factory=list)
    #: Requests on or after the endpoint's ``notice_since`` (0 when there is none).
    requests_after_notice: int = 0


@dataclass(slots=True)
class DeprecatedEndpoint:
    """A deprecated endpoint and who still calls it in the window (most requests first)."""

    method: str
    route: str
    requests: int = 0
    callers: int = 0
    organisations: int = 0
    last_seen: float | None = None
    by_caller: list[DeprecatedCaller] = field(default_factory=list)
    #: When callers were told (its ``deprecation_dates`` entry), or None.
    notice_since: float | None = None
    #: Requests on or after that date: who kept calling after the notice.
    requests_after_notice: int = 0


@dataclass(slots=True)
class FunnelStep:
    """One step of a journey: the callers who reached it, in order."""

    event: str
    callers: int
    #: Share of the previous step's callers who reached this one (None: no one to convert).
    conversion: float | None
    #: Share of the first step's callers who reached this one.
    conversion_from_start: float | None


@dataclass(slots=True)
class OrganisationFunnel:
    organisation: str
    steps: list[FunnelStep]


@dataclass(slots=True)
class Funnel:
    """A journey's steps, in order, overall and per organisation."""

    name: str
    events: list[str]
    #: Each caller's steps count when they happen within this many days of its first.
    conversion_days: float
    steps: list[FunnelStep]
    by_organisation: list[OrganisationFunnel]


@dataclass(slots=True)
class UnderusedFeature:
    """A feature (an endpoint, ``"GET /v1/x"``, or a journey event) that most organisations
    use and this one uses far less, or never."""

    organisation: str
    kind: str  # "endpoint" or "journey"
    feature: str
    requests: int
    #: The share of the organisation's requests and journey events that went to it.
    share: float
    #: The same share for the median organisation that uses it.
    median_share: float
    #: How many other organisations use it.
    organisations_using: int


@dataclass(slots=True)
class VersionPeriod:
    """Requests on one API version in one period (a day, or a week from its Monday), for
    one organisation or (``organisation`` None) for all."""

    period: str  # ISO date of the period's first day
    version: str
    requests: int
    organisation: str | None = None
    #: For all organisations: how many called this version in the period.
    organisations: int = 0


@dataclass(slots=True)
class VersionUsage:
    """One API version: its requests, and how many callers and organisations use it."""

    version: str
    requests: int = 0
    callers: int = 0
    organisations: int = 0


@dataclass(slots=True)
class OrganisationVersions:
    """The API versions one organisation called, with requests and last use of each."""

    organisation: str
    requests: dict[str, int] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    @property
    def versions(self) -> list[str]:
        return sorted(self.requests)


@dataclass(slots=True)
class CallerVersions:
    """A caller that called more than one API version in the window."""

    caller: str
    organisation: str | None
    versions: list[str]


@dataclass(slots=True)
class AuthUsage:
    """One authentication method: requests, callers and organisations using it."""

    auth_method: str
    requests: int = 0
    callers: int = 0
    organisations: int = 0
    #: Requests whose credentials the app refused (401, 403): failed logins.
    failed: int = 0


@dataclass(slots=True)
class LibraryUsage:
    """One client library version used by one organisation (``None``: anonymous callers)."""

    organisation: str | None
    client_library: str
    version: str | None
    requests: int = 0
    callers: int = 0
    last_seen: float | None = None


@dataclass(slots=True)
class JourneyEventCount:
    event: str
    events: int = 0
    callers: int = 0


@dataclass(slots=True)
class UsageSummary:
    """Everything ``apiusage report`` prints, with named fields (its ``--json`` form)."""

    #: The window, seconds since the epoch (None: open-ended), and the organisation asked for.
    since: float | None = None
    until: float | None = None
    organisation: str | None = None
    #: The caller asked for (a distinct id), or None.
    caller: str | None = None
    total_requests: int = 0
    journey_events: int = 0
    identified_callers: int = 0
    organisations: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    #: Most used first.
    endpoints: list[EndpointUsage] = field(default_factory=list)
    versions: list[VersionUsage] = field(default_factory=list)
    versions_by_organisation: list[OrganisationVersions] = field(default_factory=list)
    #: Callers (distinct ids) on several API versions at once.
    multi_version_callers: list[CallerVersions] = field(default_factory=list)
    auth_methods: list[AuthUsage] = field(default_factory=list)
    client_libraries: list[LibraryUsage] = field(default_factory=list)
    journey: list[JourneyEventCount] = field(default_factory=list)
    #: Features most organisations use and some use far less (see ``features.py``).
    underused_features: list[UnderusedFeature] = field(default_factory=list)
    #: Only when asked for (``over_time``): requests per version per period, overall and
    #: per organisation; the period is ``"day"`` or ``"week"``.
    adoption_period: str | None = None
    version_adoption: list[VersionPeriod] = field(default_factory=list)
    version_adoption_by_organisation: list[VersionPeriod] = field(default_factory=list)
    #: One per journey asked for (configured in ``journeys``, or given with ``--journey``).
    funnels: list[Funnel] = field(default_factory=list)
    #: From the latest route inventory in the store (None: the app sent none, so which
    #: endpoints are never called cannot be told).
    never_called: list[UnusedEndpoint] | None = None
    #: Every deprecated endpoint (by the inventory, the settings or ``--deprecated``),
    #: called or not.
    deprecated: list[DeprecatedEndpoint] = field(default_factory=list)
    #: Usage, errors and latency by feature-flag answer (see apiusage.report.flags).
    flags: list[FlagAnswerUsage] = field(default_factory=list)
    delivery: DeliveryHealth = field(default_factory=DeliveryHealth)

    @property
    def multi_version_organisations(self) -> list[OrganisationVersions]:
        """Organisations that called more than one API version in the window."""
        return [entry for entry in self.versions_by_organisation if len(entry.requests) > 1]

    def as_dict(self) -> dict[str, Any]:
        """Plain data with named fields (what ``--json`` prints)."""
        data: dict[str, Any] = orjson.loads(orjson.dumps(self))  # dataclasses, natively
        data["multi_version_organisations"] = [
            {"organisation": entry.organisation, "versions": entry.versions}
            for entry in self.multi_version_organisations
        ]
        data["delivery"]["dropped"] = self.delivery.dropped
        return data

    def to_json(self) -> bytes:
        """:meth:`as_dict` as indented JSON."""
        return orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2)
