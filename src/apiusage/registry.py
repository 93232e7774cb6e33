"""One client per configuration per process, and the process's default client.

Every middleware, extension or settings entry built with the same configuration (the same
settings, resolvers, sink and PostHog client) shares one :class:`~apiusage.UsageClient`:
one worker thread and one store connection, however many apps a test suite builds.
Clients are held weakly: when no app uses one any more it is released (what it still
holds is delivered in the background, then its sink is closed), and at exit every live
client is flushed within its shutdown timeout (:mod:`apiusage.client`).

The process default (what ``track()`` and ``identify()`` outside a request use) is the
client of the first instrumented app that is still alive.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from apiusage.client import UsageClient
from apiusage.config import load_settings
from apiusage.identity import Resolver

__all__ = ["default_client", "get_client", "serve", "shared_client", "use_client"]

_lock = threading.Lock()
_shared: weakref.WeakValueDictionary[Hashable, UsageClient] = weakref.WeakValueDictionary()
_serving: list[weakref.ref[UsageClient]] = []


def shared_client(
    identify: Resolver | Sequence[Resolver] | None = None,
    sink: Any = None,
    posthog_client: Any = None,
    **settings: Any,
) -> UsageClient:
    """The live client with this configuration, built on first use; it serves an app.

    Raises :class:`~apiusage.ConfigurationError` for bad settings, as the client does.
    """
    loaded = load_settings(**settings)
    resolvers: tuple[Any, ...] = (
        () if identify is None else (identify,) if callable(identify) else tuple(identify)
    )
    # Objects count by identity: the client keeps them alive, so an id is not reused
    # while its entry exists.
    key = (
        _hashable(loaded.model_dump()),
        tuple(map(id, resolvers)),
        id(sink),
        id(posthog_client),
    )
    with _lock:
        client = _shared.get(key)
        if client is None or client.closed:  # closed by hand (tests do): build a new one
            client = UsageClient(
                loaded,
                identify=list(resolvers) or None,
                sink=sink,
                posthog_client=posthog_client,
            )
            _shared[key] = client
    serve(client)
    return client


def use_client(
    client: UsageClient | None = None,
    *,
    identify: Resolver | Sequence[Resolver] | None = None,
    sink: Any = None,
    posthog_client: Any = None,
    **settings: Any,
) -> UsageClient:
    """The client an app records with: ``client`` when given (then nothing else may be),
    else the shared client for this configuration. Middleware and adapters call it.

    Raises :class:`TypeError` when both are given, and
    :class:`~apiusage.ConfigurationError` for bad settings.
    """
    if client is None:
        return shared_client(identify, sink, posthog_client, **settings)
    if identify is not None or sink is not None or posthog_client is not None or settings:
        raise TypeError("pass either client= or settings/identify/sink, not both")
    serve(client)
    return client


def serve(client: UsageClient) -> None:
    """Note that ``client`` records an app: the first such client alive is the default."""
    with _lock:
        _serving[:] = [ref for ref in _serving if ref() is not None]
        if not any(ref() is client for ref in _serving):
            _serving.append(weakref.ref(client))


def default_client() -> UsageClient | None:
    """The client of the first instrumented app still alive, or None."""
    for ref in list(_serving):
        client = ref()
        if client is not None and not client.closed:
            return client
    return None


def get_client() -> UsageClient:
    """The process's default client: the client of the first instrumented app still alive."""
    client = default_client()
    if client is None:
        raise RuntimeError(
            "apiusage is not set up in this process: add apiusage's middleware (or an adapter) "
            "to your app before calling apiusage.flush() or apiusage.stats()"
        )
    return client


def _hashable(value: Any) -> Hashable:
    """A settings value as a key: lists and mappings become tuples."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_hashable(item) for item in value]
        return tuple(sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items)
    if isinstance(value, Hashable):
        return value
    return repr(value)
