"""Django under an ASGI server: ``get_asgi_application()`` that flushes apiusage at shutdown.

Django's own ASGI handler refuses ``lifespan`` connections, so the server never tells it
that it is shutting down; uvicorn then ends on SIGTERM by re-raising the signal, and the
process dies without running ``atexit``: the events apiusage still held were lost. Use this
``get_asgi_application()`` in ``asgi.py`` instead of Django's::

    from django_apiusage.asgi import get_asgi_application

    application = get_asgi_application()

It returns Django's handler, which also answers the lifespan protocol: at shutdown it
flushes apiusage (in a thread, within ``shutdown_timeout``) before telling the server that
shutdown is complete. HTTP connections are Django's as before.
"""

from __future__ import annotations

from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler

from apiusage.health import logger
from django_apiusage import conf

__all__ = ["ASGIHandler", "get_asgi_application"]


class ASGIHandler(DjangoASGIHandler):
    """Django's ASGI handler, plus the ASGI lifespan protocol (apiusage flushes at shutdown)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await super().__call__(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await sync_to_async(_flush, thread_sensitive=False)()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _flush() -> None:
    try:
        client = conf.client()
    except Exception as exc:  # misconfigured: nothing was recorded, so nothing to flush
        logger.debug("apiusage: nothing to flush at lifespan shutdown: %s", exc)
        return
    with client.stats.guard("flushing at lifespan shutdown"):
        client.flush()


def get_asgi_application() -> ASGIHandler:
    """Like ``django.core.asgi.get_asgi_application()``, with the lifespan protocol."""
    django.setup(set_prefix=False)
    return ASGIHandler()
