"""Hostile requests: what a scanner, a broken client or an attacker sends to a public API.

Each request is made of raw bytes, as a server hands them over: undecodable cookies and
headers, credentials of every shape (and of none), oversized and repetitive values that
invite super-linear parsing, versions in every place, absurd paths and query strings.
Seeded, so a failure can be replayed.
"""

from __future__ import annotations

import base64
import io
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HostileRequest", "asgi_scope", "hostile_requests", "wsgi_environ"]

#: About what servers accept in one header line (h11 and gunicorn: 8-16 KiB).
_LONG = 8000


@dataclass
class HostileRequest:
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


def _junk(rng: random.Random, size: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(size))


def _repeat(piece: str, size: int = _LONG) -> bytes:
    return (piece * (size // max(1, len(piece)) + 1))[:size].encode("latin-1")


def _header_values(rng: random.Random) -> list[tuple[bytes, bytes]]:
    choices: list[tuple[bytes, bytes]] = [
        (b"cookie", b"session=" + _junk(rng, 40)),  # not UTF-8
        (b"cookie", _repeat("a=b; ")),
        (b"cookie", b"sessionid=\xff\xfe; csrftoken=" + _junk(rng, 20)),
        (b"authorization", b"Bearer " + _repeat("eyJ.")),
        (b"authorization", b"Bearer " + _junk(rng, 60)),
        (b"authorization", b"Basic " + base64.b64encode(_junk(rng, 30))),
        (b"authorization", b"Basic !!!not-base64!!!"),
        (b"authorization", b"Digest " + _repeat('realm="x", ', 2000)),
        (b"authorization", _junk(rng, 30)),
        (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9." + _junk(rng, 30) + b".sig"),
        (b"x-api-key", _junk(rng, 50)),
        (b"x-api-key", _repeat("k", 4000)),
        (b"user-agent", _junk(rng, 80)),
        (b"user-agent", _repeat("lib/1.", _LONG)),
        (b"user-agent", b"curl/" + b"9" * 5000),
        (b"user-agent", _repeat("Mozilla/5.0 ")),
        (b"accept", _repeat("application/vnd.x")),
        (b"accept", _repeat("application/vnd.acme.v")),
        (b"accept", b"application/json; version=" + _repeat("1.")),
        (b"accept", _repeat("text/html;q=0.9, ")),
        (b"content-type", b"application/vnd.acme." + _repeat("a.") + b"v2+json"),
        (b"api-version", _junk(rng, 30)),
        (b"api-version", b"9" * 4000),
        (b"api-version", b"2024-13-45"),
        (b"x-api-version", _repeat("v1.")),
        (b"x-caller", _junk(rng, 30)),
        (b"x-caller", _repeat("caller-", 5000)),
        (b"x-forwarded-for", _repeat("10.0.0.1, ")),
        (b"host", _junk(rng, 20)),
        (b"content-length", b"-1"),
        (b"content-length", b"99999999999999999999999"),
        (b"transfer-encoding", b"chunked, " + _junk(rng, 10)),
        (_junk(rng, 12).replace(b":", b"").replace(b"\n", b"") or b"x", _junk(rng, 40)),
    ]
    return rng.sample(choices, rng.randrange(1, 6))


def _path(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return "/" + "/".join("v" + "9" * rng.randrange(1, 50) for _ in range(rng.randrange(1, 30)))
    if kind == 1:
        return "/" + "a/" * rng.randrange(1, 2000)
    if kind == 2:
        return "/v1/items/" + _junk(rng, 30).decode("latin-1").replace("?", "").replace("#", "")
    if kind == 3:
        return "/" + "%" * rng.randrange(1, 500)
    if kind == 4:
        return "/2024-06-01/" + "x" * rng.randrange(1, 5000)
    if kind == 5:
        return "/v1/users/\udcff"  # a surrogate, as a server decoding with surrogateescape
    if kind == 6:
        return "//" + "../" * rng.randrange(1, 300)
    if kind == 7:
        return "/v2/" + "\u202e" * 50 + "items"
    return "/v1/items/" + str(rng.randrange(10**6))


def _query(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return b""
    if kind == 1:
        return _repeat("version=1&", _LONG)
    if kind == 2:
        return b"api_key=" + _junk(rng, 40).replace(b"&", b"").replace(b"#", b"")
    if kind == 3:
        return b"version=" + b"9" * 5000
    if kind == 4:
        return _repeat("a&", _LONG)
    return b"access_token=" + _repeat("t", 3000) + b"&api-version=2024-06-01"


def hostile_requests(count: int, seed: int = 2026) -> list[HostileRequest]:
    """``count`` hostile requests, the same ones for the same seed."""
    rng = random.Random(seed)
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND", "G\xc9T"]
    return [
        HostileRequest(
            method=rng.choice(methods),
            path=_path(rng),
            query=_query(rng),
            headers=_header_values(rng),
            body=_junk(rng, rng.choice([0, 0, 10, 5000])),
        )
        for _ in range(count)
    ]


def asgi_scope(request: HostileRequest) -> dict[str, Any]:
    """The ASGI scope a server would hand over for ``request``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": request.query,
        "headers": request.headers,
        "client": ("203.0.113.9", 50000),
        "server": ("testserver", 80),
    }


def wsgi_environ(request: HostileRequest) -> dict[str, Any]:
    """The WSGI environ a server would hand over for ``request`` (bytes as latin-1)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": request.query.decode("latin-1"),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.9",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.url_scheme": "http",
    }
    for name, value in request.headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        environ[key] = value.decode("latin-1")
    return environ
