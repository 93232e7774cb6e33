"""Django under an ASGI server: ``get_asgi_application()`` inside apiusage's ASGI middleware.

Use it in ``asgi.py`` instead of Django's::

    from django_apiusage.asgi import get_asgi_application

    application = get_asgi_application()

It returns Django's handler wrapped in :class:`apiusage.ASGIMiddleware` (with the
project's client), so a Django request is recorded exactly like any other ASGI request:
timed to its last byte, and flushed at shutdown. ``ApiUsageMiddleware`` in ``MIDDLEWARE``
then only annotates the request (route, user, DRF's auth method).

Django's own handler refuses ``lifespan`` connections, so the server would never say that
it is shutting down; uvicorn then ends on SIGTERM by re-raising the signal, without
running ``atexit``, and the events still queued were lost. This handler answers the
lifespan protocol, and the middleware flushes (in a thread, within ``shutdown_timeout``)
before the server is told that shutdown is complete.
"""

from __future__ import annotations

from typing import Any

import django
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler

from apiusage import ASGIMiddleware, ConfigurationError
from django_apiusage import conf

__all__ = ["ASGIHandler", "get_asgi_application"]


class ASGIHandler(DjangoASGIHandler):
    """Django's ASGI handler, plus the ASGI lifespan protocol."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await super().__call__(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def get_asgi_application() -> ASGIMiddleware:
    """Like ``django.core.asgi.get_asgi_application()``, recorded by apiusage."""
    django.setup(set_prefix=False)
    try:
        client = conf.client()
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"apiusage: {exc}") from None
    return ASGIMiddleware(ASGIHandler(), client=client)
