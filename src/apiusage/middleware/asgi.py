"""Pure ASGI middleware: wraps ``send``/``receive`` to record a request, nothing more.

No response buffering, no BaseHTTPMiddleware: streaming, websockets and lifespan behave
exactly as without it. Non-HTTP scopes pass straight through.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

from asgiref.compatibility import double_to_single_callable
from asgiref.sync import iscoroutinefunction
from asgiref.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from apiusage import lifetime
from apiusage.attached import WatchedState
from apiusage.client import UsageClient
from apiusage.detect.routes import asgi_route_template
from apiusage.feature_flags import flags_header_value
from apiusage.identity import Resolver
from apiusage.notices import DeprecationNotices
from apiusage.offload import run_in_thread
from apiusage.record import RequestRecord
from apiusage.registry import use_client
from apiusage.sinks.base import Sink

__all__ = ["ASGIMiddleware", "as_asgi3"]

_CLIENT_GONE = 499  # nginx's convention: the client closed the connection first


def as_asgi3(app: Any) -> Any:
    """``app`` called the ASGI 3 way; ASGI 2 (double-callable) apps are adapted.

    asgiref's ``guarantee_single_callable`` takes every class for ASGI 2, which breaks
    classes whose instances are ASGI 3 apps (Starlette's ``HTTPEndpoint`` mounted
    directly). Like uvicorn: a class is ASGI 3 when its instances are awaitable; other
    callables when they (or their ``__call__``) are coroutine functions or take three
    positional arguments.
    """
    if getattr(app, "_asgi_single_callable", False):
        return app
    if getattr(app, "_asgi_double_callable", False):
        return double_to_single_callable(app)  # type: ignore[no-untyped-call]
    if inspect.isclass(app):
        return app if hasattr(app, "__await__") else double_to_single_callable(app)  # type: ignore[no-untyped-call]
    if iscoroutinefunction(app) or iscoroutinefunction(type(app).__call__):
        return app
    try:
        positional = [
            parameter
            for parameter in inspect.signature(app).parameters.values()
            if parameter.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            and parameter.default is inspect.Parameter.empty
        ]
    except (TypeError, ValueError):  # no signature to read: assume today's protocol
        return app
    return double_to_single_callable(app) if len(positional) == 1 else app  # type: ignore[no-untyped-call]


class ASGIMiddleware:
    """Records every HTTP request of an ASGI app.

    Either hand in a :class:`~apiusage.UsageClient` or keyword settings::

        app = apiusage.ASGIMiddleware(app)
        app = apiusage.ASGIMiddleware(app, identify=caller_from_request, event_name="api_call")
    """

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
        self.app = as_asgi3(app)
        self.client = use_client(
            client, identify=identify, sink=sink, posthog_client=posthog_client, **settings
        )
        #: Named in events when the settings do not name it (framework adapters set it).
        self.framework = self.client.settings.framework
        self._finishing_guard = self.client.stats.guard("finishing a request")
        self._watching = self.client.watched_attributes
        self._flags_header = self.client.settings.flags_header

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, self._lifespan_send(send))
            else:
                await self.app(scope, receive, send)
            return
        path = scope["path"]
        root_path = scope.get("root_path", "")
        recording = self.client.begin(
            "asgi",
            scope["method"],
            path,
            scope.get("query_string", b""),
            scope.get("headers", ()),
            scope,
            root_path,
            # Exclusions are paths of the app: without the prefix it is mounted under.
            path[len(root_path) :] if root_path and path.startswith(root_path + "/") else None,
            self.framework,
        )
        if not recording.measures:  # recorded by an outer apiusage, or not recorded
            try:
                await self.app(scope, receive, send)
            finally:
                recording.leave()
            return
        record = recording.record
        notices = self.client.notices
        flags_header = self._flags_header
        # request.state writes to scope["state"]: watched, the caller is read as the app
        # attaches it (see apiusage.attached), while its objects are alive.
        state = scope.get("state")
        watched = None
        if self._watching and not isinstance(state, WatchedState):
            watched = scope["state"] = WatchedState(state or (), self._watching)

        async def receive_recording() -> ASGIReceiveEvent:
            message = await receive()
            if message["type"] == "http.request":
                record.request_bytes += len(message.get("body", b""))
            elif message["type"] == "http.disconnect" and record.duration_ns is None:
                record.client_disconnected = True
            return message

        async def send_recording(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.body":
                record.response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    record.finish_timing()
            elif message["type"] == "http.response.start":
                record.status = message["status"]
                if notices is not None:
                    message = _with_notice(message, notices, scope, record)
                if flags_header and record.flags:
                    message = _with_flags(message, record.flags)
            try:
                await send(message)
            except OSError:
                record.client_disconnected = True
                raise

        try:
            await self.app(scope, receive_recording, send_recording)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                record.client_disconnected = True
            recording.failed(exc, _CLIENT_GONE if record.client_disconnected else 500)
            raise
        finally:
            if watched is not None and type(state) is dict:
                state.update(watched)  # for a middleware outside that holds the first dict
            with self._finishing_guard:
                pending = recording.finish()
                if pending is not None:
                    await pending

    def _lifespan_send(self, send: ASGISendCallable) -> ASGISendCallable:
        """Flush queued events (in a thread, bounded) before the server is told shutdown is done."""

        async def lifespan_send(message: ASGISendEvent) -> None:
            if message["type"] == "lifespan.startup.complete":
                lifetime.started()  # a stop that ran before (a test client's) is over
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                with self.client.stats.guard("flushing at lifespan shutdown"):
                    await run_in_thread(self.client.flush_before_exit)
            await send(message)

        return lifespan_send


def _with_flags(message: Any, answers: dict[str, bool | str]) -> Any:
    """``http.response.start`` naming the flags the request was served with."""
    existing = message.get("headers", ())
    if any(name.lower() == b"x-feature-flags" for name, _ in existing):
        return message  # said already (Django's middleware inside)
    value = flags_header_value(answers).encode("latin-1", "replace")
    return {**message, "headers": [*existing, (b"x-feature-flags", value)]}


def _with_notice(
    message: Any, notices: DeprecationNotices, scope: Any, record: RequestRecord
) -> Any:
    """``http.response.start`` with the Deprecation / Sunset headers of a deprecated route
    (the route is in the scope once the app has routed); unchanged otherwise, and when
    the app set a ``Deprecation`` header itself."""
    route = asgi_route_template(scope, record.root_path, record.status, record.path)
    headers = notices.headers_for(record.method, route)
    existing = message.get("headers", ())
    if not headers or any(name.lower() == b"deprecation" for name, _ in existing):
        return message
    encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return {**message, "headers": [*existing, *encoded]}
