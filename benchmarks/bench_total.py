"""Total CPU per request, delivery included: apiusage against bare apps and ``posthog.capture()``.

``bench_overhead.py`` measures the request path alone. This benchmark measures everything
a process pays for each request it serves, including building the events and delivering
them (to a PostHog-compatible HTTP endpoint, or into the local SQLite store), so that the
work apiusage moves off the request path onto its background threads is counted too.

Method
------

* **Frameworks**: FastAPI, Starlette, Flask and Django (WSGI, configured in-process with
  ``settings.configure``), each serving one hello-world JSON route
  ``GET /v1/items/{item_id}``. Requests carry ``User-Agent: python-requests/2.32.3``,
  ``Accept: application/json`` and ``X-API-Key: sk_live_benchmark_0123456789abcdef``.
* **Variants**: ``bare`` (the app alone); ``apiusage-posthog`` (the documented adapter,
  ``POSTHOG_API_KEY`` / ``POSTHOG_HOST`` pointing at the capture endpoint, default
  delivery settings); ``apiusage-store`` (the adapter with no PostHog key, delivering into
  a fresh SQLite store); ``posthog-capture`` (a hand-written pure ASGI / WSGI middleware
  calling a real ``posthog.Posthog`` client's ``capture()`` once per request, default
  posthog settings); ``posthog-capture-flush`` (the same plus ``client.flush()`` after
  every request, the usual blog recipe; slow, so it runs fewer requests).
* **Driver**, in the measured process: ASGI apps through
  ``httpx.AsyncClient(transport=httpx.ASGITransport(app))`` in one event loop, WSGI apps
  through ``werkzeug.test.Client``; requests are sent one after the other. The driver's
  own cost is part of every row, bare included, and cancels out of "added".
* **One fresh process per measurement**: every (framework, variant, repeat) runs in its own
  subprocess, so no variant inherits another's threads, queues, caches or garbage. Within
  a repeat the variants run in turn, in alternating order from one repeat to the next, so
  slow drifts of the machine cancel out of the per-repeat differences.
* **Warm-up, then the timed run**: each process sends warm-up requests and waits until
  delivery is idle (``apiusage.flush()``, ``client.flush()``); then it reads the clocks,
  sends N requests, and **waits until delivery is complete** (``apiusage.flush()``, which
  must return True, or the posthog client's ``flush()``) before reading them again. Work
  left in a queue when the clock stops is therefore impossible: every event of the run has
  been built, serialised, sent and acknowledged (or committed to SQLite) inside the window.
* **Process CPU of all threads** (``time.process_time()``): apiusage and the posthog client
  build and send events on background threads; their CPU time is spent in the same
  process, under the same GIL, and is what a saturated server loses in throughput. CPU time
  rather than elapsed time also keeps other processes on a busy machine out of the number
  (elapsed time is shown too, as "wall"). The CPU time of child processes the measured
  process waited for is added; one still running after the run is flagged in the table,
  since work moved into another process would otherwise go uncounted.
* **The capture endpoint runs in another process** (``capture_endpoint.py``, shared with
  ``bench_server.py``): an in-process endpoint would add its own CPU time (parsing,
  decompressing, counting) to the measured process and bill the receiving side of the
  delivery to the sender. It accepts PostHog's ``POST /batch/``, ``/i/v0/e/``, ``/e/``,
  ``/capture/`` and ``/track/`` (JSON, gzip or not), answers ``200 {"status": 1}``, counts
  the events it received, and reports the counts on ``GET /count``. The measured process
  reads the count before and after its timed run (outside the timed window), so a variant
  that silently drops events shows a delivered ratio below 1. ``apiusage-store`` is
  counted in its SQLite file instead.

"added" is the median over repeats of (variant - bare) of the same repeat. The targets
printed at the end (not asserted) are for the apiusage rows: added CPU at most
0.3 x bare, and at most 0.25 x what ``posthog-capture`` adds.

Run from the repository root, with the test venv::

    .nox/tests/bin/python benchmarks/bench_total.py                    # about 9 minutes (2 CPUs)
    .nox/tests/bin/python benchmarks/bench_total.py --quick            # about 2 minutes, noisier
    .nox/tests/bin/python benchmarks/bench_total.py --frameworks fastapi,flask --json out.json

Options: ``--frameworks`` and ``--variants`` (comma-separated; ``bare`` is always run),
``--requests N`` (per timed run, default 3000), ``--flush-requests N`` (for
``posthog-capture-flush``, default 200), ``--repeats K`` (default 5), ``--quick`` (600
requests, 100 with a flush per request, 2 repeats), ``--json PATH`` (machine, versions,
summary and every run). Progress goes to stderr, the tables to stdout. The exit status
is 1 if a measuring process failed (its error is printed and the other runs go on).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import inspect
import json
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing, suppress
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

FRAMEWORKS = ("fastapi", "starlette", "flask", "django")
ASGI_FRAMEWORKS = frozenset({"fastapi", "starlette"})
VARIANTS = (
    "bare",
    "apiusage-posthog",
    "apiusage-store",
    "posthog-capture",
    "posthog-capture-flush",
)
APIUSAGE_VARIANTS = ("apiusage-posthog", "apiusage-store")
#: apiusage's default flush interval (seconds); the posthog SDK's is read from it.
APIUSAGE_FLUSH_INTERVAL = 1.0
PACKAGES = (
    "apiusage", "fastapi", "starlette", "flask", "werkzeug", "django", "posthog", "httpx",
    "orjson", "msgspec",
)  # fmt: skip

DEFAULT_REQUESTS = 3_000
DEFAULT_REPEATS = 5
DEFAULT_FLUSH_REQUESTS = 200  # posthog-capture-flush: one HTTP round trip per request
QUICK_REQUESTS = 600
QUICK_REPEATS = 2
QUICK_FLUSH_REQUESTS = 100
WARMUP_REQUESTS = 200
FLUSH_WARMUP_REQUESTS = 20
FLUSH_TIMEOUT = 120.0  # seconds; a flush that runs out of time is reported, not waited out

#: Targets for the apiusage rows (printed, not asserted).
TARGET_ADDED_VS_BARE = 0.30
TARGET_ADDED_VS_POSTHOG_CAPTURE = 0.25

POSTHOG_API_KEY = "phc_bench"
IDENTITY_SECRET = "bench-identity-secret-0123456789"  # 32 characters
API_KEY = "sk_live_benchmark_0123456789abcdef"
EVENT_NAME = "api_request"
REQUEST_PATH = "/v1/items/42"
HEADERS = {
    "User-Agent": "python-requests/2.32.3",
    "Accept": "application/json",
    "X-API-Key": API_KEY,
}
BASE_URL = "http://testserver"

# ============================================================================ capture endpoint
#: The counting stand-in for PostHog's capture endpoint, run in its own process.
CAPTURE_ENDPOINT = Path(__file__).resolve().parent / "capture_endpoint.py"


def capture_counts(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/count", timeout=10) as response:
        counts: dict[str, Any] = json.load(response)
        return counts


# ======================================================================================= apps


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id, "name": "widget"}

    return app


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


def django_app(*, apiusage: bool) -> Any:
    """Django configured in-process: one URL, no database, no other middleware."""
    import django
    from django.conf import settings
    from django.http import HttpRequest, JsonResponse
    from django.urls import path

    def item(request: HttpRequest, item_id: str) -> JsonResponse:
        return JsonResponse({"id": item_id, "name": "widget"})

    urls = types.ModuleType("bench_total_urls")
    urls.urlpatterns = [path("v1/items/<str:item_id>", item)]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-total-not-a-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=urls.__name__,
        INSTALLED_APPS=["django_apiusage"] if apiusage else [],
        MIDDLEWARE=["django_apiusage.middleware.ApiUsageMiddleware"] if apiusage else [],
        DATABASES={},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


def instrument_with_apiusage(framework: str, app: Any) -> Any:
    """The documented one-liner of each adapter (Django: settings, see django_app)."""
    if framework == "fastapi":
        from fastapi_apiusage import ApiUsage as FastAPIApiUsage

        FastAPIApiUsage(app)
    elif framework == "starlette":
        from starlette_apiusage import ApiUsage as StarletteApiUsage

        StarletteApiUsage(app)
    elif framework == "flask":
        from flask_apiusage import ApiUsage as FlaskApiUsage

        FlaskApiUsage(app)
    return app


# ================================================================ posthog.capture() recipes


class PostHogASGIMiddleware:
    """A pure ASGI middleware calling ``posthog.capture()`` once per request (4 properties)."""

    def __init__(self, app: Any, client: Any, *, flush: bool = False) -> None:
        self.app = app
        self.client = client
        self.flush = flush

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
            distinct_id = "anonymous"
            for name, value in scope["headers"]:
                if name == b"x-api-key":
                    distinct_id = value.decode("latin-1")
                    break
            self.client.capture(
                event=EVENT_NAME,
                distinct_id=distinct_id,
                properties={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": (time.perf_counter() - start) * 1000,
                },
            )
            if self.flush:
                self.client.flush()  # blocks the event loop, as the recipe does


class PostHogWSGIMiddleware:
    """The same recipe as a WSGI middleware, capturing once the app has answered."""

    def __init__(self, app: Any, client: Any, *, flush: bool = False) -> None:
        self.app = app
        self.client = client
        self.flush = flush

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start = time.perf_counter()
        status = ["500"]

        def start_response_wrapper(s: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = s
            return start_response(s, headers, exc_info)

        result: Iterable[bytes] = self.app(environ, start_response_wrapper)
        self.client.capture(
            event=EVENT_NAME,
            distinct_id=environ.get("HTTP_X_API_KEY", "anonymous"),
            properties={
                "method": environ["REQUEST_METHOD"],
                "path": environ["PATH_INFO"],
                "status": int(status[0][:3]),
                "duration_ms": (time.perf_counter() - start) * 1000,
            },
        )
        if self.flush:
            self.client.flush()
        return result


# ========================================================================= one measurement


@dataclass
class RunSpec:
    framework: str
    variant: str
    requests: int
    warmup: int
    capture_url: str
    store: str | None = None
    #: What is timed in wall-clock seconds runs this many times slower: time-based flushes
    #: (apiusage's and the posthog SDK's) and Python's GIL switch interval. A process run
    #: under valgrind, ~50x slower, would otherwise send batches ~50x smaller and hand the
    #: GIL between threads ~50x more often per request than the same traffic natively.
    time_scale: float = 1.0


@dataclass
class RunResult:
    framework: str
    variant: str
    repeat: int
    requests: int
    cpu_us: float  # process CPU (all threads) per request, delivery included
    wall_us: float
    flush_cpu_us: float  # the part of cpu_us spent after the last request, in the final flush
    delivered: int | None  # api_request events that reached the endpoint / store (None: bare)
    flush_ok: bool
    non_200: int
    live_children: int = 0  # child processes still running after the run (CPU not counted)
    stats: dict[str, int] | None = None  # apiusage.stats() after the run
    endpoint: dict[str, Any] = field(default_factory=dict)


def _build(spec: RunSpec) -> tuple[Any, Callable[[], bool], Any]:
    """The app to drive, the call that waits until delivery is complete, and a posthog client."""
    framework, variant = spec.framework, spec.variant
    ph_client: Any = None
    if variant.startswith("posthog-capture"):
        from posthog import Posthog

        default_interval = inspect.signature(Posthog).parameters["flush_interval"].default
        ph_client = Posthog(
            POSTHOG_API_KEY,
            host=spec.capture_url,
            flush_interval=default_interval * spec.time_scale,
        )
    if spec.time_scale != 1.0:
        sys.setswitchinterval(sys.getswitchinterval() * spec.time_scale)
    if variant in APIUSAGE_VARIANTS and spec.time_scale != 1.0:
        os.environ["APIUSAGE_FLUSH_INTERVAL"] = str(APIUSAGE_FLUSH_INTERVAL * spec.time_scale)

    if framework == "django":
        app = django_app(apiusage=variant in APIUSAGE_VARIANTS)
    else:
        app = {"fastapi": fastapi_app, "starlette": starlette_app, "flask": flask_app}[framework]()
        if variant in APIUSAGE_VARIANTS:
            instrument_with_apiusage(framework, app)

    if ph_client is not None:
        flush_each = variant == "posthog-capture-flush"
        if framework in ASGI_FRAMEWORKS:
            app = PostHogASGIMiddleware(app, ph_client, flush=flush_each)
        elif framework == "flask":
            app.wsgi_app = PostHogWSGIMiddleware(app.wsgi_app, ph_client, flush=flush_each)
        else:
            app = PostHogWSGIMiddleware(app, ph_client, flush=flush_each)

    def wait_for_delivery() -> bool:
        if variant in APIUSAGE_VARIANTS:
            import apiusage

            return apiusage.flush(timeout=FLUSH_TIMEOUT)
        if ph_client is not None:
            ph_client.flush(timeout_seconds=FLUSH_TIMEOUT)
        return True

    return app, wait_for_delivery, ph_client


def _delivered_so_far(spec: RunSpec) -> tuple[int, dict[str, Any]]:
    if spec.variant == "apiusage-store":
        assert spec.store is not None
        if not Path(spec.store).exists():
            return 0, {}
        with closing(sqlite3.connect(f"file:{spec.store}?mode=ro", uri=True)) as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM events WHERE event = ?", (EVENT_NAME,)
            ).fetchone()
        return int(count), {}
    counts = capture_counts(spec.capture_url)
    return int(counts["by_event"].get(EVENT_NAME, 0)), counts


def cpu_seconds() -> float:
    """CPU time of this process (all threads), plus that of any child process it reaped."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


def live_child_processes() -> int:
    """Child processes of this one still running (Linux): their CPU time would be missed."""
    pid, count = str(os.getpid()), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            # "pid (comm) state ppid ...": comm may contain spaces, so split after the ")".
            if stat.read_text().rpartition(")")[2].split()[1] == pid:
                count += 1
    return count


class Clock:
    """CPU time (see ``cpu_seconds``) and elapsed time, from ``start()``."""

    def start(self) -> None:
        gc.collect()
        self.cpu, self.wall = cpu_seconds(), time.perf_counter()

    def read(self) -> tuple[float, float]:
        return cpu_seconds() - self.cpu, time.perf_counter() - self.wall


def _result(
    spec: RunSpec,
    cpu: float,
    wall: float,
    flush_cpu: float,
    ok: bool,
    non_200: int,
    before: tuple[int, dict[str, Any]],
) -> RunResult:
    after = _delivered_so_far(spec)
    stats = None
    if spec.variant in APIUSAGE_VARIANTS:
        import apiusage

        stats = apiusage.stats()
    n = spec.requests
    return RunResult(
        framework=spec.framework,
        variant=spec.variant,
        repeat=-1,
        requests=n,
        cpu_us=cpu / n * 1e6,
        wall_us=wall / n * 1e6,
        flush_cpu_us=flush_cpu / n * 1e6,
        live_children=live_child_processes(),
        delivered=None if spec.variant == "bare" else after[0] - before[0],
        flush_ok=ok,
        non_200=non_200,
        stats=stats,
        endpoint={
            key: after[1].get(key, 0) - before[1].get(key, 0)
            for key in ("events", "capture_requests", "other_requests", "bad_requests")
        }
        if after[1]
        else {},
    )


def _check_response(status: int, body: bytes) -> None:
    if status != 200 or json.loads(body) != {"id": "42", "name": "widget"}:
        raise RuntimeError(f"unexpected response: {status} {body[:200]!r}")


async def _measure_asgi(spec: RunSpec) -> RunResult:
    import httpx

    app, wait_for_delivery, _ = _build(spec)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=HEADERS) as client:
        response = await client.get(REQUEST_PATH)
        _check_response(response.status_code, response.content)
        for _ in range(spec.warmup):
            await client.get(REQUEST_PATH)
        if not await asyncio.to_thread(wait_for_delivery):
            raise RuntimeError("delivery did not go idle after the warm-up")
        before = _delivered_so_far(spec)

        clock = Clock()
        clock.start()
        non_200 = 0
        for _ in range(spec.requests):
            response = await client.get(REQUEST_PATH)
            if response.status_code != 200:
                non_200 += 1
        requests_cpu = cpu_seconds()
        ok = await asyncio.to_thread(wait_for_delivery)
        cpu, wall = clock.read()
        flush_cpu = cpu_seconds() - requests_cpu
    return _result(spec, cpu, wall, flush_cpu, ok, non_200, before)


def _measure_wsgi(spec: RunSpec) -> RunResult:
    from werkzeug.test import Client

    app, wait_for_delivery, _ = _build(spec)
    client = Client(app)

    def get() -> Any:
        # buffered: the app's iterable is read and closed (which finishes apiusage's record)
        return client.get(REQUEST_PATH, base_url=BASE_URL, headers=HEADERS, buffered=True)

    response = get()
    _check_response(response.status_code, response.get_data())
    for _ in range(spec.warmup):
        get()
    if not wait_for_delivery():
        raise RuntimeError("delivery did not go idle after the warm-up")
    before = _delivered_so_far(spec)

    clock = Clock()
    clock.start()
    non_200 = 0
    for _ in range(spec.requests):
        if get().status_code != 200:
            non_200 += 1
    requests_cpu = cpu_seconds()
    ok = wait_for_delivery()
    cpu, wall = clock.read()
    flush_cpu = cpu_seconds() - requests_cpu
    return _result(spec, cpu, wall, flush_cpu, ok, non_200, before)


def run_child(spec: RunSpec) -> RunResult:
    if spec.framework in ASGI_FRAMEWORKS:
        return asyncio.run(_measure_asgi(spec))
    return _measure_wsgi(spec)


# =============================================================================== orchestration


class CaptureEndpoint:
    """The capture endpoint, in a subprocess of ours."""

    def __init__(self, workdir: Path) -> None:
        port_file = workdir / "capture.port"
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(CAPTURE_ENDPOINT),
                "--port-file",
                str(port_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
        )
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the capture endpoint did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"
        capture_counts(self.url)  # answers: ready

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def child_environment(variant: str, capture_url: str, store: Path) -> dict[str, str]:
    """A measuring process's environment: none of the developer's apiusage / PostHog set-up."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APIUSAGE_", "POSTHOG_"))
    }
    if variant == "apiusage-posthog":
        env.update(
            POSTHOG_API_KEY=POSTHOG_API_KEY,
            POSTHOG_HOST=capture_url,
            APIUSAGE_IDENTITY_SECRET=IDENTITY_SECRET,
        )
    elif variant == "apiusage-store":
        env.update(APIUSAGE_STORE=str(store), APIUSAGE_IDENTITY_SECRET=IDENTITY_SECRET)
    return env


class RunFailed(Exception):
    """A measuring process exited with an error (its stderr is the message)."""


def run_in_subprocess(spec: RunSpec, repeat: int, workdir: Path) -> RunResult:
    """One measurement in a fresh process, in a fresh empty working directory (no .env)."""
    rundir = Path(tempfile.mkdtemp(prefix=f"{spec.framework}-{spec.variant}-", dir=workdir))
    store = rundir / "events.sqlite3"
    if spec.variant == "apiusage-store":
        spec = RunSpec(**{**asdict(spec), "store": str(store)})
    completed = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            json.dumps(asdict(spec)),
        ],
        cwd=rundir,
        env=child_environment(spec.variant, spec.capture_url, store),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if completed.returncode != 0:
        raise RunFailed(
            f"{spec.framework} {spec.variant} #{repeat + 1}: the measuring process failed "
            f"(exit {completed.returncode}):\n{completed.stderr[-3000:]}"
        )
    result = RunResult(**json.loads(completed.stdout.strip().splitlines()[-1]))
    result.repeat = repeat
    return result


@dataclass
class Row:
    """One variant of one framework: its runs (one per repeat that did not fail)."""

    variant: str
    runs: list[RunResult]
    failed: int = 0

    @property
    def cpu(self) -> float:
        return statistics.median(run.cpu_us for run in self.runs)

    @property
    def wall(self) -> float:
        return statistics.median(run.wall_us for run in self.runs)

    def added_to(self, baseline: Row) -> float:
        """Median over repeats of this run minus the baseline's run of the same repeat."""
        base = {run.repeat: run.cpu_us for run in baseline.runs}
        paired = [run.cpu_us - base[run.repeat] for run in self.runs if run.repeat in base]
        return statistics.median(paired) if paired else math.nan

    @property
    def delivered_ratio(self) -> float | None:
        if any(run.delivered is None for run in self.runs):
            return None
        return sum(run.delivered or 0 for run in self.runs) / sum(run.requests for run in self.runs)

    @property
    def flush_failures(self) -> int:
        return sum(not run.flush_ok for run in self.runs)


def _measured(rows: dict[str, Row], variant: str) -> Row | None:
    row = rows.get(variant)
    return row if row is not None and row.runs else None


def framework_table(framework: str, rows: dict[str, Row]) -> str:
    bare = _measured(rows, "bare")
    capture = _measured(rows, "posthog-capture")
    capture_added = capture.added_to(bare) if bare and capture else None
    title = f"{framework}: GET /v1/items/{{item_id}}"
    header = (
        f"{'variant':<22} {'CPU µs/req':>10} {'added µs':>9} {'added/bare':>10} "
        f"{'added/ph-capture':>16} {'wall µs/req':>11} {'delivered':>9}"
    )
    lines = [title, "-" * len(header), header]
    for variant in VARIANTS:
        row = rows.get(variant)
        if row is None:
            continue
        if not row.runs:
            lines.append(f"{variant:<22} failed in every run (errors above)")
            continue
        added = vs_bare = vs_capture = "—"
        if bare is not None and row is not bare:
            value = row.added_to(bare)
            added = f"{value:+.1f}"
            vs_bare = f"{value / bare.cpu:.2f}"
            if capture_added and row is not capture:
                vs_capture = f"{value / capture_added:.2f}"
        ratio = row.delivered_ratio
        delivered = "—" if ratio is None else f"{ratio:.3f}"
        note = (
            f"  flush returned False in {row.flush_failures} run(s)" if row.flush_failures else ""
        )
        non_200 = sum(run.non_200 for run in row.runs)
        if non_200:
            note += f"  {non_200} non-200 responses"
        if row.failed:
            note += f"  {row.failed} run(s) failed"
        if any(run.live_children for run in row.runs):
            note += "  child processes left running: their CPU is not counted"
        lines.append(
            f"{variant:<22} {row.cpu:>10.1f} {added:>9} {vs_bare:>10} {vs_capture:>16} "
            f"{row.wall:>11.1f} {delivered:>9}{note}"
        )
    return "\n".join(lines)


def target_lines(framework: str, rows: dict[str, Row]) -> list[str]:
    bare, capture = _measured(rows, "bare"), _measured(rows, "posthog-capture")
    lines = []
    for variant in APIUSAGE_VARIANTS:
        row = _measured(rows, variant)
        if row is None or bare is None:
            continue
        added = row.added_to(bare)
        limit = TARGET_ADDED_VS_BARE * bare.cpu
        verdict = "PASS" if added <= limit else "MISS"
        lines.append(
            f"{verdict}  {framework:<9} {variant:<17} added {added:+8.1f} µs ≤ "
            f"{TARGET_ADDED_VS_BARE:g} x bare ({limit:.1f} µs)"
        )
        if capture is not None:
            capture_added = capture.added_to(bare)
            limit = TARGET_ADDED_VS_POSTHOG_CAPTURE * capture_added
            verdict = "PASS" if added <= limit else "MISS"
            lines.append(
                f"{verdict}  {framework:<9} {variant:<17} added {added:+8.1f} µs ≤ "
                f"{TARGET_ADDED_VS_POSTHOG_CAPTURE:g} x posthog-capture added ({limit:.1f} µs)"
            )
    return lines


def load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        with suppress(PackageNotFoundError):
            versions[name] = version(name)
    return versions


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    spec = importlib.util.find_spec("apiusage")  # where the measuring processes import it from
    info["apiusage_path"] = str(Path(spec.origin).parent) if spec and spec.origin else None
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _csv(
    value: str, allowed: Sequence[str], option: str, parser: argparse.ArgumentParser
) -> list[str]:
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        parser.error(f"{option}: choose from {', '.join(allowed)} (got {value!r})")
    return [item for item in allowed if item in chosen]  # canonical order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument(
        "--requests",
        type=int,
        help=f"requests per timed run (default {DEFAULT_REQUESTS})",
    )
    parser.add_argument(
        "--flush-requests",
        type=int,
        help=f"requests per timed run of posthog-capture-flush (default {DEFAULT_FLUSH_REQUESTS})",
    )
    parser.add_argument("--repeats", type=int, help=f"runs per variant (default {DEFAULT_REPEATS})")
    parser.add_argument("--quick", action="store_true", help="fewer requests and repeats (noisier)")
    parser.add_argument("--json", type=Path, help="write machine info, settings and every run here")
    # Internal modes: the capture endpoint, and one measurement.
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        result = run_child(RunSpec(**json.loads(args.child)))
        print(json.dumps(asdict(result)))
        return 0

    frameworks = _csv(args.frameworks, FRAMEWORKS, "--frameworks", parser)
    variants = _csv(args.variants, VARIANTS, "--variants", parser)
    if "bare" not in variants:
        variants.insert(0, "bare")  # every "added" is relative to it
    requests = args.requests or (QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)
    flush_requests = args.flush_requests or (
        QUICK_FLUSH_REQUESTS if args.quick else DEFAULT_FLUSH_REQUESTS
    )
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    if requests < 1 or flush_requests < 1 or repeats < 1:
        parser.error("--requests, --flush-requests and --repeats must be at least 1")
    warmup = min(WARMUP_REQUESTS, max(50, requests // 5))

    machine, versions = machine_info(), package_versions()
    print(
        f"Python {machine['python']} ({machine['implementation']}) on {machine['platform']}; "
        f"{machine['cpu_count']} CPUs ({machine.get('cpus_usable', '?')} usable)"
        + (f", {machine['cpu_model']}" if "cpu_model" in machine else "")
    )
    print(", ".join(f"{name} {value}" for name, value in versions.items()))
    print(f"apiusage imported from {machine['apiusage_path']}")
    print(
        f"{requests} requests per timed run ({flush_requests} for posthog-capture-flush), "
        f"{repeats} repeats, each run in a fresh process after {warmup} warm-up requests;\n"
        "CPU = process CPU time of all threads per request, until delivery is complete "
        "(median over repeats);\nadded = median of per-repeat differences to bare; "
        "delivered = api_request events received / requests sent.\n",
        flush=True,
    )

    load_at_start = load_average()
    results: list[RunResult] = []
    failures: list[tuple[str, str]] = []  # (framework, variant) of each failed run
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="apiusage-bench-total-") as tmp:
        workdir = Path(tmp)
        endpoint = CaptureEndpoint(workdir)
        try:
            total = len(frameworks) * len(variants) * repeats
            done = 0
            for framework in frameworks:
                for repeat in range(repeats):
                    order = variants if repeat % 2 == 0 else variants[::-1]
                    for variant in order:
                        flushing = variant == "posthog-capture-flush"
                        spec = RunSpec(
                            framework=framework,
                            variant=variant,
                            requests=flush_requests if flushing else requests,
                            warmup=FLUSH_WARMUP_REQUESTS if flushing else warmup,
                            capture_url=endpoint.url,
                        )
                        run_started = time.perf_counter()
                        done += 1
                        try:
                            result = run_in_subprocess(spec, repeat, workdir)
                        except (RunFailed, subprocess.TimeoutExpired) as exc:
                            failures.append((framework, variant))
                            print(f"  [{done:>3}/{total}] FAILED: {exc}", file=sys.stderr)
                            continue
                        results.append(result)
                        delivered = (
                            ""
                            if result.delivered is None
                            else f", delivered {result.delivered}/{result.requests}"
                        )
                        print(
                            f"  [{done:>3}/{total}] {framework:<9} {variant:<22} #{repeat + 1}: "
                            f"{result.cpu_us:8.1f} µs CPU/req{delivered} "
                            f"({time.perf_counter() - run_started:.1f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            endpoint.stop()
    elapsed = time.perf_counter() - started

    print()
    all_targets: list[str] = []
    summary: dict[str, Any] = {}
    for framework in frameworks:
        rows = {
            variant: Row(
                variant,
                [r for r in results if r.framework == framework and r.variant == variant],
                failed=failures.count((framework, variant)),
            )
            for variant in variants
        }
        print(framework_table(framework, rows))
        print()
        all_targets += target_lines(framework, rows)
        summary[framework] = {
            variant: {
                "cpu_us": row.cpu,
                "added_us": row.added_to(rows["bare"]) if variant != "bare" else 0.0,
                "failed_runs": row.failed,
                "wall_us": row.wall,
                "delivered_ratio": row.delivered_ratio,
            }
            for variant, row in rows.items()
            if row.runs
        }
    if all_targets:
        print(
            f"Targets (apiusage added CPU ≤ {TARGET_ADDED_VS_BARE:g} x bare and "
            f"≤ {TARGET_ADDED_VS_POSTHOG_CAPTURE:g} x posthog-capture's added CPU):"
        )
        print("\n".join(all_targets))
    print(
        f"\nTotal run time: {elapsed:.0f} s. Load average (1, 5, 15 min) at the start: "
        f"{load_at_start}, at the end: {load_average()}. The benchmark itself keeps about one "
        "CPU busy;\nwell above that, other processes competed for the CPUs and the numbers "
        "are noisier."
    )

    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "versions": versions,
                    "settings": {
                        "requests": requests,
                        "flush_requests": flush_requests,
                        "repeats": repeats,
                        "warmup": warmup,
                        "frameworks": frameworks,
                        "variants": variants,
                    },
                    "elapsed_s": elapsed,
                    "load_average": {"start": load_at_start, "end": load_average()},
                    "summary": summary,
                    "runs": [asdict(result) for result in results],
                    "failed_runs": [list(failure) for failure in failures],
                },
                indent=2,
            )
        )
        print(f"Raw results written to {args.json}")
    if failures:
        print(
            f"{len(failures)} run(s) failed: see the errors printed above.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
