"""FastAPI integration: ``ApiUsage(app)``.

Installed outside ``ServerErrorMiddleware`` like the Starlette integration. Route templates
include ``include_router`` prefixes and mount prefixes; identity can come from a
dependency (``apiusage.identify()`` inside ``Depends``), from ``request.state`` after the
handler, or from any resolver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import Depends

import apiusage
from apiusage import FlagValue, Route
from starlette_apiusage import ApiUsage as _StarletteApiUsage
from starlette_apiusage.routes import fastapi_routes, fastapi_served_paths

__all__ = ["ApiUsage", "Flag"]


class ApiUsage(_StarletteApiUsage):
    """Instrument a FastAPI application::

    app = FastAPI()
    ApiUsage(app, identify=caller_from_request)
    """

    framework = "fastapi"
    list_routes: Callable[[Any], Iterable[Route]] = staticmethod(fastapi_routes)
    served_paths: Callable[[Any], Iterable[str]] = staticmethod(fastapi_served_paths)


def Flag(key: str, default: FlagValue = False) -> Any:
    """A dependency that answers feature flag ``key`` for the request's caller::

        @app.get("/v1/items")
        def items(user: CurrentUser, pagination: Annotated[bool, Flag("new-pagination")]):
            ...

    Put it after the dependency that authenticates the caller, so the caller is known
    when the flag is evaluated. The answer is recorded on the request's event.
    """

    async def answer_flag() -> FlagValue:
        return apiusage.flag(key, default)

    answer_flag.__name__ = answer_flag.__qualname__ = f"flag_{key}"
    return Depends(answer_flag)
