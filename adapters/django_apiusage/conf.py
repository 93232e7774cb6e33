"""``settings.APIUSAGE``: read, validated, and turned into the project's usage client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.module_loading import import_string

from apiusage import ConfigurationError, Resolver, UsageClient, load_settings, use_client
from django_apiusage.routes import django_routes

__all__ = ["client", "django_served_paths", "read_config"]

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


def client() -> UsageClient:
    """The client for the current ``settings.APIUSAGE``, shared with the middleware.

    Clients are shared by configuration (:func:`apiusage.use_client`): after
    ``override_settings(APIUSAGE=...)`` the middleware built next gets a client of its own.
    """
    options, objects = read_config()
    usage = use_client(**objects, **options)
    usage.add_route_source(django_routes, name="django-urlconf")
    usage.exclude_framework_paths(django_served_paths)
    return usage


def django_served_paths() -> list[str]:
    """``STATIC_URL`` and ``MEDIA_URL`` when this site serves them (not another host)."""
    paths = []
    for name in ("STATIC_URL", "MEDIA_URL"):
        url = getattr(settings, name, None)
        if not url:
            continue
        parsed = urlsplit(str(url))
        path = "/" + parsed.path.strip("/")
        if not parsed.netloc and path != "/":
            paths.append(path + "/")
    return paths
