"""``settings.APIUSAGE``: read, validated, and turned into the process's usage client."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from apiusage import UsageClient
from apiusage.config import ConfigurationError, load_settings
from apiusage.identity import Resolver

__all__ = ["client", "read_config", "start"]

_lock = threading.Lock()
_client: UsageClient | None = None

# Entries that name objects (or their dotted import paths) rather than settings values.
_OBJECT_ENTRIES = {"IDENTIFY": "identify", "SINK": "sink", "POSTHOG_CLIENT": "posthog_client"}


def _imported(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as exc:
        raise ConfigurationError(f"APIUSAGE[{key!r}]: cannot import {value!r}: {exc}") from None


def _resolvers(value: Any) -> list[Resolver]:
    items = value if isinstance(value, (list, tuple)) else [value]
    resolvers = [_imported("IDENTIFY", item) for item in items]
    for resolver in resolvers:
        if not callable(resolver):
            raise ConfigurationError(f"APIUSAGE['IDENTIFY']: {resolver!r} is not callable")
    return resolvers


def read_config() -> tuple[dict[str, Any], dict[str, Any]]:
    """Settings and objects (identify, sink, posthog_client) from ``settings.APIUSAGE``.

    Raises :class:`~apiusage.ConfigurationError` naming the bad entry.
    """
    raw = getattr(settings, "APIUSAGE", {})
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"settings.APIUSAGE must be a dict, not {type(raw).__name__}")
    options: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "IDENTIFY":
            objects["identify"] = _resolvers(value)
        elif key in _OBJECT_ENTRIES:
            objects[_OBJECT_ENTRIES[key]] = _imported(key, value)
        else:
            options[str(key).lower()] = value
    options.setdefault("framework", "django")
    load_settings(**options)  # validates; raises ConfigurationError naming the setting
    return options, objects


def start() -> UsageClient:
    """Build the process's client once (from the app's ``ready()``, or the middleware)."""
    global _client
    with _lock:
        if _client is None:
            options, objects = read_config()
            _client = UsageClient(**objects, **options)
        return _client


def client() -> UsageClient:
    """The client serving this Django project."""
    return _client if _client is not None else start()


@receiver(setting_changed)
def _forget_client(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(APIUSAGE=...)`` in tests: the next middleware gets a new client."""
    global _client
    if setting == "APIUSAGE":
        with _lock:
            old, _client = _client, None
        if old is not None:
            old.close(timeout=5)
