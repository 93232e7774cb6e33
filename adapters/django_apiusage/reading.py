"""What Django knows about a request, read for apiusage: route template, user, DRF auth.

Only reads: nothing here runs a database query on the event loop, and nothing writes
apiusage's records (the middleware annotates the recording with what these return).
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject, empty

from apiusage import annotate

__all__ = ["RequestState", "drf_auth_method", "record_exception", "route_template"]

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
    """``got_request_exception`` receiver: note the exception class on the current request."""
    exc = sys.exc_info()[1]
    if exc is not None:
        annotate(exception=exc)


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


class RequestState:
    """What resolvers see as ``view.state``: the request, with ``user`` read safely."""

    def __init__(self, request: HttpRequest, drf_user: Any) -> None:
        self._request = request
        #: DRF's authenticated user, once a DRF view ran (it wins over ``request.user``).
        self.drf_user = drf_user

    @property
    def user(self) -> Any:
        if self.drf_user is not None:
            return self.drf_user
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
