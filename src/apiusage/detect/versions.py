"""Which API version a request asked for, and where that came from.

Sources are tried in the configured order: URL path (``/v1/``, ``/api/v2/``, ``/2024-06-01/``),
headers (``API-Version`` …), media type (``application/vnd.acme.v2+json`` or ``;version=2``),
query parameter. A value that is present but not a version is recorded as ``unparseable``
rather than dropped or allowed to raise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apiusage.request_view import RequestView

__all__ = ["UNPARSEABLE", "VersionDetector", "VersionResult", "normalise_version"]

UNPARSEABLE = "unparseable"

_PATH_VERSION = re.compile(r"/(v\d+(?:\.\d+){0,2}|\d{4}-\d{2}-\d{2})(?=/|$)", re.IGNORECASE)
# Bounded: a caller-supplied "version" of hundreds of digits is junk, not a version.
_NUMERIC = re.compile(r"v?(\d{1,8}(?:\.\d{1,8}){0,2})", re.IGNORECASE)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# Bounded repetition: an unbounded lazy run, tried at each of the thousands of
# "application/vnd." a hostile Accept header can repeat, scans quadratically.
_VENDOR_MEDIA = re.compile(
    r"application/vnd\.[\w.-]{0,100}?[.-]v(\d{1,8}(?:\.\d{1,8}){0,2})(?:\+\w+)?", re.IGNORECASE
)
_MEDIA_PARAM = re.compile(r";\s*(?:version|v)\s*=\s*\"?([\w.-]+)\"?", re.IGNORECASE)
_MAX_PATH_SEGMENTS = 4


@dataclass(frozen=True, slots=True)
class VersionResult:
    version: str | None
    source: str | None  # path | header:<name> | media_type | query:<name> | None


NO_VERSION = VersionResult(None, None)


def normalise_version(raw: str) -> str:
    """``2`` / ``v2`` / ``V2`` → ``v2``; ``2024-06-01`` stays; anything else → ``unparseable``."""
    value = raw.strip()
    numeric = _NUMERIC.fullmatch(value)
    if numeric:
        return "v" + numeric.group(1)
    date = _DATE.fullmatch(value)
    if date:
        year, month, day = (int(part) for part in date.groups())
        if 1 <= month <= 12 and 1 <= day <= 31 and 1990 <= year <= 2200:
            return value
    return UNPARSEABLE


def _version_in_path(path: str) -> VersionResult | None:
    head = "/".join(path.split("/", _MAX_PATH_SEGMENTS + 1)[: _MAX_PATH_SEGMENTS + 1])
    match = _PATH_VERSION.search(head)
    return VersionResult(normalise_version(match.group(1)), "path") if match else None


#: Route templates are few and fixed: their version is worked out once per template.
_version_in_template = lru_cache(maxsize=4096)(_version_in_path)


@dataclass(frozen=True, slots=True)
class VersionDetector:
    sources: tuple[str, ...] = ("path", "header", "media_type", "query")
    headers: tuple[str, ...] = ("api-version", "x-api-version", "accept-version")
    query_params: tuple[str, ...] = ("api-version", "api_version", "version")

    def detect(self, view: RequestView, route: str | None = None) -> VersionResult:
        for source in self.sources:
            found = _FINDERS[source](self, view, route)
            if found is not None:
                return found
        return NO_VERSION

    def reads_path(self, route: str | None) -> bool:
        """True when :meth:`detect` may read the raw path: path versions are looked for and
        the route template (if any) names no version."""
        return "path" in self.sources and (not route or _version_in_template(route) is None)

    def _from_path(self, view: RequestView, route: str | None) -> VersionResult | None:
        # Prefer the route template: a version segment there is the API's own, while the raw
        # path could hold a user-supplied value that merely looks like one.
        if route:
            found = _version_in_template(route)
            if found is not None:
                return found
        return _version_in_path(view.path) if view.path else None

    def _from_header(self, view: RequestView, route: str | None) -> VersionResult | None:
        for name in self.headers:
            value = view.header(name)
            if value is not None:
                return VersionResult(normalise_version(value), "header:" + name)
        return None

    def _from_media_type(self, view: RequestView, route: str | None) -> VersionResult | None:
        for header in ("accept", "content-type"):
            value = view.header(header)
            if not value or ("vnd." not in value and "=" not in value):
                continue
            vendor = _VENDOR_MEDIA.search(value)
            if vendor:
                return VersionResult(normalise_version(vendor.group(1)), "media_type")
            parameter = _MEDIA_PARAM.search(value)
            if parameter:
                return VersionResult(normalise_version(parameter.group(1)), "media_type")
        return None

    def _from_query(self, view: RequestView, route: str | None) -> VersionResult | None:
        if not view.has_query:
            return None
        for name in self.query_params:
            value = view.query_value(name)
            if value is not None:
                return VersionResult(normalise_version(value), "query:" + name)
        return None


_FINDERS: dict[str, Callable[[VersionDetector, RequestView, str | None], VersionResult | None]] = {
    "path": VersionDetector._from_path,
    "header": VersionDetector._from_header,
    "media_type": VersionDetector._from_media_type,
    "query": VersionDetector._from_query,
}
