"""Route templates: read from an ASGI scope, and written in one syntax for every framework.

Never the raw path: an unmatched request has no route (raw paths carry ids and secrets
and have unbounded cardinality). Framework adapters that know better set the route
themselves; :func:`asgi_route_template` is the generic fallback used by
:class:`apiusage.ASGIMiddleware`. :func:`openapi_template` writes any framework's
template the OpenAPI way (``/items/{item_id}``), so reports of services built with
different frameworks merge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["asgi_route_template", "openapi_template"]

#: ``<name>``, ``<int:name>`` (Flask, Django) and ``{name}``, ``{name:int}``, ``{name:.*}``
#: (Starlette, FastAPI, Falcon, Litestar): a parameter and its converter, if any.
_ANGLE_PARAMETER = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
_BRACE_PARAMETER = re.compile(r"\{([^{}:]+):[^{}]*\}")
_normalised: dict[str, str] = {}


def openapi_template(template: str) -> str:
    """``template`` in OpenAPI's syntax: parameters as ``{name}`` without converters, and a
    leading slash (Django's routes have none). ``/items/<int:item_id>`` (Flask, Django)
    and ``/items/{item_id:int}`` (Starlette) both become ``/items/{item_id}``."""
    found = _normalised.get(template)
    if found is None:
        found = _BRACE_PARAMETER.sub(r"{\1}", _ANGLE_PARAMETER.sub(r"{\1}", template))
        if not found.startswith("/"):
            found = "/" + found
        if len(_normalised) > 10_000:  # templates are few; a flood of them is not kept
            _normalised.clear()
        _normalised[template] = found
    return found


def _mount_prefix(scope: Mapping[str, Any], entry_root_path: str) -> str:
    root_path = scope.get("root_path") or ""
    if isinstance(root_path, str) and root_path.startswith(entry_root_path):
        return root_path[len(entry_root_path) :].rstrip("/")
    return ""


def _walk_router(routes: Any, scope: dict[str, Any]) -> str | None:
    """Re-match the request against a Starlette router (Starlette < 1.7 sets no scope["route"])."""
    partial: tuple[Any, dict[str, Any]] | None = None
    for route in routes:
        match, child_scope = route.matches(scope)
        kind = getattr(match, "name", None)
        if kind == "PARTIAL" and partial is None:
            partial = (route, child_scope)  # the path matches, the method does not: a 405
        if kind != "FULL":
            continue
        return _template_of(route, child_scope, scope)
    return _template_of(partial[0], partial[1], scope) if partial is not None else None


def _template_of(route: Any, child_scope: dict[str, Any], scope: dict[str, Any]) -> str | None:
    inner_routes = getattr(route, "routes", None)
    if inner_routes and getattr(route, "endpoint", None) is None:  # a Mount of a router
        inner = _walk_router(inner_routes, {**scope, **child_scope})
        return None if inner is None else route.path.rstrip("/") + inner
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


def asgi_route_template(
    scope: Mapping[str, Any], entry_root_path: str, status: int | None, entry_path: str = ""
) -> str | None:
    """The matched route's template, with mount prefixes, or None when nothing matched.

    Looks, in order, at FastAPI's effective route context (FastAPI >= 0.137, includes
    ``include_router`` prefixes), Litestar's ``path_template``, and Starlette's
    ``scope["route"]`` (FastAPI < 0.137 too).
    """
    # Runs once per request: cheap None checks before any type check.
    fastapi_scope = scope.get("fastapi")
    if fastapi_scope is not None and isinstance(fastapi_scope, Mapping):
        context = fastapi_scope.get("effective_route_context")
        path_format = getattr(context, "path_format", None)
        if isinstance(path_format, str) and path_format:
            return _mount_prefix(scope, entry_root_path) + path_format
    template = scope.get("path_template")
    if template is not None and isinstance(template, str) and template:
        return template
    route = scope.get("route")
    if route is None:
        router = scope.get("router")
        routes = getattr(router, "routes", None)
        if routes is None or status == 404:
            return None
        try:
            return _walk_router(routes, {**scope, "path": entry_path, "root_path": entry_root_path})
        except Exception:  # a router we do not understand: no template rather than a wrong one
            return None
    path_format = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path_format, str):
        return None
    if status == 404 and getattr(route, "endpoint", None) is None:
        # A mount that matched a prefix but whose app found nothing: no route.
        return None
    root_path = scope.get("root_path")
    if not root_path or root_path == entry_root_path:
        return path_format or "/"
    return (_mount_prefix(scope, entry_root_path) + path_format) or "/"
