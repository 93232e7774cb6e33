"""Starlette integration: ``ApiUsage(app)``.

apiusage is installed around Starlette's whole middleware stack, outside
``ServerErrorMiddleware``, so an unhandled error is recorded as the 500 it becomes, with
its exception class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from apiusage import ASGIMiddleware, Resolver, Sink, UsageClient, use_client
from apiusage.inventory import Route, routes_of_live_app
from starlette_apiusage.routes import starlette_routes, starlette_served_paths

__all__ = ["ApiUsage"]


class ApiUsage:
    """Instrument a Starlette application::

    app = Starlette(routes=...)
    ApiUsage(app)                          # settings from the environment
    ApiUsage(app, identify=caller_from_request, event_name="api_call")
    """

    framework = "starlette"
    #: Lists the app's routes for the route inventory.
    list_routes: Callable[[Any], Iterable[Route]] = staticmethod(starlette_routes)
    #: Lists what the framework serves itself (static files, API docs): not recorded.
    served_paths: Callable[[Any], Iterable[str]] = staticmethod(starlette_served_paths)

    def __init__(
        self,
        app: Any,
        client: UsageClient | None = None,
        *,
        identify: Resolver | Sequence[Resolver] | None = None,
        sink: Sink | None = None,
        posthog_client: Any = None,
        **settings: Any,
    ) -> None:
        if getattr(app, "_apiusage", None) is not None:
            raise RuntimeError(f"apiusage is already installed on this {self.framework} app")
        if getattr(app, "middleware_stack", None) is not None:
            raise RuntimeError(
                f"apiusage: ApiUsage(app) was called after the {self.framework} app started "
                "serving requests, so it could not be installed. Call it where the app is created."
            )
        if client is None:
            settings.setdefault("framework", self.framework)
        self.client = use_client(
            client, identify=identify, sink=sink, posthog_client=posthog_client, **settings
        )
        self.app = app
        build_stack = app.build_middleware_stack

        def build_middleware_stack_with_apiusage() -> ASGIMiddleware:
            middleware = ASGIMiddleware(build_stack(), client=self.client)
            middleware.framework = middleware.framework or self.framework
            return middleware

        app.build_middleware_stack = build_middleware_stack_with_apiusage
        app._apiusage = self
        self.client.add_route_source(routes_of_live_app(app, type(self).list_routes))
        self.client.exclude_framework_paths(routes_of_live_app(app, type(self).served_paths))
