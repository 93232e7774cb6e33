"""The route inventory of a Starlette or FastAPI app: its routes, into mounts and hosts.

FastAPI's routes already carry ``include_router`` prefixes, and say when they are
deprecated (``deprecated=True`` on the route or its router) and their operation id.
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


_HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})


def fastapi_routes(app: Any) -> list[Route]:
    """A FastAPI app's routes: its OpenAPI schema's operations (FastAPI's public account of
    them, ``include_router`` prefixes, ``deprecated`` and ``operationId`` included), plus
    the routes it serves outside the schema (the walk of :func:`starlette_routes`)."""
    routes = starlette_routes(app)
    schema = app.openapi()
    for path, operations in (schema.get("paths") or {}).items():
        for method, operation in operations.items():
            if method.upper() not in _HTTP_METHODS or not isinstance(operation, dict):
                continue
            operation_id = operation.get("operationId")
            routes.extend(
                routes_for_methods(
                    [method],
                    path,
                    deprecated=operation.get("deprecated") is True,
                    operation_id=operation_id if isinstance(operation_id, str) else None,
                )
            )
    return routes
