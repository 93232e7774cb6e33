"""Detectors, as pure functions of a request: API version, auth method, client library."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from apiusage.detect.auth import AuthDetector, looks_like_jwt
from apiusage.detect.routes import openapi_template
from apiusage.detect.user_agent import parse_client_library
from apiusage.detect.versions import UNPARSEABLE, VersionDetector, normalise_version
from apiusage.record import RequestRecord
from apiusage.request_view import RequestView
from tests.support.apps import BASIC, JWT


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def view(
    path: str = "/",
    headers: dict[str, str] | None = None,
    query: str = "",
    *,
    route: str | None = None,
    transport: str = "asgi",
) -> RequestView:
    """A view of a synthetic request, as the worker would see it."""
    headers = headers or {}
    raw: Any
    scope: dict[str, Any]
    if transport == "asgi":
        raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ]
        scope = {"type": "http", "path": path, "headers": raw, "query_string": query.encode()}
    else:
        scope = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "GET"}
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            scope[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
        raw = scope
    record = RequestRecord(
        transport=transport,
        method="GET",
        path=path,
        query_string=query.encode() if transport == "asgi" else query,
        raw_headers=raw,
        scope=scope,
    )
    record.route = route
    return RequestView(record)


# --------------------------------------------------------------------------- versions
VERSION_CASES = [
    # (path, headers, query, expected version, expected source)
    ("/v1/users", {}, "", "v1", "path"),
    ("/api/v2/users/7", {}, "", "v2", "path"),
    ("/2024-06-01/orders", {}, "", "2024-06-01", "path"),
    ("/V3/things", {}, "", "v3", "path"),
    ("/v1.2/things", {}, "", "v1.2", "path"),
    ("/api/v4", {}, "", "v4", "path"),
    ("/users", {"API-Version": "2"}, "", "v2", "header:api-version"),
    ("/users", {"X-API-Version": "v3"}, "", "v3", "header:x-api-version"),
    ("/users", {"Accept-Version": "2024-01-15"}, "", "2024-01-15", "header:accept-version"),
    ("/users", {"Accept": "application/vnd.acme.v2+json"}, "", "v2", "media_type"),
    ("/users", {"Accept": "application/vnd.github.v3+json"}, "", "v3", "media_type"),
    ("/users", {"Accept": "application/json; version=3"}, "", "v3", "media_type"),
    ("/users", {"Content-Type": "application/json;version=2.1"}, "", "v2.1", "media_type"),
    ("/users", {}, "api-version=2", "v2", "query:api-version"),
    ("/users", {}, "version=v4&x=1", "v4", "query:version"),
    ("/users", {}, "api_version=2023-10-01", "2023-10-01", "query:api_version"),
    # present but not a version: recorded as unparseable, never dropped or raised
    ("/users", {"API-Version": "latest"}, "", UNPARSEABLE, "header:api-version"),
    ("/users", {"X-API-Version": ""}, "", UNPARSEABLE, "header:x-api-version"),
    ("/users", {"API-Version": "2024-13-45"}, "", UNPARSEABLE, "header:api-version"),
    ("/2024-13-45/orders", {}, "", UNPARSEABLE, "path"),
    ("/users", {"Accept": "application/json; version=beta"}, "", UNPARSEABLE, "media_type"),
    ("/users", {}, "version=banana", UNPARSEABLE, "query:version"),
    # no version anywhere
    ("/users", {}, "", None, None),
    ("/users", {"Accept": "application/json"}, "", None, None),
    ("/v1beta/users", {}, "", None, None),
    ("/a/b/c/d/v1/users", {}, "", None, None),  # only the first segments count
]


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("path", "headers", "query", "version", "source"),
    VERSION_CASES,
    ids=[f"{case[0]}|{case[1]}|{case[2]}" for case in VERSION_CASES],
)
def test_api_version(
    transport: str,
    path: str,
    headers: dict[str, str],
    query: str,
    version: str | None,
    source: str | None,
) -> None:
    result = VersionDetector().detect(view(path, headers, query, transport=transport))
    assert (result.version, result.source) == (version, source)


def test_route_template_is_preferred_to_the_raw_path() -> None:
    # The raw path holds a user-supplied segment that merely looks like a version.
    request = view("/files/v9/readme", route="/v1/files/{name:path}")
    assert VersionDetector().detect(request, "/v1/files/{name:path}").version == "v1"


SOURCES = {
    "path": ("v1", "path"),
    "header": ("v2", "header:api-version"),
    "media_type": ("v3", "media_type"),
    "query": ("v4", "query:version"),
}


@pytest.mark.parametrize(
    "order",
    [
        ("path", "header", "media_type", "query"),
        ("header", "path", "media_type", "query"),
        ("media_type", "query", "header", "path"),
        ("query", "media_type"),
        ("header",),
    ],
)
def test_configured_source_order_decides(order: tuple[str, ...]) -> None:
    request = view(
        "/v1/users",
        {"API-Version": "2", "Accept": "application/vnd.acme.v3+json"},
        "version=4",
    )
    result = VersionDetector(sources=order).detect(request)  # type: ignore[arg-type]
    assert (result.version, result.source) == SOURCES[order[0]]


def test_only_configured_sources_are_consulted() -> None:
    request = view("/v1/users", {"API-Version": "2"})
    result = VersionDetector(sources=("query",)).detect(request)
    assert (result.version, result.source) == (None, None)


def test_configured_header_and_query_names() -> None:
    detector = VersionDetector(headers=("x-acme-version",), query_params=("v",))
    assert detector.detect(view("/users", {"X-Acme-Version": "7"})).version == "v7"
    assert detector.detect(view("/users", {"API-Version": "7"})).version is None
    assert detector.detect(view("/users", query="v=8")).source == "query:v"


@pytest.mark.parametrize(
    "raw",
    ["", " ", "v", "vv1", "1.2.3.4", "\x00", "2024-06", "v1; drop table", "é", "9" * 300],
)
def test_junk_versions_are_unparseable_not_errors(raw: str) -> None:
    assert normalise_version(raw) == UNPARSEABLE
    result = VersionDetector().detect(view("/users", {"API-Version": raw}))
    assert (result.version, result.source) == (UNPARSEABLE, "header:api-version")
    for query in (f"version={raw}", "version=%ff%00", "version"):
        assert VersionDetector().detect(view("/users", query=query)).version in (UNPARSEABLE, None)


# ------------------------------------------------------------------------------ auth
AUTH_CASES = [
    # (headers, query, expected method, expected location)
    ({"Authorization": f"Bearer {JWT}"}, "", "jwt", "header"),
    ({"Authorization": "Bearer sk_live_0123456789abcdef"}, "", "bearer", "header"),
    ({"Authorization": "bearer a.b.c"}, "", "bearer", "header"),  # dotted, but not a JWT
    ({"Authorization": BASIC}, "", "basic", "header"),
    ({"Authorization": "Token 9944b09199c62bcf9418ad846dd0e4bb"}, "", "api_key", "header"),
    ({"Authorization": "Api-Key abc123"}, "", "api_key", "header"),
    ({"Authorization": "abc123rawkey"}, "", "api_key", "header"),
    ({"Authorization": 'Digest username="bob", realm="api"'}, "", "digest", "header"),
    ({"X-API-Key": "abc123"}, "", "api_key", "header"),
    ({"Api-Key": "abc123"}, "", "api_key", "header"),
    ({"X-API-Token": "abc123"}, "", "api_key", "header"),
    ({}, "api_key=abc123", "api_key", "query"),
    ({}, "apikey=abc123", "api_key", "query"),
    ({}, f"access_token={JWT}", "jwt", "query"),
    ({}, "token=opaque-token", "bearer", "query"),
    ({"Cookie": "sessionid=abc; theme=dark"}, "", "session", "cookie"),
    ({"Cookie": "connect.sid=s%3Aabc"}, "", "session", "cookie"),
    ({"Cookie": "theme=dark"}, "", "none", None),
    ({}, "page=2", "none", None),
    ({}, "", "none", None),
    # Authorization wins over an API key header, a header over the query
    ({"Authorization": BASIC, "X-API-Key": "abc"}, "api_key=def", "basic", "header"),
    ({"X-API-Key": "abc"}, "access_token=def", "api_key", "header"),
]


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("headers", "query", "method", "location"),
    AUTH_CASES,
    ids=[f"{sorted(case[0])}|{case[1][:20]}" for case in AUTH_CASES],
)
def test_auth_method(
    transport: str, headers: dict[str, str], query: str, method: str, location: str | None
) -> None:
    assert AuthDetector().detect(view("/", headers, query, transport=transport)) == (
        method,
        location,
    )


def test_api_key_header_and_query_names_are_configurable() -> None:
    detector = AuthDetector(api_key_headers=("x-acme-key",), api_key_query_params=("acme_key",))
    assert detector.detect(view("/", {"X-Acme-Key": "k"})) == ("api_key", "header")
    assert detector.detect(view("/", query="acme_key=k")) == ("api_key", "query")
    # The defaults no longer apply once replaced.
    assert detector.detect(view("/", {"X-API-Key": "k"})) == ("none", None)
    assert detector.detect(view("/", query="api_key=k")) == ("none", None)


def test_session_cookie_names_are_configurable() -> None:
    detector = AuthDetector(session_cookies=("acme_sess",))
    assert detector.detect(view("/", {"Cookie": "acme_sess=1"})) == ("session", "cookie")
    assert detector.detect(view("/", {"Cookie": "sessionid=1"})) == ("none", None)


@pytest.mark.parametrize(
    ("headers", "query", "credential"),
    [
        ({"Authorization": "Bearer opaque-1"}, "", "opaque-1"),
        ({"Authorization": BASIC}, "", "alice"),  # the user name only, never the password
        ({"Authorization": "Token tok-9"}, "", "tok-9"),
        ({"X-API-Key": " key-2 "}, "", "key-2"),
        ({}, "api_key=key-3", "key-3"),
        ({"Authorization": f"Bearer {JWT}"}, "", None),  # JWTs rotate: no stable identity
        ({"Cookie": "sessionid=abc"}, "", None),
        ({"Authorization": "Basic !!!notbase64"}, "", None),
        ({}, "", None),
    ],
)
def test_credential_for_identity_hashing(
    headers: dict[str, str], query: str, credential: str | None
) -> None:
    assert AuthDetector().credential(view("/", headers, query)) == credential


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (JWT, True),
        ("a.b.c", False),
        ("only.two", False),
        (".x.y", False),
        (_b64url(b'{"typ":"JWT"}') + ".e30.sig", False),  # no alg
        (_b64url(b"[1,2]") + ".e30.sig", False),
        ("", False),
    ],
)
def test_looks_like_jwt(token: str, expected: bool) -> None:
    assert looks_like_jwt(token) is expected


# ---------------------------------------------------------------------- user agents
USER_AGENTS = [
    ("python-requests/2.32.3", ("python-requests", "2.32")),
    ("python-httpx/0.28.1", ("python-httpx", "0.28")),
    ("curl/8.5.0", ("curl", "8.5")),
    ("Go-http-client/1.1", ("go-http-client", "1.1")),
    ("Go-http-client/2.0", ("go-http-client", "2.0")),
    ("okhttp/4.12.0", ("okhttp", "4.12")),
    ("Python/3.11 aiohttp/3.9.5", ("aiohttp", "3.9")),
    ("Python-urllib/3.11", ("python-urllib", "3.11")),
    ("PostmanRuntime/7.39.0", ("postman", "7.39")),
    ("axios/1.7.2", ("axios", "1.7")),
    ("Java-http-client/21.0.2", ("java-http-client", "21.0")),
    ("insomnia/9", ("insomnia", "9")),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        ("browser", None),
    ),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0", ("browser", None)),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        ("browser", None),
    ),
    ("", (None, None)),
    (None, (None, None)),
    ("!!!", ("other", None)),
]


@pytest.mark.parametrize(
    ("user_agent", "expected"), USER_AGENTS, ids=[str(ua)[:30] for ua, _ in USER_AGENTS]
)
def test_client_library(user_agent: str | None, expected: tuple[str | None, str | None]) -> None:
    assert parse_client_library(user_agent) == expected


def test_client_library_keeps_no_free_text() -> None:
    library, version = parse_client_library("curl/8.5.0 (contact: alice@example.com; secret=xyz)")
    assert (library, version) == ("curl", "8.5")
    long_name, _ = parse_client_library("a" * 500 + "/1.0")
    assert long_name is None or len(long_name) <= 64


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("/items/<int:item_id>", "/items/{item_id}"),  # Flask, Django path()
        ("api/users/<pk>/", "/api/users/{pk}/"),  # Django (no leading slash), a DRF regex
        ("/files/<path:rest>/raw", "/files/{rest}/raw"),
        ("/items/{item_id:int}", "/items/{item_id}"),  # Starlette, Falcon
        ("/files/{path:path}", "/files/{path}"),
        ("/orgs/{org}/<int:n>", "/orgs/{org}/{n}"),
        ("/v1/projects", "/v1/projects"),
        ("/", "/"),
    ],
)
def test_route_templates_are_written_the_openapi_way(template: str, expected: str) -> None:
    assert openapi_template(template) == expected
