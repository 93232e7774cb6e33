"""Flask extension: ``ApiUsage(app)`` or ``usage = ApiUsage(); usage.init_app(app)``.

Configuration comes from ``app.config`` (``APIUSAGE_*``, ``POSTHOG_API_KEY``,
``POSTHOG_HOST``), then keyword arguments, then the environment. Apps with the same
configuration share one client; apps configured differently keep their own.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from flask import Flask, Response, g, got_request_exception, request

from apiusage import (
    Resolver,
    Route,
    Sink,
    StateResolver,
    UsageClient,
    WSGIMiddleware,
    annotate,
    current_record,
    use_client,
)
from apiusage.attached import watching_class
from apiusage.inventory import is_marked_deprecated, routes_for_methods, routes_of_live_app

__all__ = ["ApiUsage", "flask_login_user", "flask_routes", "flask_served_paths"]

_CONFIG_PREFIX = "APIUSAGE_"


flask_login_user = StateResolver("_login_user")
"""Resolver: the user Flask-Login loaded for this request (``current_user``).

Only a user the app already loaded is read (Flask-Login keeps it in ``g._login_user``):
apiusage never runs the user loader, so it adds no database query to any request.
"""


def _without_cycle(app: Flask) -> Any:
    """``app.wsgi_app``, holding ``app`` weakly when it is Flask's own method: stored on
    the app, the bound method would make a cycle, and a dropped app would wait for the
    garbage collector instead of being freed at once."""
    wsgi_app, app_ref, name = app.wsgi_app, weakref.ref(app), app.name
    if getattr(wsgi_app, "__self__", None) is not app:
        return wsgi_app  # already wrapped by other middleware: nothing refers back

    def call_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        live = app_ref()
        if live is None:
            raise RuntimeError(
                f"the Flask app {name!r} behind this apiusage middleware no longer exists: "
                "keep a reference to the app itself, not only to app.wsgi_app"
            )
        return type(live).wsgi_app(live, environ, start_response)

    return call_app


def flask_routes(app: Flask) -> list[Route]:
    """Every rule of ``app``'s URL map (blueprint prefixes included), but its static files;
    a view marked with ``apiusage.deprecated`` makes its rules deprecated."""
    routes: list[Route] = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        view = app.view_functions.get(rule.endpoint)
        deprecated = is_marked_deprecated(view) or is_marked_deprecated(
            getattr(view, "view_class", None)
        )
        routes.extend(routes_for_methods(rule.methods, rule.rule, deprecated=deprecated))
    return routes


def flask_served_paths(app: Flask) -> list[str]:
    """Where the app and its blueprints serve static files (``static_url_path``)."""
    return [
        rule.rule.partition("<")[0]
        for rule in app.url_map.iter_rules()
        if rule.endpoint == "static" or rule.endpoint.endswith(".static")
    ]


def _record_exception(sender: Flask, exception: BaseException, **extra: Any) -> None:
    annotate(exception=exception)


class ApiUsage:
    """The apiusage Flask extension."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        identify: Resolver | Sequence[Resolver] | None = None,
        sink: Sink | None = None,
        posthog_client: Any = None,
        **settings: Any,
    ) -> None:
        self._resolvers: list[Resolver] = (
            [] if identify is None else [identify] if callable(identify) else list(identify)
        )
        self._sink = sink
        self._posthog_client = posthog_client
        self._settings = settings
        if app is not None:
            self.init_app(app)

    @staticmethod
    def client_for(app: Flask) -> UsageClient:
        """The client serving ``app`` (after ``init_app``)."""
        client: UsageClient = app.extensions["apiusage"]
        return client

    def init_app(self, app: Flask) -> None:
        if "apiusage" in app.extensions:
            raise RuntimeError(f"apiusage is already installed on the Flask app {app.name!r}")
        settings: dict[str, Any] = {
            key[len(_CONFIG_PREFIX) :].lower(): value
            for key, value in app.config.items()
            if key.startswith(_CONFIG_PREFIX)
        }
        for key in ("POSTHOG_API_KEY", "POSTHOG_HOST"):
            if key in app.config:
                settings[key.lower()] = app.config[key]
        settings.update(self._settings)
        settings.setdefault("framework", "flask")
        client = use_client(
            identify=[*self._resolvers, flask_login_user],
            sink=self._sink,
            posthog_client=self._posthog_client,
            **settings,
        )
        app.extensions["apiusage"] = client
        # g.user (and Flask-Login's user) is read as the app sets it, while its objects
        # are alive: a row of a session closed at teardown can no longer be read.
        app.app_ctx_globals_class = watching_class(
            app.app_ctx_globals_class, client.watched_attributes
        )
        app.wsgi_app = WSGIMiddleware(  # type: ignore[method-assign]
            _without_cycle(app), client=client
        )

        reading_guard = client.stats.guard("reading the Flask request")

        def finish_in_request_context(exc: BaseException | None) -> None:
            # Runs while `request`, `g` and Flask-Login's user still exist.
            if current_record() is None:
                return
            with reading_guard:
                flask_request = request._get_current_object()  # type: ignore[attr-defined]
                rule = flask_request.url_rule
                annotate(
                    route=rule.rule if rule is not None else None,
                    exception=exc,
                    request=flask_request,
                    state=g._get_current_object(),
                )
                client.resolve_current()

        notices = client.notices
        if notices is not None:

            def add_deprecation_notice(response: Response) -> Response:
                rule = request.url_rule
                if rule is not None and "Deprecation" not in response.headers:
                    for name, value in notices.headers_for(request.method, rule.rule):
                        response.headers[name] = value
                return response

            app.after_request(add_deprecation_notice)

        got_request_exception.connect(_record_exception, app)
        client.add_route_source(routes_of_live_app(app, flask_routes))
        client.exclude_framework_paths(routes_of_live_app(app, flask_served_paths))
        app.teardown_request(finish_in_request_context)
