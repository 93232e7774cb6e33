"""``ApiUsageMiddleware``: tells apiusage's recording what Django knows about a request.

It records through the core's lifecycle (:mod:`apiusage.recording`). Inside apiusage's
ASGI or WSGI middleware (``django_apiusage.asgi.get_asgi_application()``) the request is
already being recorded, and this only annotates it: route, request, user, DRF's auth
method. On its own it also measures: the recording finishes when Django closes the
response, after the server has sent its last byte (under ASGI, in a worker thread), so
the duration covers streaming and the user is read off the event loop, where a database
lookup cannot raise ``SynchronousOnlyOperation``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase

from apiusage import ConfigurationError, Recording, annotate
from apiusage.feature_flags import FLAGS_HEADER, flags_header_value
from django_apiusage import conf
from django_apiusage.reading import RequestState, drf_auth_method, record_exception, route_template

__all__ = ["ApiUsageMiddleware", "drf_auth_method", "record_exception"]


class ApiUsageMiddleware:
    """Records every request Django handles; put it first in ``MIDDLEWARE``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        try:
            self.client = conf.client()
        except ConfigurationError as exc:
            raise ImproperlyConfigured(f"apiusage: {exc}") from None
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self._reading_guard = self.client.stats.guard("reading the Django request")
        self._measuring_guard = self.client.stats.guard("measuring the Django response")

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        recording = self._begin(request)
        try:
            response = self.get_response(request)
        except BaseException as exc:
            self._failed(recording, request, exc)
            recording.finish_blocking()
            raise
        return self._respond(recording, request, response)

    async def __acall__(self, request: HttpRequest) -> Any:
        recording = self._begin(request)
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        try:
            response = await get_response(request)
        except BaseException as exc:
            self._failed(recording, request, exc)
            if recording.measures:  # resolvers may query the database: not on the loop
                await sync_to_async(recording.finish_blocking, thread_sensitive=False)()
            raise
        return self._respond(recording, request, response)

    # ------------------------------------------------------------------ helpers
    def _begin(self, request: HttpRequest) -> Recording:
        meta = request.META
        recording = self.client.begin(
            "asgi" if isinstance(request, ASGIRequest) else "wsgi",
            request.method or "GET",
            request.path,
            meta.get("QUERY_STRING", ""),
            meta,
            meta,
            meta.get("SCRIPT_NAME", ""),
            request.path_info or "/",
        )
        length = meta.get("CONTENT_LENGTH")
        if length and str(length).isdigit():
            recording.received(int(length))
        # What the app attaches (request.user) is visible from the start, for what needs
        # the caller during the view (feature flags); the response refines it (DRF).
        annotate(request=request, state=RequestState(request, None))
        return recording

    def _annotate(
        self, recording: Recording, request: HttpRequest, response: HttpResponseBase | None
    ) -> None:
        with self._reading_guard:
            match = getattr(request, "resolver_match", None)
            route = getattr(match, "route", None)
            drf_request = (getattr(response, "renderer_context", None) or {}).get("request")
            drf_user = getattr(drf_request, "_user", None)
            state = recording.record.state
            if isinstance(state, RequestState):  # made at the start: DRF's user joins it
                state.drf_user = drf_user
            else:
                annotate(request=request, state=RequestState(request, drf_user))
            annotate(
                route=route_template(route) if isinstance(route, str) else None,
                auth_method=drf_auth_method(getattr(drf_request, "_authenticator", None)),
            )

    def _failed(self, recording: Recording, request: HttpRequest, exc: BaseException) -> None:
        recording.failed(exc)
        self._annotate(recording, request, None)
        recording.leave()

    def _respond(
        self, recording: Recording, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        self._annotate(recording, request, response)
        recording.leave()
        notices = self.client.notices
        if notices is not None and not response.has_header("Deprecation"):
            with self._reading_guard:
                route = getattr(getattr(request, "resolver_match", None), "route", None)
                if isinstance(route, str):
                    method = request.method or "GET"
                    for name, value in notices.headers_for(method, route_template(route)):
                        response[name] = value
        flags = recording.record.flags
        if flags and self.client.settings.flags_header and not response.has_header(FLAGS_HEADER):
            response[FLAGS_HEADER] = flags_header_value(flags)
        if recording.measures:
            recording.response_started(response.status_code)
            with self._measuring_guard:
                self._measure(recording, response)
                return response
            recording.finish_blocking()  # could not hook the response's close()
        return response

    def _measure(self, recording: Recording, response: HttpResponseBase) -> None:
        length = response.get("Content-Length")
        if length is not None and length.isdigit():
            recording.sent(int(length))
        elif getattr(response, "is_async", False):  # streamed: counted as it is sent
            response.streaming_content = recording.counted_async(response.streaming_content)  # type: ignore[attr-defined]
        elif getattr(response, "streaming", False):
            response.streaming_content = recording.counted(response.streaming_content)  # type: ignore[attr-defined]
        else:
            recording.sent(len(response.content))  # type: ignore[attr-defined]
        recording.finish_when_closed(response)
