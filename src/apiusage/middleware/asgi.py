"""Pure ASGI middleware: wraps ``send``/``receive`` to record a request, nothing more.

No response buffering, no BaseHTTPMiddleware: streaming, websockets and lifespan behave
exactly as without it. Non-HTTP scopes pass straight through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from asgiref.compatibility import guarantee_single_callable
from asgiref.sync import sync_to_async
from asgiref.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from apiusage.client import UsageClient
from apiusage.context import IGNORED_REQUEST, _current_record
from apiusage.identity import Resolver
from apiusage.middleware._common import make_client
from apiusage.record import RequestRecord, exception_name
from apiusage.sinks.base import Sink

__all__ = ["ASGIMiddleware"]

_CLIENT_GONE = 499  # nginx's convention: the client closed the connection first


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
        self.app = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
        self.client = make_client(client, identify, sink, posthog_client, settings)
        self.framework = self.client.settings.framework
        self._enabled = self.client.settings.enabled

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, self._lifespan_send(send))
            else:
                await self.app(scope, receive, send)
            return
        if _current_record.get() is not None:  # already recorded by an outer apiusage
            await self.app(scope, receive, send)
            return
        if not self._enabled or self.client.is_excluded(scope["path"]):
            # Not recorded; track()/identify() in its handlers are accepted and ignored.
            ignored = _current_record.set(IGNORED_REQUEST)
            try:
                await self.app(scope, receive, send)
            finally:
                _current_record.reset(ignored)
            return

        record = RequestRecord(
            "asgi",
            scope["method"],
            scope["path"],
            scope.get("query_string", b""),
            scope.get("headers", ()),
            scope,
            scope.get("root_path", ""),
            self.framework,
        )

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
            try:
                await send(message)
            except OSError:
                record.client_disconnected = True
                raise

        token = _current_record.set(record)
        try:
            await self.app(scope, receive_recording, send_recording)
        except BaseException as exc:
            record.exception = exception_name(exc)
            if isinstance(exc, asyncio.CancelledError):
                record.client_disconnected = True
            if record.status is None:
                record.status = _CLIENT_GONE if record.client_disconnected else 500
            raise
        finally:
            _current_record.reset(token)
            record.finish_timing()
            try:
                pending = self.client.finish_request(record)
                if pending is not None:
                    await pending
            except Exception as exc:
                self.client.stats.error("finishing a request", exc)

    def _lifespan_send(self, send: ASGISendCallable) -> ASGISendCallable:
        """Flush queued events (in a thread, bounded) before the server is told shutdown is done."""

        async def lifespan_send(message: ASGISendEvent) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await sync_to_async(self.client.flush, thread_sensitive=False)()
                except Exception as exc:
                    self.client.stats.error("flushing at lifespan shutdown", exc)
            await send(message)

        return lifespan_send
