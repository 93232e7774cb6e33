"""``settings.APIUSAGE``: read, validated, and turned into the process's usage client."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from apiusage import UsageClient
from apiusage.config import ConfigurationError, load_settings
from apiusage.identity import Resolver

__all__ = ["client", "read_config", "start"]

_lock = threading.Lock()
_client: UsageClient | None = None


def _resolvers(value: Any) -> list[Resolver]:
    items = value if isinstance(value, (list, tuple)) else [value]
    resolvers: list[Resolver] = []
    for item in items:
        if isinstance(item, str):
            try:
                item = import_string(item)
            except ImportError as exc:
                raise ConfigurationError(
                    f"APIUSAGE['IDENTIFY']: cannot import {item!r}: {exc}"
                ) from None
        if not callable(item):
            raise ConfigurationError(f"APIUSAGE['IDENTIFY']: {item!r} is not callable")
        resolvers.append(item)
    return resolvers


def read_config() -> tuple[dict[str, Any], list[Resolver]]:
    """Settings keyword arguments and resolvers from ``settings.APIUSAGE``; raises on bad input."""
    raw = getattr(settings, "APIUSAGE", {})
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"settings.APIUSAGE must be a dict, not {type(raw).__name__}")
    options: dict[str, Any] = {}
    resolvers: list[Resolver] = []
    for key, value in raw.items():
        if key == "IDENTIFY":
            resolvers = _resolvers(value)
        else:
            options[str(key).lower()] = value
    options.setdefault("framework", "django")
    load_settings(**options)  # validates; raises ConfigurationError naming the setting
    return options, resolvers


def start() -> UsageClient:
    """Build the process's client once (from the app's ``ready()``, or the middleware)."""
    global _client
    with _lock:
        if _client is None:
            options, resolvers = read_config()
            _client = UsageClient(identify=resolvers, **options)
        return _client


def client() -> UsageClient:
    """The client serving this Django project."""
    return _client if _client is not None else start()
