"""Who made a request: the :class:`Identity` type, built-in resolvers and resolver chains.

A resolver is any callable, sync or async, that takes a :class:`~apiusage.RequestView`
and returns an :class:`Identity`, a distinct id string, or ``None`` (not known). It runs
after the handler, once the response has been sent, so whatever the application's own
authentication attached to the request is visible, and the caller never waits for it.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Union

from apiusage.attached import identity_from_state
from apiusage.caller import MAX_ID_LENGTH, REFUSED_STATUSES, Identity, as_identity
from apiusage.detect.auth import AuthDetector
from apiusage.request_view import RequestView

__all__ = [
    "Identity",
    "KeyedHasher",
    "Resolver",
    "ResolverChain",
    "StateResolver",
    "from_api_key",
    "from_header",
    "from_state",
    "identity_from_state",
]

ResolverResult = Union["Identity", str, None]
Resolver = Callable[[RequestView], ResolverResult | Awaitable[ResolverResult]]

_HASH_CACHE_SIZE = 4096


class KeyedHasher:
    """HMAC-SHA256 of credentials: stable across restarts, useless without the secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the identity secret must be at least 16 bytes")
        self._secret = secret
        # The same few keys call again and again: hash each once (kept in this process only).
        self._cache: dict[tuple[str, str], str] = {}

    def __call__(self, value: str, prefix: str = "key_") -> str:
        cache_key = (value, prefix)
        hashed = self._cache.get(cache_key)
        if hashed is None:
            digest = hmac.new(self._secret, value.encode("utf-8"), hashlib.sha256).hexdigest()
            hashed = prefix + digest[:32]
            if len(self._cache) >= _HASH_CACHE_SIZE:
                self._cache.clear()
            self._cache[cache_key] = hashed
        return hashed


class StateResolver:
    """Resolver: the caller the app's auth attached to the request (see :func:`from_state`).

    A class rather than a closure so the client can recognise a chain made only of these and
    read the attributes directly on the request path, without a request view or the chain.
    """

    __slots__ = ("attribute",)

    def __init__(self, attribute: str = "user") -> None:
        self.attribute = attribute

    def __call__(self, view: RequestView) -> Identity | None:
        return identity_from_state(view.state, view.scope, (self.attribute,))

    def __repr__(self) -> str:
        return f"from_state({self.attribute!r})"


def from_state(attribute: str = "user") -> Resolver:
    """Resolver: the caller the app's auth attached to the request.

    Looks at ``request.state.<attribute>`` (or the adapter's equivalent, e.g. Flask ``g``),
    then at Starlette's ``scope["user"]``. What may be attached is described in
    :func:`apiusage.attached.read_caller`; under the adapters it is read the moment the
    app attaches it, while the app's objects are alive.
    """
    return StateResolver(attribute)


def from_api_key(hasher: KeyedHasher, detector: AuthDetector | None = None) -> Resolver:
    """Resolver: a keyed hash of the API key, opaque bearer token or basic-auth user name.

    The credential never leaves the process; the identity is ``key_<hmac>``, the same for
    the same key across restarts and processes that share the identity secret. JWTs are
    skipped: they rotate, so their hash would not be a stable identity. A credential the
    app refused (a 401 or 403 response) names no caller.
    """

    find = (detector or AuthDetector()).credential
    # Identities are immutable: one object per key, not one per request for the worker
    # to allocate and the garbage collector to track.
    known: dict[str, Identity] = {}

    def resolve_from_api_key(view: RequestView) -> Identity | None:
        if view.status in REFUSED_STATUSES:
            return None  # a credential the app refused names no caller
        credential = find(view)
        if not credential:
            return None
        identity = known.get(credential)
        if identity is None:
            if len(known) >= _HASH_CACHE_SIZE:
                known.clear()
            identity = known[credential] = Identity(hasher(credential))
        return identity

    return resolve_from_api_key


def from_header(name: str, organisation_header: str | None = None) -> Resolver:
    """Resolver: a header that names the caller (e.g. set by an API gateway)."""

    name = name.lower()
    organisation_header = organisation_header.lower() if organisation_header else None

    def resolve_from_header(view: RequestView) -> Identity | None:
        if view.status in REFUSED_STATUSES:
            return None  # the app refused the request: its header names no caller
        value = view.header(name)
        if not value:
            return None
        organisation = view.header(organisation_header) if organisation_header else None
        return Identity(
            value[:MAX_ID_LENGTH],
            organisation=organisation[:MAX_ID_LENGTH] if organisation else None,
        )

    return resolve_from_header


OnError = Callable[[str, BaseException], None]


def _is_async(resolver: Resolver) -> bool:
    """Declared ``async def`` (a function, or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(resolver) or inspect.iscoroutinefunction(
        type(resolver).__call__
    )


class ResolverChain:
    """Resolvers tried in order; the first identity wins. Itself a resolver.

    A resolver that raises is reported through ``on_error`` and skipped, so one broken
    resolver never fails a request. Sync resolvers run inline; the chain only becomes
    awaitable when a resolver returns an awaitable.
    """

    def __init__(self, resolvers: Iterable[Resolver], on_error: OnError | None = None) -> None:
        self.resolvers: tuple[Resolver, ...] = tuple(resolvers)
        self._on_error = on_error
        #: Position of the first resolver declared ``async def`` (len when none is).
        self.first_async = next(
            (index for index, resolver in enumerate(self.resolvers) if _is_async(resolver)),
            len(self.resolvers),
        )

    def resolve_sync(
        self, view: RequestView, *, quiet: bool = False
    ) -> tuple[Identity | None, int]:
        """Try the resolvers before the first async one: ``(identity, how many were tried)``.

        For adapters whose request state is gone once the response is sent (Flask's ``g``):
        the rest of the chain runs later with ``__call__(view, start=tried)``, so no
        resolver runs twice and no coroutine is left unawaited. ``quiet``: a resolver's
        error is skipped without a report (it is reported when the chain runs for real).
        """
        for index in range(self.first_async):
            resolver = self.resolvers[index]
            try:
                result = resolver(view)
                if result is None:
                    continue
                if inspect.isawaitable(result):  # async, though not declared with async def
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()  # never started: it runs again, awaited, after the response
                    return None, index
                identity = as_identity(result)
            except Exception as exc:
                if not quiet:
                    self._failed(resolver, exc)
                continue
            if identity is not None:
                return identity, index + 1
        return None, self.first_async

    def _failed(self, resolver: Resolver, exc: BaseException) -> None:
        if self._on_error is None:
            raise exc
        name = getattr(resolver, "__qualname__", None) or type(resolver).__name__
        self._on_error(f"identity resolver {name}", exc)

    def __call__(
        self, view: RequestView, start: int = 0
    ) -> Identity | Awaitable[Identity | None] | None:
        resolvers = self.resolvers
        for index in range(start, len(resolvers)):
            resolver = resolvers[index]
            try:
                result = resolver(view)
                if result is None:
                    continue
                if type(result) is Identity:  # the common case, before the costlier checks
                    return result
                if inspect.isawaitable(result):
                    return self._finish_async(view, resolver, result, index + 1)
                identity = as_identity(result)
            except Exception as exc:
                self._failed(resolver, exc)
                continue
            if identity is not None:
                return identity
        return None

    async def _finish_async(
        self, view: RequestView, resolver: Resolver, pending: Awaitable[Any], index: int
    ) -> Identity | None:
        try:
            identity = as_identity(await pending)
        except Exception as exc:
            self._failed(resolver, exc)
            identity = None
        if identity is not None:
            return identity
        for later in self.resolvers[index:]:
            try:
                result = later(view)
                if inspect.isawaitable(result):
                    result = await result
                identity = as_identity(result)
            except Exception as exc:
                self._failed(later, exc)
                continue
            if identity is not None:
                return identity
        return None
