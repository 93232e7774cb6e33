"""A framework-neutral, read-only view of a request for identity resolvers and detectors.

Everything is parsed lazily (with werkzeug), so a resolver that only reads
``view.state`` pays nothing for headers or query parsing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from werkzeug.datastructures import EnvironHeaders, Headers, MultiDict
from werkzeug.sansio.http import parse_cookie

from apiusage.detect.routes import asgi_route_template
from apiusage.record import RequestRecord

__all__ = ["RequestView", "state_of"]


@lru_cache(maxsize=256)
def _ascii_name(name: str) -> bytes:
    return name.lower().encode("latin-1")


@lru_cache(maxsize=256)
def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class RequestView:
    """What a resolver sees: method, route, headers, query, cookies, client, native request.

    Parsed parts are cached in slots by hand: ``functools.cached_property`` takes a lock
    on every first access in Python 3.11, and the worker makes one view per request.
    """

    __slots__ = (
        "_cookies",
        "_header_map_cache",
        "_headers",
        "_memo",
        "_query",
        "_record",
        "_route_looked_up",
    )

    def __init__(self, record: RequestRecord) -> None:
        self._record = record
        self._route_looked_up = False
        self._header_map_cache: dict[bytes, bytes] | None = None
        self._memo: dict[str, Any] | None = None
        self._headers: Headers | None = None
        self._query: MultiDict[str, str] | None = None
        self._cookies: dict[str, str] | None = None

    @property
    def method(self) -> str:
        return self._record.method

    @property
    def route(self) -> str | None:
        """The route template (``/v1/users/{user_id}``), or None when no route matched."""
        record = self._record
        is_asgi_scope = "type" in record.scope
        if record.route is None and is_asgi_scope and not self._route_looked_up:
            self._route_looked_up = True
            record.route = asgi_route_template(
                record.scope, record.root_path, record.status, record.path
            )
        return record.route

    @property
    def path(self) -> str:
        """The raw path. Use it for matching only: it may hold ids and secrets."""
        return self._record.path

    @property
    def status(self) -> int | None:
        return self._record.status

    @property
    def native(self) -> Any:
        """The framework's request object when an adapter supplied one, else the scope/environ."""
        record = self._record
        return record.native if record.native is not None else record.scope

    @property
    def scope(self) -> Any:
        """The ASGI scope or WSGI environ."""
        return self._record.scope

    def header(self, name: str) -> str | None:
        """One header by lower-case name (the first, if repeated): cheaper than ``headers``."""
        raw = self._record.raw_headers
        if isinstance(raw, dict):  # a WSGI environ, or Django's META
            key = _environ_key(name)
            value = raw.get(key)
            return value if value is None or isinstance(value, str) else str(value)
        found = self._header_map_cache
        if found is None:
            # ASGI header names are lower-case bytes (the spec says so); only the values
            # asked for are decoded. reversed(): the first occurrence wins.
            found = self._header_map_cache = dict(reversed(raw))
        value = found.get(_ascii_name(name))
        return None if value is None else value.decode("latin-1")

    @property
    def memo(self) -> dict[str, Any]:
        """Results detectors share for this request, so each is worked out once."""
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        return memo

    @property
    def headers(self) -> Headers:
        """Request headers, case-insensitive (a werkzeug ``Headers``)."""
        headers = self._headers
        if headers is None:
            raw = self._record.raw_headers
            if isinstance(raw, dict):  # a WSGI environ, or Django's META
                headers = EnvironHeaders(raw)
            else:
                headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw])
            self._headers = headers
        return headers

    @property
    def has_query(self) -> bool:
        """True when the request has a query string (cheaper than parsing ``query``)."""
        return bool(self._record.query_string)

    @property
    def query(self) -> MultiDict[str, str]:
        query = self._query
        if query is None:
            raw = self._record.query_string
            text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
            query = self._query = MultiDict(parse_qsl(text, keep_blank_values=True))
        return query

    def query_value(self, name: str) -> str | None:
        """The first value of one query parameter (percent-decoded), or None.

        Found by a scan of the raw query string for ``name=``, not by parsing every field:
        a hostile query string carries thousands of them. The name is matched as written.
        """
        if self._query is not None:
            return self._query.get(name)
        raw = self._record.query_string
        if not raw:
            return None
        text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        value = _field(text, name, "&")
        return None if value is None else unquote_plus(value, errors="replace")

    def cookie_value(self, name: str) -> str | None:
        """One cookie's value, or None; a scan of the header rather than parsing it all."""
        if self._cookies is not None:
            return self._cookies.get(name)
        header = self.header("cookie")
        if not header:
            return None
        value = _field(header, name, ";")
        return None if value is None else value.strip().strip('"')

    @property
    def cookies(self) -> dict[str, str]:
        cookies = self._cookies
        if cookies is None:
            header = self.header("cookie")
            cookies = self._cookies = dict(parse_cookie(_utf8_text(header))) if header else {}
        return cookies

    @property
    def client_address(self) -> str | None:
        scope = self._record.scope
        if isinstance(scope, dict) and "REMOTE_ADDR" in scope:
            address = scope.get("REMOTE_ADDR")
            return str(address) if address else None
        client = scope.get("client") if isinstance(scope, dict) else None
        return str(client[0]) if client else None

    @property
    def state(self) -> Any:
        """What the app attached to the request: ``request.state`` (ASGI), the environ (WSGI),
        or the adapter's equivalent (Flask ``g``)."""
        return state_of(self._record)

    def __repr__(self) -> str:
        return f"<RequestView {self.method} {self.route or '(no route)'}>"


def _field(text: str, name: str, separator: str) -> str | None:
    """The value of the first ``name=value`` field of ``text`` (fields split by
    ``separator``, spaces allowed before a name), found with ``str.find``: linear, and
    fast on the hostile strings of thousands of fields."""
    key = name + "="
    start = 0
    while True:
        at = text.find(key, start)
        if at < 0:
            return None
        before = at - 1
        while before >= 0 and text[before] == " ":
            before -= 1
        if before < 0 or text[before] == separator:
            end = text.find(separator, at + len(key))
            return text[at + len(key) : end if end >= 0 else len(text)]
        start = at + 1


def _utf8_text(header: str) -> str:
    """A header's bytes (held as latin-1 text, as WSGI does) read as UTF-8, never raising:
    undecodable bytes become U+FFFD (a cookie need not be UTF-8, but the event must come)."""
    return header.encode("latin-1", "replace").decode("utf-8", "replace")


def state_of(record: RequestRecord) -> Any:
    """The request state of a record: set by an adapter, else the ASGI scope's ``state``."""
    if record.state is not None:
        return record.state
    scope = record.scope
    return scope.get("state") if record.transport == "asgi" and type(scope) is dict else None
