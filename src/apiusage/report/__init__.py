"""Answers from the embedded local store: which endpoints, versions, auth methods and
client libraries are used, by whom, over a time window (``apiusage report``)."""

from __future__ import annotations

from apiusage.report.answers import (
    AuthUsage,
    EndpointUsage,
    JourneyEventCount,
    LibraryUsage,
    OrganisationVersions,
    UsageSummary,
    VersionUsage,
)
from apiusage.report.delivery import DeliveryHealth, delivery_health, format_delivery
from apiusage.report.reading import UnknownJourneyStep, summarise
from apiusage.report.text import format_summary

__all__ = [
    "AuthUsage",
    "DeliveryHealth",
    "EndpointUsage",
    "JourneyEventCount",
    "LibraryUsage",
    "OrganisationVersions",
    "UnknownJourneyStep",
    "UsageSummary",
    "VersionUsage",
    "delivery_health",
    "format_delivery",
    "format_summary",
    "summarise",
]
