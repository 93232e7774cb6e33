"""The route inventory of a Starlette or FastAPI app: its routes, into mounts and hosts.

FastAPI's routes carry ``include_router`` prefixes, and say when they are deprecated
(``deprecated=True`` on the route or its router) and their operation id. Everything is
read; nothing about the app is changed or generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from apiusage.inventory import Route, is_marked_deprecated, routes_for_methods

__all__ = ["fastapi_routes", "starlette_routes"]


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
    operation ids. Read only: no OpenAPI schema is generated (that would cache it on the
    app, and warn or fail for the app's own reasons).

    FastAPI 0.137 and later keep an included router as one entry whose routes are its
    *effective* contexts (what FastAPI itself routes with); earlier versions flatten
    included routes into ``app.routes``, which :func:`starlette_routes` reads.
    """
    return list(_walk_fastapi(_routes_of(app), ""))


def _walk_fastapi(routes: Iterable[Any], prefix: str) -> Iterator[Route]:
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):  # an included router (FastAPI >= 0.137)
            for candidate in candidates():
                yield from _from_candidate(candidate, prefix)
        else:
            yield from _walk([route], prefix)


def _from_candidate(candidate: Any, prefix: str) -> Iterator[Route]:
    if callable(getattr(candidate, "effective_candidates", None)):
        yield from _walk_fastapi([candidate], prefix)
        return
    path, methods = getattr(candidate, "path_format", None), getattr(candidate, "methods", None)
    if isinstance(path, str) and methods:  # an API route's effective context
        yield from routes_for_methods(
            methods,
            prefix + path,
            deprecated=bool(getattr(candidate, "deprecated", False))
            or is_marked_deprecated(getattr(candidate, "endpoint", None)),
            operation_id=_operation_id(candidate),
        )
        return
    plain = getattr(candidate, "starlette_route", None)  # a plain route or mount
    if plain is not None:
        yield from _walk([plain], prefix)
