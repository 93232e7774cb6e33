"""The apps that ``bench_server.py`` serves with uvicorn (FastAPI) and gunicorn (Flask).

Configured through the environment, as a deployed app would be:

* ``BENCH_VARIANT``: ``bare`` (the app alone), ``apiusage`` (``ApiUsage(app)``, configured
  by ``POSTHOG_API_KEY`` / ``POSTHOG_HOST`` / ``APIUSAGE_*``) or ``posthog-capture`` (a
  hand-written pure ASGI / WSGI middleware calling ``posthog.Posthog.capture()`` once per
  request);
* ``BENCH_CAPTURE_URL``: the PostHog host of the ``posthog-capture`` variant;
* ``BENCH_WORK_LOOPS``: iterations of the busy loop of ``/v1/work/{item_id}`` (calibrated
  by the benchmark to about 1 ms of CPU).

Routes: ``GET /v1/items/{item_id}`` (hello world, small JSON), ``GET /v1/work/{item_id}``
(about 1 ms of CPU, then small JSON), ``GET /health``, ``GET /_stats`` (requests served by
the two ``/v1`` routes, and apiusage's counters) and, in the FastAPI app only, the
event-loop lateness monitor: ``GET /_stall`` and ``POST /_stall/reset``. The benchmark's
own paths are not recorded: ``APIUSAGE_EXCLUDE_PATHS`` names them for apiusage, and the
``posthog-capture`` middleware skips them.

Start them with::

    uvicorn --factory --app-dir benchmarks server_apps:create_fastapi_app
    gunicorn -w 1 --chdir benchmarks 'server_apps:create_flask_app()'
"""

from __future__ import annotations

import atexit
import os
import time
from typing import Any

VARIANTS = ("bare", "apiusage", "posthog-capture")
#: Served too (FastAPI only), for ``bench_faults.py``: ``posthog.capture()`` then
#: ``flush()`` in the middleware after every request, the usual serverless recipe.
FLUSH_VARIANT = "posthog-capture-flush"
#: Paths of the benchmark itself, never recorded (the ``APIUSAGE_EXCLUDE_PATHS`` value).
BENCH_PATHS = ("/health", "/_stats", "/_stall", "/_stall/")
STALL_INTERVAL = 0.001

_served = 0


def burn(loops: int) -> int:
    """A busy loop: CPU time, no sleeping, no allocation worth mentioning."""
    total = 0
    for i in range(loops):
        total += i ^ 0x5A
    return total


def _variant() -> str:
    variant = os.environ.get("BENCH_VARIANT", "bare")
    if variant not in (*VARIANTS, FLUSH_VARIANT):
        raise SystemExit(f"BENCH_VARIANT must be one of {VARIANTS}, not {variant!r}")
    return variant


def _work_loops() -> int:
    return int(os.environ.get("BENCH_WORK_LOOPS", "20000"))


def _skip(path: str) -> bool:
    return path in BENCH_PATHS or path.startswith("/_stall/")


def _stats(variant: str) -> dict[str, Any]:
    stats: dict[str, Any] = {"served": _served, "variant": variant, "pid": os.getpid()}
    if variant == "apiusage":
        try:
            import apiusage

            stats["apiusage_file"] = os.path.dirname(apiusage.__file__ or "")
            stats["apiusage"] = apiusage.stats()
        except Exception as exc:  # the core is changing: never fail the benchmark on this
            stats["apiusage_error"] = f"{type(exc).__name__}: {exc}"
    return stats


def _posthog_client() -> Any:
    import posthog

    url = os.environ["BENCH_CAPTURE_URL"]
    # The recipe as its documentation writes it: a client with default settings.
    return posthog.Posthog("phc_bench", host=url)


# ----------------------------------------------------------------------- event-loop stall


class StallMonitor:
    """An asyncio task that sleeps 1 ms again and again and records how late it wakes up.

    It also times the garbage collector's pauses (``gc.callbacks``), so that a long stall
    can be told apart from a full collection.
    """

    def __init__(self, interval: float = STALL_INTERVAL) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self.times: list[float] = []
        self.since = time.perf_counter()
        self.gc_pauses: list[tuple[float, int, float]] = []  # (at, generation, seconds)
        self._gc_start = 0.0
        self._task: Any = None

    def start(self) -> None:
        import asyncio
        import gc

        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        import asyncio
        import contextlib
        import gc

        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            now = time.perf_counter()
            self.gc_pauses.append((now, int(info.get("generation", -1)), now - self._gc_start))

    async def _run(self) -> None:
        import asyncio

        clock = time.perf_counter
        interval = self.interval
        while True:
            start = clock()
            await asyncio.sleep(interval)
            end = clock()
            self.samples.append(end - start - interval)
            self.times.append(end)

    def reset(self) -> None:
        self.samples = []
        self.times = []
        self.gc_pauses = []
        self.since = time.perf_counter()

    def summary(self) -> dict[str, Any]:
        samples = sorted(self.samples)
        count = len(samples)
        worst = sorted(zip(self.samples, self.times, strict=True), reverse=True)[:5]
        gc_pauses = list(self.gc_pauses)
        full = [pause for pause in gc_pauses if pause[1] == 2]
        result: dict[str, Any] = {
            "count": count,
            "max_ms": 0.0,
            "p999_ms": 0.0,
            "p99_ms": 0.0,
            "p50_ms": 0.0,
            "mean_ms": 0.0,
            "over_2ms": 0,
            # The five latest wake-ups: [seconds since the reset, lateness in ms].
            "worst": [[round(at - self.since, 3), round(late * 1000, 2)] for late, at in worst],
            "gc_collections": len(gc_pauses),
            "gc_full_collections": len(full),
            "gc_max_ms": max((pause[2] for pause in gc_pauses), default=0.0) * 1000,
            "gc_full_max_ms": max((pause[2] for pause in full), default=0.0) * 1000,
        }
        if not count:
            return result

        def pct(p: float) -> float:
            return samples[min(count - 1, int(p * count))] * 1000

        result.update(
            max_ms=samples[-1] * 1000,
            p999_ms=pct(0.999),
            p99_ms=pct(0.99),
            p50_ms=pct(0.50),
            mean_ms=sum(samples) / count * 1000,
            over_2ms=sum(1 for sample in samples if sample > 0.002),
        )
        return result


# ---------------------------------------------------------------------------- FastAPI


class PosthogCaptureASGI:
    """The common recipe: one ``posthog.capture()`` per request, as a pure ASGI middleware."""

    def __init__(self, app: Any, client: Any, flush: bool = False) -> None:
        self.app = app
        self.client = client
        self.flush = flush

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _skip(scope["path"]):
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
                "api_request",
                distinct_id="api-client",
                properties={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": (time.perf_counter() - start) * 1000,
                },
            )
            if self.flush:
                self.client.flush()  # as the recipe writes it: blocking, on the event loop


def create_fastapi_app() -> Any:
    import asyncio
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    variant = _variant()
    loops = _work_loops()
    monitor = StallMonitor()
    client = _posthog_client() if variant.startswith("posthog-capture") else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        monitor.start()
        try:
            yield
        finally:
            await monitor.stop()
            if client is not None:
                await asyncio.to_thread(client.shutdown)  # deliver what is queued

    app = FastAPI(lifespan=lifespan)

    # No return annotations: FastAPI would turn them into a response model to validate.
    @app.get("/v1/items/{item_id}")
    async def item(item_id: int):  # type: ignore[no-untyped-def]
        global _served
        _served += 1
        return {"item_id": item_id, "name": "widget", "price": 9.99}

    @app.get("/v1/work/{item_id}")
    async def work(item_id: int):  # type: ignore[no-untyped-def]
        global _served
        _served += 1
        return {"item_id": item_id, "checksum": burn(loops) & 0xFFFF}

    @app.get("/health")
    async def health():  # type: ignore[no-untyped-def]
        return {"status": "ok"}

    @app.get("/_stats")
    async def stats():  # type: ignore[no-untyped-def]
        return _stats(variant)

    @app.get("/_stall")
    async def stall():  # type: ignore[no-untyped-def]
        return monitor.summary()

    @app.post("/_stall/reset")
    async def stall_reset():  # type: ignore[no-untyped-def]
        monitor.reset()
        return {"status": "reset"}

    if variant == "apiusage":
        from fastapi_apiusage import ApiUsage

        ApiUsage(app)
    elif variant.startswith("posthog-capture"):
        app.add_middleware(PosthogCaptureASGI, client=client, flush=variant == FLUSH_VARIANT)
    return app


# ------------------------------------------------------------------------------ Flask


class PosthogCaptureWSGI:
    """The same recipe as a WSGI middleware around ``app.wsgi_app``."""

    def __init__(self, app: Any, client: Any) -> None:
        self.app = app
        self.client = client

    def __call__(self, environ: Any, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if _skip(path):
            return self.app(environ, start_response)
        start = time.perf_counter()
        status = [500]

        def start_response_wrapper(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = int(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, start_response_wrapper)
        finally:
            self.client.capture(
                "api_request",
                distinct_id="api-client",
                properties={
                    "method": environ["REQUEST_METHOD"],
                    "path": path,
                    "status": status[0],
                    "duration_ms": (time.perf_counter() - start) * 1000,
                },
            )


def create_flask_app() -> Any:
    from flask import Flask

    variant = _variant()
    loops = _work_loops()
    app = Flask(__name__)

    @app.get("/v1/items/<int:item_id>")
    def item(item_id: int) -> dict[str, Any]:
        global _served
        _served += 1
        return {"item_id": item_id, "name": "widget", "price": 9.99}

    @app.get("/v1/work/<int:item_id>")
    def work(item_id: int) -> dict[str, Any]:
        global _served
        _served += 1
        return {"item_id": item_id, "checksum": burn(loops) & 0xFFFF}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_stats")
    def stats() -> dict[str, Any]:
        return _stats(variant)

    if variant == "apiusage":
        from flask_apiusage import ApiUsage

        ApiUsage(app)
    elif variant == "posthog-capture":
        client = _posthog_client()
        app.wsgi_app = PosthogCaptureWSGI(app.wsgi_app, client)  # type: ignore[method-assign]
        atexit.register(client.shutdown)  # WSGI has no shutdown hook: deliver at exit
    return app
