"""Request-path overhead of apiusage, measured in-process against bare apps and peers.

Each app is called directly (``await app(scope, receive, send)`` for ASGI, ``app(environ,
start_response)`` for WSGI) with prebuilt requests and no-op server callables, so the
numbers hold only what the app and its middleware cost, not a server's or an HTTP
client's. Variants are interleaved within every repeat. The main measure is the process
CPU time per request (all threads), which other processes on a busy machine do not
inflate the way they inflate elapsed time; "added" is the median of the per-run
differences to the bare app, so slow drifts of the machine cancel out.

apiusage is measured twice:

* "request path": delivery is configured so the worker thread stays asleep while a run
  is timed (batch size above the run's request count, long flush interval); the queued
  records are built and delivered after the run, and that deferred work is reported on
  its own line. This is what a request pays.
* "worker running": default delivery settings, so the worker builds events on its own
  thread during the timed run and competes for the GIL: the total CPU cost per request.

Run from the repository root::

    python benchmarks/bench_overhead.py            # about a minute
    python benchmarks/bench_overhead.py --quick    # a few seconds, noisier
    python benchmarks/bench_overhead.py --check    # exit 1 when over the target
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

TARGET_ADDED_US = 10.0
#: Delivery settings that keep the worker asleep during a timed run (flushed after it).
QUIET: dict[str, Any] = {"batch_size": 10_000, "flush_interval": 3600.0, "max_queue_size": 100_000}

# ------------------------------------------------------------------------------ requests

API_KEY = "sk_live_benchmark_0123456789abcdef"
USER_AGENT = "python-requests/2.32.3"

ASGI_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},  # what uvicorn sends
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/v1/items/42",
    "raw_path": b"/v1/items/42",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", USER_AGENT.encode()),
        (b"accept", b"application/json"),
        (b"x-api-key", API_KEY.encode()),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}

WSGI_ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/v1/items/42",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "HTTP_USER_AGENT": USER_AGENT,
    "HTTP_ACCEPT": "application/json",
    "HTTP_X_API_KEY": API_KEY,
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.input": io.BytesIO(b""),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}

_REQUEST_MESSAGE = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> dict[str, Any]:
    return _REQUEST_MESSAGE


async def send(message: dict[str, Any]) -> None:
    return None


def start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Callable[[bytes], None]:
    return _write


def _write(data: bytes) -> None:
    return None


# ---------------------------------------------------------------------------------- apps


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"], "name": "widget"})

    return Starlette(routes=[Route("/v1/items/{item_id}", item)])


def flask_app() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get("/v1/items/<item_id>")
    def item(item_id: str) -> dict[str, str]:
        return {"id": item_id, "name": "widget"}

    return app


def posthog_client() -> Any:
    """A real posthog client that builds every event on capture() and then discards it."""
    from posthog import Posthog

    return Posthog(
        "phc_benchmark_not_a_real_key",
        host="http://127.0.0.1:9",
        send=False,
        sync_mode=False,
        disable_geoip=True,
    )


class ThinnestRecorder:
    """The floor: a pure ASGI middleware that wraps ``send`` and appends a tuple."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.records: list[tuple[Any, ...]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter_ns()
        status = 0

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.records.append((scope, status, time.perf_counter_ns() - start))
            if len(self.records) > 10_000:
                self.records.clear()


class PostHogASGIMiddleware:
    """The usual recipe: a pure ASGI middleware calling ``posthog.capture()`` per request."""

    def __init__(self, app: Any, client: Any) -> None:
        self.app = app
        self.client = client

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.client.capture(
                event="api_request",
                distinct_id="anonymous",
                properties={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status_code": status,
                    "duration_ms": (time.perf_counter() - start) * 1000,
                    "$process_person_profile": False,
                },
            )


def posthog_base_http_middleware(app: Any, client: Any) -> Any:
    """The same recipe written as a Starlette ``BaseHTTPMiddleware``."""
    from starlette.middleware.base import BaseHTTPMiddleware

    async def dispatch(request: Any, call_next: Any) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        client.capture(
            event="api_request",
            distinct_id="anonymous",
            properties={
                "method": request.method,
                "path": request.url.path,
                "status_code": response.status_code,
                "duration_ms": (time.perf_counter() - start) * 1000,
                "$process_person_profile": False,
            },
        )
        return response

    return BaseHTTPMiddleware(app, dispatch=dispatch)


def noop_base_http_middleware(app: Any) -> Any:
    from starlette.middleware.base import BaseHTTPMiddleware

    async def dispatch(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    return BaseHTTPMiddleware(app, dispatch=dispatch)


class PostHogWSGIMiddleware:
    """``posthog.capture()`` in a pure WSGI middleware, once the app has answered."""

    def __init__(self, app: Any, client: Any) -> None:
        self.app = app
        self.client = client

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start = time.perf_counter()
        status = ["500"]

        def start_response_wrapper(s: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = s
            return start_response(s, headers, exc_info)

        result = self.app(environ, start_response_wrapper)
        self.client.capture(
            event="api_request",
            distinct_id="anonymous",
            properties={
                "method": environ["REQUEST_METHOD"],
                "path": environ["PATH_INFO"],
                "status_code": int(status[0][:3]),
                "duration_ms": (time.perf_counter() - start) * 1000,
                "$process_person_profile": False,
            },
        )
        return result


# --------------------------------------------------------------------------- measurement

Timing = tuple[float, float]  # (CPU µs, wall µs) per request


@dataclass
class Variant:
    name: str
    app: Any
    #: Called, untimed, after each timed run (delivers what apiusage queued); returns CPU s.
    after: Callable[[], float] | None = None
    cpu: list[float] = field(default_factory=list)  # µs per request, one per run
    wall: list[float] = field(default_factory=list)
    deferred: list[float] = field(default_factory=list)  # CPU µs per request, on the worker

    def median(self) -> float:
        return statistics.median(self.cpu)

    def added_to(self, baseline: Variant) -> float:
        """Median of the per-run differences (each run is paired with the baseline's)."""
        return statistics.median(a - b for a, b in zip(self.cpu, baseline.cpu, strict=True))


def _per_request(cpu_started: int, wall_started: int, iterations: int) -> Timing:
    cpu = (time.process_time_ns() - cpu_started) / iterations / 1000
    wall = (time.perf_counter_ns() - wall_started) / iterations / 1000
    return cpu, wall


async def time_asgi(app: Any, iterations: int) -> Timing:
    scope = ASGI_SCOPE
    gc.collect()
    cpu_started, wall_started = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(iterations):
        await app(dict(scope), receive, send)
    return _per_request(cpu_started, wall_started, iterations)


def time_wsgi(app: Any, iterations: int) -> Timing:
    environ = WSGI_ENVIRON
    gc.collect()
    cpu_started, wall_started = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(iterations):
        result = app(dict(environ), start_response)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    return _per_request(cpu_started, wall_started, iterations)


def run(
    variants: list[Variant],
    timer: Callable[[Any, int], Timing],
    iterations: int,
    repeats: int,
) -> None:
    for variant in variants:  # warm-up: imports, caches, first-call paths
        timer(variant.app, max(200, iterations // 5))
        if variant.after is not None:
            variant.after()
    for _ in range(repeats):
        for variant in variants:
            cpu, wall = timer(variant.app, iterations)
            variant.cpu.append(cpu)
            variant.wall.append(wall)
            if variant.after is not None:
                variant.deferred.append(variant.after() * 1e6 / iterations)


def apiusage_flush(client: Any, sink: Any) -> Callable[[], float]:
    """Deliver what the timed run queued; the process CPU time it took (the worker's work)."""

    def after() -> float:
        started = time.process_time()
        if not client.flush(timeout=120):
            raise RuntimeError("apiusage did not deliver the benchmark's records in time")
        elapsed = time.process_time() - started
        if sink is not None:
            sink.clear()
        return elapsed

    return after


def check_recorded(client: Any, label: str) -> None:
    """Make sure the wrapped app really recorded (a silent pass-through would look fast)."""
    stats = client.stats.snapshot()
    if stats["requests_recorded"] == 0 or stats["dropped"] or stats["internal_errors"]:
        raise RuntimeError(f"{label}: apiusage did not record as expected: {stats}")


# ------------------------------------------------------------------------------- output


def table(title: str, variants: list[Variant], baseline: Variant) -> str:
    rows = [title, "-" * len(title)]
    rows.append(
        f"{'variant':<52} {'CPU µs/req':>10} {'added µs':>9} {'ratio':>6} {'wall µs/req':>11}"
    )
    for variant in variants:
        added = "—" if variant is baseline else f"{variant.added_to(baseline):+.1f}"
        rows.append(
            f"{variant.name:<52} {variant.median():>10.1f} {added:>9} "
            f"{variant.median() / baseline.median():>6.2f} {statistics.median(variant.wall):>11.1f}"
        )
        if variant.deferred:
            rows.append(
                f"{'  └ then on the worker thread, off the request path':<52} "
                f"{statistics.median(variant.deferred):>10.1f}"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (noisier)")
    parser.add_argument("--iterations", type=int, help="requests per timed run")
    parser.add_argument("--repeats", type=int, help="timed runs per variant")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 if apiusage adds more than {TARGET_ADDED_US:g} µs on the request path",
    )
    args = parser.parse_args(argv)
    iterations = args.iterations or (500 if args.quick else 1_000)
    repeats = args.repeats or (5 if args.quick else 21)
    if not 1 <= iterations < QUIET["batch_size"]:
        parser.error(f"--iterations must be between 1 and {QUIET['batch_size'] - 1}")
    if repeats < 1:
        parser.error("--repeats must be at least 1")

    # Nothing from the developer's shell or a .env in the checkout may change the settings,
    # and nothing is written into the checkout.
    for name in list(os.environ):
        if name.startswith(("APIUSAGE_", "POSTHOG_")):
            del os.environ[name]
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="apiusage-bench-") as workdir:
        os.chdir(workdir)
        try:
            asgi_variants, wsgi_variants = measure(iterations, repeats)
        finally:
            os.chdir(home)

    import apiusage

    print(
        f"Python {platform.python_version()} on {platform.machine()} {platform.system()}; "
        f"apiusage {apiusage.__version__}, starlette {version('starlette')}, "
        f"flask {version('flask')}, posthog {version('posthog')}"
    )
    print(
        f"{iterations} requests per timed run, {repeats} runs per variant, interleaved. "
        "CPU µs/req: median over runs of the process CPU time per request (all threads);\n"
        "added µs: median of the per-run differences to the bare app; wall µs/req: median "
        "elapsed time.\n"
    )
    bare, flask_bare = asgi_variants[0], wsgi_variants[0]
    print(table("ASGI: GET /v1/items/{item_id}, Starlette JSON route", asgi_variants, bare))
    print()
    print(table("WSGI: GET /v1/items/<item_id>, Flask JSON route", wsgi_variants, flask_bare))
    print()
    asgi_added = asgi_variants[2].added_to(bare)
    wsgi_added = wsgi_variants[1].added_to(flask_bare)
    met = max(asgi_added, wsgi_added) <= TARGET_ADDED_US
    print(
        f"apiusage on the request path: ASGI {asgi_added:+.1f} µs, WSGI {wsgi_added:+.1f} µs "
        f"per request (target: at most {TARGET_ADDED_US:g} µs): {'met' if met else 'NOT met'}"
    )
    return 1 if args.check and not met else 0


def measure(iterations: int, repeats: int) -> tuple[list[Variant], list[Variant]]:
    import apiusage
    from apiusage.testing import recording_client

    ph = posthog_client()
    path_client, path_sink = recording_client(**QUIET)
    busy_client, busy_sink = recording_client()
    wsgi_client, wsgi_sink = recording_client(**QUIET)

    # ---- ASGI ------------------------------------------------------------------------
    asgi_variants = [
        Variant("bare Starlette", starlette_app()),
        Variant(
            "thinnest recorder (wraps send, appends a tuple)", ThinnestRecorder(starlette_app())
        ),
        Variant(
            "apiusage.ASGIMiddleware (request path)",
            apiusage.ASGIMiddleware(starlette_app(), client=path_client),
            after=apiusage_flush(path_client, path_sink),
        ),
        Variant(
            "apiusage.ASGIMiddleware (worker running, defaults)",
            apiusage.ASGIMiddleware(starlette_app(), client=busy_client),
            after=apiusage_flush(busy_client, busy_sink),
        ),
        Variant(
            "posthog.capture() in a pure ASGI middleware",
            PostHogASGIMiddleware(starlette_app(), ph),
        ),
        Variant("BaseHTTPMiddleware, no-op", noop_base_http_middleware(starlette_app())),
        Variant(
            "BaseHTTPMiddleware + posthog.capture()",
            posthog_base_http_middleware(starlette_app(), ph),
        ),
    ]
    loop = asyncio.new_event_loop()
    try:
        run(
            asgi_variants,
            lambda app, n: loop.run_until_complete(time_asgi(app, n)),
            iterations,
            repeats,
        )
    finally:
        loop.close()

    # ---- WSGI ------------------------------------------------------------------------
    wrapped = flask_app()
    wrapped.wsgi_app = apiusage.WSGIMiddleware(wrapped.wsgi_app, client=wsgi_client)
    with_posthog = flask_app()
    with_posthog.wsgi_app = PostHogWSGIMiddleware(with_posthog.wsgi_app, ph)
    wsgi_variants = [
        Variant("bare Flask", flask_app()),
        Variant(
            "apiusage.WSGIMiddleware (request path)",
            wrapped,
            after=apiusage_flush(wsgi_client, wsgi_sink),
        ),
        Variant("posthog.capture() in a pure WSGI middleware", with_posthog),
    ]
    run(wsgi_variants, time_wsgi, iterations, repeats)

    for client, label in (
        (path_client, "ASGI"),
        (busy_client, "ASGI"),
        (wsgi_client, "WSGI"),
    ):
        check_recorded(client, label)
        client.close(timeout=10)
    ph.shutdown()
    return asgi_variants, wsgi_variants


if __name__ == "__main__":
    sys.exit(main())
