"""Request-path overhead as CPU instructions per request, counted by valgrind (callgrind).

Timings on a shared machine wander by several microseconds from one run to the next;
instruction counts do not. Each variant runs in its own process twice, with 0 and with N
requests, under ``valgrind --tool=callgrind``; the difference divided by N is what one
request costs, start-up excluded. Variants: the bare app, the thinnest possible recorder
(wraps ``send`` / ``start_response``, appends a tuple), and apiusage.

    python benchmarks/instructions.py         # needs valgrind (apt-get install valgrind)
    python benchmarks/instructions.py --requests 500

The worker thread is kept asleep (its queue is emptied every 100 requests, as the worker
would), so the counts are the request path only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

KINDS = ("asgi", "wsgi")
MODES = ("bare", "thin", "apiusage")


# ------------------------------------------------------------------- the measured process
def _run(kind: str, mode: str, requests: int) -> None:
    import apiusage
    from apiusage.testing import recording_client

    client, _ = recording_client(batch_size=10_000, flush_interval=3600, max_queue_size=10**8)
    recorded: list[tuple[Any, ...]] = []

    def every_hundred(i: int) -> None:
        if i % 100 == 99:
            client.delivery._queue.clear()  # type: ignore[attr-defined]  # what the worker does
            client.delivery._bytes_out = client.delivery._bytes_in  # type: ignore[attr-defined]
            recorded.clear()

    if kind == "wsgi":
        from flask import Flask

        flask_app = Flask("bench")

        @flask_app.get("/v1/items/<item_id>")
        def item(item_id: str) -> dict[str, str]:
            return {"id": item_id}

        bare = flask_app.wsgi_app

        def thin(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            started, status = time.perf_counter_ns(), []

            def recording_start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
                status.append(s)
                return start_response(s, headers)

            result = bare(environ, recording_start_response)
            recorded.append((environ["PATH_INFO"], status, time.perf_counter_ns() - started))
            return result

        wsgi_app = {
            "bare": bare,
            "thin": thin,
            "apiusage": apiusage.WSGIMiddleware(bare, client=client),
        }[mode]
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/v1/items/42",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "bench",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "HTTP_HOST": "bench",
            "HTTP_USER_AGENT": "python-requests/2.32.3",
            "HTTP_X_API_KEY": "sk_live_benchmark",
        }

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            return None

        def one() -> None:
            request = dict(environ)
            request["wsgi.input"] = io.BytesIO()
            body = wsgi_app(request, start_response)
            for _ in body:
                pass
            body.close()  # type: ignore[attr-defined]

        for _ in range(50):
            one()
        for i in range(requests):
            one()
            every_hundred(i)
        return

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item_endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    bare_asgi = Starlette(routes=[Route("/v1/items/{item_id}", item_endpoint)])

    async def thin_asgi(scope: Any, receive: Any, send: Any) -> None:
        started, status = time.perf_counter_ns(), []

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await bare_asgi(scope, receive, recording_send)
        recorded.append((scope["path"], status, time.perf_counter_ns() - started))

    asgi_app = {
        "bare": bare_asgi,
        "thin": thin_asgi,
        "apiusage": apiusage.ASGIMiddleware(bare_asgi, client=client),
    }[mode]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/items/42",
        "raw_path": b"/v1/items/42",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"user-agent", b"python-requests/2.32.3"),
            (b"x-api-key", b"sk_live_benchmark"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def main() -> None:
        for _ in range(50):
            await asgi_app(dict(scope), receive, send)
        for i in range(requests):
            await asgi_app(dict(scope), receive, send)
            every_hundred(i)

    asyncio.run(main())


# ------------------------------------------------------------------------------ the driver
def _instructions(kind: str, mode: str, requests: int) -> int:
    with tempfile.TemporaryDirectory() as workdir:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={os.path.join(workdir, 'out')}",
                sys.executable,
                __file__,
                "--child",
                kind,
                mode,
                str(requests),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            cwd=workdir,
            check=True,
        )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, mode, requests = args.child
        _run(kind, mode, int(requests))
        os._exit(0)  # skip interpreter teardown: it is not part of a request
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    jobs = [(kind, mode, n) for kind in KINDS for mode in MODES for n in (0, args.requests)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _instructions(*job), jobs), strict=True))
    print(f"CPU instructions per request (callgrind, {args.requests} requests, start-up excluded)")
    for kind in KINDS:
        per_request = {
            mode: (counts[(kind, mode, args.requests)] - counts[(kind, mode, 0)]) / args.requests
            for mode in MODES
        }
        bare = per_request["bare"]
        label = "Starlette" if kind == "asgi" else "Flask"
        print(f"\n{kind.upper()} ({label} JSON route)")
        print(f"{'variant':<28}{'instructions':>14}{'added':>10}{'ratio':>8}")
        for mode in MODES:
            value = per_request[mode]
            added = "" if mode == "bare" else f"{value - bare:+,.0f}"
            print(f"{mode:<28}{value:>14,.0f}{added:>10}{value / bare:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
