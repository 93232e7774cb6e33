"""A plain WSGI app behind ``apiusage.WSGIMiddleware``, for the process tests (run by gunicorn).

Configured only through the environment, like :mod:`tests.support.proc_asgi_app`. The
caller comes from the ``caller`` query parameter; the response names the worker's pid.
A short pause per request lets concurrent requests spread over the workers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import apiusage


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/health":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    caller = parse_qs(environ.get("QUERY_STRING", "")).get("caller", [None])[0]
    if caller:
        apiusage.identify(caller)
    time.sleep(float(os.environ.get("PROC_APP_DELAY", "0.05")))
    body = json.dumps({"path": path, "pid": os.getpid()}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


app = apiusage.WSGIMiddleware(_app)
