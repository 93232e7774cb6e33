"""The route inventory: every endpoint an app serves, whether it is called or not.

Traffic only shows the endpoints that are used; the inventory shows the rest, so a report
can list the endpoints **never** called and say which deprecated ones still are.
Framework adapters hand the client a *route source* (a function that lists the app's
routes); the delivery worker calls it once, off the request path, when the first request
is recorded (by then every route and blueprint is registered), and sends the result as
one ``api_route_inventory`` event. Its uuid is derived from the inventory's content, so
every worker and every restart of the same deployment sends the same event and PostHog
(and the local store) keep it once.

A route is deprecated when the framework says so (FastAPI's ``deprecated=True``, the
OpenAPI flag), when its view carries the :func:`deprecated` marker, or when the
``deprecated_routes`` setting names it.
"""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from apiusage.detect.routes import openapi_template

__all__ = [
    "INVENTORY_EVENT",
    "InventoryRequest",
    "Route",
    "RouteInventory",
    "RouteSource",
    "configured_deprecations",
    "deprecated",
    "is_deprecated",
    "is_marked_deprecated",
    "litestar_routes",
    "parse_route_entry",
    "routes_for_methods",
    "routes_of_live_app",
]

#: The event that carries an app's route inventory, and its (personless) distinct id.
INVENTORY_EVENT = "api_route_inventory"
INVENTORY_DISTINCT_ID = "apiusage-route-inventory"
#: Method of a route that answers any method (a Django function view, say).
ANY_METHOD = "*"
#: Methods a framework adds to every route, not part of what an endpoint offers.
_IMPLIED_METHODS = frozenset({"HEAD", "OPTIONS"})
_MARKER = "__apiusage_deprecated__"
_NAMESPACE = uuid.UUID("6f0c5a52-54d9-4b7e-9c2f-6b3f3c2d9a10")

Function = TypeVar("Function", bound=Callable[..., Any])
_Listed = TypeVar("_Listed")


def deprecated(view: Function) -> Function:
    """Mark a view (a function, or a class-based view) as deprecated::

        @app.get("/v1/legacy/report")
        @apiusage.deprecated
        def legacy_report(): ...

    The route inventory then says so, its requests carry ``deprecated: true``, and
    ``apiusage report`` lists who still calls it.
    """
    setattr(view, _MARKER, True)
    return view


def is_marked_deprecated(view: Any) -> bool:
    """True for a view marked with :func:`deprecated` (or a view wrapping one)."""
    while view is not None:
        if getattr(view, _MARKER, False) is True:
            return True
        view = getattr(view, "__wrapped__", None)
    return False


@dataclass(frozen=True, slots=True, order=True)
class Route:
    """One endpoint: a method and a route template."""

    route: str  # OpenAPI's syntax (the ``route`` property of requests)
    method: str  # upper case; ``*`` for any
    template: str  # the framework's own syntax (``route_template``)
    deprecated: bool = False
    operation_id: str | None = None

    @classmethod
    def of(
        cls,
        method: str,
        template: str,
        *,
        deprecated: bool = False,
        operation_id: str | None = None,
    ) -> Route:
        return cls(openapi_template(template), method.upper(), template, deprecated, operation_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "route": self.route,
            "route_template": self.template,
            "deprecated": self.deprecated,
            "operation_id": self.operation_id,
        }


#: What an adapter hands the client: lists the app's routes (each method its own Route).
RouteSource = Callable[[], Iterable[Route]]


def routes_for_methods(methods: Iterable[str] | None, template: str, **details: Any) -> list[Route]:
    """One :class:`Route` per method a framework lists for a template, without the HEAD
    and OPTIONS it adds to every route; ``*`` when it lists none."""
    named = sorted({method.upper() for method in methods or ()} - _IMPLIED_METHODS)
    return [Route.of(method, template, **details) for method in named or [ANY_METHOD]]


def routes_of_live_app(
    app: Any, list_routes: Callable[[Any], Iterable[_Listed]]
) -> Callable[[], Iterable[_Listed]]:
    """A route source that holds ``app`` weakly: a client shared by several apps (or
    outliving one) must not keep a dropped app alive. A dropped app has no routes. (An
    app that cannot be referenced weakly, with ``__slots__``, is held as it is.) Also
    for what else is read from an app later, such as the paths it serves itself."""
    try:
        reference: Callable[[], Any] = weakref.ref(app)
    except TypeError:

        def reference() -> Any:
            return app

    def source() -> Iterable[_Listed]:
        live = reference()
        return () if live is None else list_routes(live)

    return source


def litestar_routes(app: Any) -> list[Route]:
    """A Litestar app's routes, from its public ``app.routes`` (no Litestar import: apps
    without an apiusage adapter hand this to :meth:`UsageClient.add_route_source`).
    A handler is deprecated by ``deprecated=True`` (Litestar's OpenAPI flag) or the
    :func:`deprecated` marker."""
    routes: list[Route] = []
    for route in getattr(app, "routes", ()):
        path = getattr(route, "path", None)
        for handler in getattr(route, "route_handlers", ()):
            methods = getattr(handler, "http_methods", None)
            if not isinstance(path, str) or methods is None:  # websocket and ASGI routes
                continue
            marked = getattr(handler, "deprecated", False) is True or is_marked_deprecated(
                getattr(handler, "fn", None)
            )
            routes.extend(routes_for_methods(methods, path, deprecated=marked))
    return routes


@dataclass(frozen=True, slots=True)
class RouteInventory:
    """The routes of one deployment, with a digest of their content."""

    routes: tuple[Route, ...]
    framework: str | None
    digest: str

    @classmethod
    def of(
        cls,
        routes: Iterable[Route],
        framework: str | None,
        deprecated_routes: Iterable[str] = (),
    ) -> RouteInventory:
        """Sorted, without repeats, with the ``deprecated_routes`` setting applied."""
        marked = configured_deprecations(deprecated_routes)
        unique: dict[tuple[str, str], Route] = {}
        for route in routes:
            if not route.deprecated and _named(marked, route.method, route.route):
                route = Route(route.route, route.method, route.template, True, route.operation_id)
            known = unique.get((route.route, route.method))
            if known is None or (route.deprecated and not known.deprecated):
                unique[route.route, route.method] = route
        ordered = tuple(sorted(unique.values()))
        content = orjson.dumps([framework, [route.as_dict() for route in ordered]])
        return cls(ordered, framework, hashlib.sha256(content).hexdigest()[:32])

    @property
    def uuid(self) -> str:
        """The same for the same content, whichever process sends it."""
        return str(uuid.uuid5(_NAMESPACE, self.digest))

    def deprecated(self) -> frozenset[tuple[str, str]]:
        """(method, route) of every deprecated route."""
        return frozenset((route.method, route.route) for route in self.routes if route.deprecated)

    def properties(self) -> dict[str, Any]:
        """The ``api_route_inventory`` event's properties."""
        return {
            "routes": [route.as_dict() for route in self.routes],
            "route_count": len(self.routes),
            "deprecated_count": sum(1 for route in self.routes if route.deprecated),
            "inventory_hash": self.digest,
            "framework": self.framework,
        }


@dataclass(frozen=True, slots=True)
class InventoryRequest:
    """Queued ahead of the first request: the worker lists the routes when it gets here."""

    sources: tuple[RouteSource, ...]
    framework: str | None
    deprecated_routes: tuple[str, ...]
    #: True for paths the client never records (their routes are left out).
    excluded: Callable[[str], bool]
    #: Estimated bytes while queued (see :mod:`apiusage.delivery`).
    queued_bytes: int = 4096

    def inventory(self, failed: Callable[[str, BaseException], None]) -> RouteInventory:
        """Every source's routes; a source that fails is reported to ``failed`` and the
        others still count."""
        routes: list[Route] = []
        for source in self.sources:
            try:
                routes.extend(source())
            except Exception as exc:
                failed("listing the app's routes", exc)
        kept = [route for route in routes if not self.excluded(route.route)]
        return RouteInventory.of(kept, self.framework, self.deprecated_routes)


def parse_route_entry(entry: str) -> tuple[str, str]:
    """A ``deprecated_routes`` entry as (method, route): ``"GET /v1/x"``, or ``"/v1/x"`` for
    any method, in either template syntax. ValueError names what is wrong."""
    method, _, route = entry.strip().rpartition(" ")
    method = method.strip()
    if not route.startswith("/") or (method and not method.isalpha()):
        raise ValueError(f"{entry!r} is not a route: write '/v1/reports' or 'GET /v1/reports'")
    return (method.upper() or ANY_METHOD), openapi_template(route)


def configured_deprecations(entries: Iterable[str]) -> frozenset[tuple[str, str]]:
    """``deprecated_routes`` entries as (method, route) (see :func:`parse_route_entry`)."""
    return frozenset(parse_route_entry(entry) for entry in entries)


def _named(marked: frozenset[tuple[str, str]], method: str, route: str) -> bool:
    return (method, route) in marked or (ANY_METHOD, route) in marked


def is_deprecated(deprecated: frozenset[tuple[str, str]], method: str, route: str | None) -> bool:
    """Whether a request of ``method`` to ``route`` (OpenAPI syntax) hit a deprecated route."""
    if route is None or not deprecated:
        return False
    return (method, route) in deprecated or (ANY_METHOD, route) in deprecated
