"""``ApiUsageMiddleware``: sync- and async-capable, finished when the response is closed.

Django closes a response after the server has sent its last byte (under ASGI, in a worker
thread), so the record is finished there: duration covers streaming, and the user is read
(``request.user``) off the response path and outside the event loop, where a database
lookup cannot raise ``SynchronousOnlyOperation``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import Token
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import SimpleLazyObject, empty

from apiusage.config import ConfigurationError
from apiusage.context import IGNORED_REQUEST, _current_record, current_record
from apiusage.record import RequestRecord, exception_name
from django_apiusage import conf

__all__ = ["ApiUsageMiddleware", "drf_auth_method", "record_exception"]

_DRF_AUTH_METHODS = {
    "TokenAuthentication": "api_key",
    "SessionAuthentication": "session",
    "BasicAuthentication": "basic",
    "RemoteUserAuthentication": "other",
    "JWTAuthentication": "jwt",
    "JWTStatelessUserAuthentication": "jwt",
    "JSONWebTokenAuthentication": "jwt",
}


def record_exception(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``got_request_exception`` receiver: note the exception class on the current record."""
    import sys

    record = current_record()
    exc = sys.exc_info()[1]
    if record is not None and exc is not None:
        record.exception = exception_name(exc)


_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def route_template(route: str) -> str:
    """``resolver_match.route`` with a leading slash; ``re_path`` regexes made readable.

    ``^api/users/(?P<pk>[^/.]+)/$`` (DRF routers, ``re_path``) becomes ``/api/users/<pk>/``.
    """
    if "(?P<" in route or "^" in route or "$" in route:
        route = _NAMED_GROUP.sub(r"<\1>", route).replace("^", "").replace("$", "")
        route = route.replace("\\.", ".").replace("\\", "")
    return "/" + route.lstrip("/")


def drf_auth_method(authenticator: Any) -> str | None:
    """The auth method of a Django REST Framework authenticator instance."""
    if authenticator is None:
        return None
    for cls in type(authenticator).__mro__:
        method = _DRF_AUTH_METHODS.get(cls.__name__)
        if method is not None:
            return method
    return "other"


class _RequestState:
    """What resolvers see as ``view.state``: the request, with ``user`` read safely."""

    def __init__(self, request: HttpRequest, drf_user: Any) -> None:
        self._request = request
        self._drf_user = drf_user

    @property
    def user(self) -> Any:
        if self._drf_user is not None:
            return self._drf_user
        request = self._request
        user = request.__dict__.get("user")
        if user is None:
            return None  # no AuthenticationMiddleware
        if not isinstance(user, SimpleLazyObject):
            return user  # set by the app, a middleware or DRF: what the view saw
        if user._wrapped is not empty:
            return user._wrapped
        for cached in ("_acached_user", "_cached_user"):  # loaded through auser()/get_user()
            if hasattr(request, cached):
                return getattr(request, cached)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return request.user  # a plain thread: a database lookup is allowed here
        return None  # on an event loop: never a sync database call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def _count_sync(chunks: Iterator[bytes], record: RequestRecord) -> Iterator[bytes]:
    for chunk in chunks:
        record.response_bytes += len(chunk)
        yield chunk


async def _count_async(chunks: AsyncIterator[bytes], record: RequestRecord) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        record.response_bytes += len(chunk)
        yield chunk


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

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        started = self._start(request)
        if started is None:
            ignored = _current_record.set(IGNORED_REQUEST)  # track() here is ignored
            try:
                return self.get_response(request)
            finally:
                _current_record.reset(ignored)
        record, token = started
        try:
            response = self.get_response(request)
        except BaseException as exc:
            self._failed(record, token, request, exc)
            raise
        return self._respond(record, token, request, response)

    async def __acall__(self, request: HttpRequest) -> Any:
        started = self._start(request)
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        if started is None:
            ignored = _current_record.set(IGNORED_REQUEST)  # track() here is ignored
            try:
                return await get_response(request)
            finally:
                _current_record.reset(ignored)
        record, token = started
        try:
            response = await get_response(request)
        except BaseException as exc:
            self._failed(record, token, request, exc)
            raise
        return self._respond(record, token, request, response)

    # ------------------------------------------------------------------ helpers
    def _start(self, request: HttpRequest) -> tuple[RequestRecord, Token[Any] | None] | None:
        client = self.client
        outer = _current_record.get()
        if outer is IGNORED_REQUEST:
            return None
        if not client.settings.enabled or client.is_excluded(request.path_info or "/"):
            return None
        if outer is not None:
            # Already recorded by apiusage's ASGI/WSGI middleware around Django: enrich it.
            return outer, None
        meta = request.META
        record = RequestRecord(
            transport="asgi" if isinstance(request, ASGIRequest) else "wsgi",
            method=request.method or "GET",
            path=request.path,
            query_string=meta.get("QUERY_STRING", ""),
            raw_headers=meta,
            scope=meta,
            root_path=meta.get("SCRIPT_NAME", ""),
            framework="django",
        )
        length = meta.get("CONTENT_LENGTH")
        if length and str(length).isdigit():
            record.request_bytes = int(length)
        return record, _current_record.set(record)

    def _annotate(self, record: RequestRecord, request: HttpRequest) -> None:
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None)
        record.route = route_template(route) if isinstance(route, str) else None
        record.native = request
        record.framework = "django"

    def _failed(
        self,
        record: RequestRecord,
        token: Token[Any] | None,
        request: HttpRequest,
        exc: BaseException,
    ) -> None:
        if token is None:
            return  # the outer middleware records it
        record.exception = record.exception or exception_name(exc)
        record.status = record.status or 500
        try:
            self._annotate(record, request)
            record.state = _RequestState(request, None)
        except Exception as error:
            self.client.stats.error("reading the Django request", error)
        _current_record.reset(token)
        if self.is_async:
            self._finish_later(record)
        else:
            self.client.finish_request_blocking(record)

    def _finish_later(self, record: RequestRecord) -> None:
        # An exception escaped Django (rare: Django turns them into responses). Finish off the
        # event loop so resolvers may touch the database.
        import threading

        threading.Thread(
            target=self.client.finish_request_blocking, args=(record,), daemon=True
        ).start()

    def _respond(
        self,
        record: RequestRecord,
        token: Token[Any] | None,
        request: HttpRequest,
        response: HttpResponseBase,
    ) -> HttpResponseBase:
        try:
            self._annotate(record, request)
            drf_request = (getattr(response, "renderer_context", None) or {}).get("request")
            drf_user = getattr(drf_request, "_user", None)
            auth_method = drf_auth_method(getattr(drf_request, "_authenticator", None))
            if auth_method is not None:
                record.auth_method = auth_method
            record.state = _RequestState(request, drf_user)
        except Exception as error:
            self.client.stats.error("reading the Django request", error)
        if token is None:
            return response  # the outer ASGI/WSGI middleware measures and finishes
        _current_record.reset(token)
        record.status = response.status_code
        try:
            self._measure(record, response)
        except Exception as error:
            self.client.stats.error("measuring the Django response", error)
            self.client.finish_request_blocking(record)
        return response

    def _measure(self, record: RequestRecord, response: HttpResponseBase) -> None:
        length = response.get("Content-Length")
        if length is not None and length.isdigit():
            record.response_bytes = int(length)
        elif getattr(response, "streaming", False):
            content = response.streaming_content  # type: ignore[attr-defined]
            if getattr(response, "is_async", False):
                response.streaming_content = _count_async(content, record)  # type: ignore[attr-defined]
            else:
                response.streaming_content = _count_sync(content, record)  # type: ignore[attr-defined]
        else:
            record.response_bytes = len(response.content)  # type: ignore[attr-defined]
        client = self.client

        def finish() -> None:
            record.finish_timing()
            client.finish_request_blocking(record)

        response._resource_closers.append(finish)  # type: ignore[attr-defined]
