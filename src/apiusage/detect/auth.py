"""Which authentication method a request used: only the method, never the credential."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apiusage.request_view import RequestView

__all__ = ["AuthDetector", "AuthMethod", "looks_like_jwt"]

# The values of the ``auth_method`` property (part of the event schema).
AuthMethod = str
JWT, BEARER, BASIC, API_KEY, SESSION, DIGEST, OTHER, NONE = (
    "jwt",
    "bearer",
    "basic",
    "api_key",
    "session",
    "digest",
    "other",
    "none",
)
_API_KEY_SCHEMES = frozenset({"token", "api-key", "apikey", "key", "x-api-key"})


def looks_like_jwt(token: str) -> bool:
    """A compact JWS: three base64url parts whose first decodes to a JSON header with ``alg``."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return False
    head = parts[0]
    try:
        decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        header = json.loads(decoded)
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and "alg" in header


@dataclass(frozen=True, slots=True)
class AuthDetector:
    """Finds the auth method (and, for identity hashing only, the credential) of a request."""

    api_key_headers: tuple[str, ...] = ("x-api-key", "api-key", "x-api-token")
    api_key_query_params: tuple[str, ...] = ("api_key", "apikey", "key")
    token_query_params: tuple[str, ...] = ("access_token", "token")
    session_cookies: tuple[str, ...] = ("sessionid", "session", "connect.sid", "_session_id")

    def detect(self, view: RequestView) -> tuple[AuthMethod, str | None]:
        """Return ``(method, where)``; ``where`` is ``header``, ``query``, ``cookie`` or None."""
        method, where, _ = self._find(view)
        return method, where

    def credential(self, view: RequestView) -> str | None:
        """The stable credential (API key, opaque token, basic user name), for keyed hashing.

        JWTs and sessions give None: they rotate, so they are no stable identity.
        """
        method, _, secret = self._find(view)
        return secret if method in (API_KEY, BEARER, BASIC) else None

    def _find(self, view: RequestView) -> tuple[AuthMethod, str | None, str | None]:
        found: tuple[AuthMethod, str | None, str | None] | None = view.memo.get("auth")
        if found is None:
            found = view.memo["auth"] = self._detect(view)
        return found

    def _detect(self, view: RequestView) -> tuple[AuthMethod, str | None, str | None]:
        authorization = view.header("authorization")
        if authorization:
            raw_scheme, _, raw_value = authorization.strip().partition(" ")
            scheme, token = raw_scheme.lower(), raw_value.strip()
            if scheme == "bearer":
                return (JWT if looks_like_jwt(token) else BEARER), "header", token or None
            if scheme == "basic":
                return BASIC, "header", _basic_user(token)
            if scheme in _API_KEY_SCHEMES:
                return API_KEY, "header", token or None
            if scheme == "digest":
                return DIGEST, "header", None
            # A single bare value (no scheme) is an API key; an unknown scheme is "other".
            return (OTHER, "header", None) if token else (API_KEY, "header", raw_scheme)
        for name in self.api_key_headers:
            header_value = view.header(name)
            if header_value:
                return API_KEY, "header", header_value.strip()
        if view.has_query:
            for name in self.api_key_query_params:
                query_value = view.query_value(name)
                if query_value:
                    return API_KEY, "query", query_value
            for name in self.token_query_params:
                query_value = view.query_value(name)
                if query_value:
                    method = JWT if looks_like_jwt(query_value) else BEARER
                    return method, "query", query_value
        if view.header("cookie"):
            for name in self.session_cookies:
                if view.cookie_value(name):
                    return SESSION, "cookie", None
        return NONE, None, None


def _basic_user(value: str) -> str | None:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, _, _ = decoded.partition(":")
    return user or None
