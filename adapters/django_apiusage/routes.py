"""The route inventory of a Django project: every URL pattern, through every ``include()``.

Methods come from the view: a class-based view's handlers (``get``, ``post`` …), a DRF
viewset's actions; a function view answers any method (``*``). Templates are written as
the middleware records them (see :func:`django_apiusage.reading.route_template`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from apiusage.inventory import Route, is_marked_deprecated, routes_for_methods
from django_apiusage.reading import route_template

__all__ = ["django_routes"]

_IMPLIED = frozenset({"head", "options"})


def django_routes() -> list[Route]:
    """Every URL pattern of the project's root URLconf."""
    return list(_walk(get_resolver().url_patterns, ""))


def _walk(patterns: Iterable[Any], prefix: str) -> Iterator[Route]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            callback = pattern.callback
            methods, handlers = _methods(callback)
            deprecated = any(is_marked_deprecated(handler) for handler in handlers)
            yield from routes_for_methods(
                methods, route_template(prefix + str(pattern.pattern)), deprecated=deprecated
            )


def _methods(callback: Any) -> tuple[list[str], list[Any]]:
    """The methods a view answers (none known: any), and the callables that handle them
    (where a deprecation marker may be)."""
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    handlers: list[Any] = [callback, view_class]
    actions = getattr(callback, "actions", None)  # a DRF viewset: {"get": "list", …}
    if isinstance(actions, dict) and actions:
        handlers += [getattr(view_class, action, None) for action in actions.values()]
        return [method for method in actions if method not in _IMPLIED], handlers
    if view_class is None:
        return [], handlers
    names = getattr(view_class, "http_method_names", ())
    methods = [name for name in names if name not in _IMPLIED and hasattr(view_class, name)]
    handlers += [getattr(view_class, name) for name in methods]
    return methods, handlers
