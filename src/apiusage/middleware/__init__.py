"""Pure ASGI and WSGI middleware: the request path of apiusage."""

from apiusage.middleware.asgi import ASGIMiddleware
from apiusage.middleware.wsgi import WSGIMiddleware

__all__ = ["ASGIMiddleware", "WSGIMiddleware"]
