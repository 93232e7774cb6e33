"""FastAPI integration: ``ApiUsage(app)``.

Installed outside ``ServerErrorMiddleware`` like the Starlette integration. Route templates
include ``include_router`` prefixes and mount prefixes; identity can come from a
dependency (``apiusage.identify()`` inside ``Depends``), from ``request.state`` after the
handler, or from any resolver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from apiusage import Route
from starlette_apiusage import ApiUsage as _StarletteApiUsage
from starlette_apiusage.routes import fastapi_routes, fastapi_served_paths

__all__ = ["ApiUsage"]


class ApiUsage(_StarletteApiUsage):
    """Instrument a FastAPI application::

    app = FastAPI()
    ApiUsage(app, identify=caller_from_request)
    """

    framework = "fastapi"
    list_routes: Callable[[Any], Iterable[Route]] = staticmethod(fastapi_routes)
    served_paths: Callable[[Any], Iterable[str]] = staticmethod(fastapi_served_paths)
