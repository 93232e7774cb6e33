"""The route inventory of a Starlette or FastAPI app: its routes, into mounts and hosts.

FastAPI's routes carry ``include_router`` prefixes, and say when they are deprecated
(``deprecated=True`` on the route or its router) and their operation id. Everything is
read; nothing about the app is changed or generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from apiusage.inventory import Route, is_marked_deprecated, routes_for_methods

__all__ = ["fastapi_routes", "fastapi_served_paths", "starlette_routes", "starlette_served_paths"]


def starlette_routes(app: Any) -> list[Route]:
    """Every HTTP route of ``app`` (websocket routes and mounted apps that are not
    routers, such as static files, are left out)."""
    return list(_walk(_routes_of(app), ""))


def _routes_of(app: Any) -> Iterable[Any]:
    routes = getattr(app, "routes", None)
    if routes is None:
        routes = getattr(getattr(app, "router", None), "routes", None)
    return routes or ()


def _walk(routes: Iterable[Any], prefix: str) -> Iterator[Route]:
    for route in routes:
        inner = getattr(route, "routes", None)
        if inner is not None and getattr(route, "endpoint", None) is None:  # Mount, Host
            path = getattr(route, "path", "")  # a Host has none
            yield from _walk(inner, prefix + (path.rstrip("/") if isinstance(path, str) else ""))
            continue
        methods = getattr(route, "methods", None)
        path = getattr(route, "path", None)
        if methods is None or not isinstance(path, str):  # websocket routes
            continue
        endpoint = getattr(route, "endpoint", None)
        yield from routes_for_methods(
            methods,
            prefix + path,
            deprecated=bool(getattr(route, "deprecated", False)) or is_marked_deprecated(endpoint),
            operation_id=_operation_id(route),
        )


def _operation_id(route: Any) -> str | None:
    """FastAPI's operation id: the one given, else the unique id it generates."""
    for name in ("operation_id", "unique_id"):
        value = getattr(route, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def fastapi_routes(app: Any) -> list[Route]:
    """A FastAPI app's routes, with ``include_router`` prefixes, ``deprecated`` and
    operation ids. Read only: no OpenAPI schema is generated, and no route is built (that
    would cache state on the app, and warn or fail for the app's own reasons).

    FastAPI 0.137 and later keep an included router as one entry: its router's routes
    and the prefix and ``deprecated`` of the ``include_router`` call, read here as they
    are. Earlier versions flatten included routes into ``app.routes``, which
    :func:`starlette_routes` reads.
    """
    return list(_walk_fastapi(_routes_of(app), "", deprecated=False))


def _walk_fastapi(routes: Iterable[Any], prefix: str, *, deprecated: bool) -> Iterator[Route]:
    for route in routes:
        router = getattr(route, "original_router", None)
        context = getattr(route, "include_context", None)
        if router is not None and context is not None:  # an included router (>= 0.137)
            yield from _walk_fastapi(
                getattr(router, "routes", ()),
                prefix + str(getattr(context, "prefix", "") or ""),
                deprecated=deprecated or bool(getattr(context, "deprecated", False)),
            )
            continue
        for found in _walk([route], prefix):
            if deprecated and not found.deprecated:
                found = Route(found.route, found.method, found.template, True, found.operation_id)
            yield found


def starlette_served_paths(app: Any) -> list[str]:
    """Prefixes of the app's ``StaticFiles`` mounts (into mounts): files, not API calls."""
    from starlette.staticfiles import StaticFiles

    return list(_static_mounts(_routes_of(app), "", StaticFiles))


def _static_mounts(routes: Iterable[Any], prefix: str, static: type) -> Iterator[str]:
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str) or getattr(route, "endpoint", None) is not None:
            continue  # a route, a Host (no path of its own) …
        here = prefix + path.rstrip("/")
        if isinstance(getattr(route, "app", None), static):
            yield here + "/"
        else:
            yield from _static_mounts(getattr(route, "routes", None) or (), here, static)


def fastapi_served_paths(app: Any) -> list[str]:
    """FastAPI's schema and docs (``openapi_url``, ``docs_url``, ``redoc_url`` and the
    Swagger UI's OAuth2 redirect, at whatever prefix the app puts them) and its static
    files."""
    paths = [
        url
        for url in (
            getattr(app, "openapi_url", None),
            getattr(app, "docs_url", None),
            getattr(app, "redoc_url", None),
            getattr(app, "swagger_ui_oauth2_redirect_url", None)
            if getattr(app, "docs_url", None)
            else None,
        )
        if isinstance(url, str) and url
    ]
    return [*paths, *starlette_served_paths(app)]
