"""Telling callers a route is deprecated: the ``Deprecation`` (RFC 9745) and ``Sunset``
(RFC 8594) response headers, when the ``deprecation_headers`` setting asks for them.

Which routes are deprecated is known from the settings at once and from the route
inventory once the delivery worker has listed the routes (after the first request): the
worker hands the set over, and the request path only looks a route up in it.
"""

from __future__ import annotations

import datetime
import email.utils
import time
from collections.abc import Mapping

from apiusage.detect.routes import openapi_template
from apiusage.inventory import ANY_METHOD, configured_deprecations, parse_route_entry

__all__ = ["DeprecationNotices", "parse_date"]


def parse_date(text: str) -> float:
    """An ISO date or time (UTC unless it says) as seconds since the epoch; ValueError."""
    moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


class DeprecationNotices:
    """The headers each deprecated route answers with."""

    def __init__(
        self,
        deprecated_routes: tuple[str, ...],
        dates: Mapping[str, str],
        sunsets: Mapping[str, str],
    ) -> None:
        self._known_since = time.time()
        self._deprecated = configured_deprecations(deprecated_routes)
        self._dates = {parse_route_entry(entry): parse_date(day) for entry, day in dates.items()}
        self._sunsets = {
            parse_route_entry(entry): email.utils.formatdate(parse_date(day), usegmt=True)
            for entry, day in sunsets.items()
        }

    def update(self, deprecated: frozenset[tuple[str, str]]) -> None:
        """The worker learned the route inventory's deprecated routes (one reference swap,
        which the request path reads without a lock)."""
        self._deprecated = frozenset(deprecated) | self._deprecated

    def headers_for(self, method: str, template: str | None) -> list[tuple[str, str]]:
        """``[("Deprecation", "@…"), ("Sunset", "…")]`` for a deprecated route, else []."""
        deprecated = self._deprecated
        if template is None or not deprecated:
            return []
        route = openapi_template(template)
        key = (method, route) if (method, route) in deprecated else (ANY_METHOD, route)
        if key not in deprecated:
            return []
        since = self._dates.get(key, self._dates.get((ANY_METHOD, route), self._known_since))
        headers = [("Deprecation", f"@{int(since)}")]
        sunset = self._sunsets.get(key) or self._sunsets.get((ANY_METHOD, route))
        if sunset is not None:
            headers.append(("Sunset", sunset))
        return headers
