"""The fault suite, measured: what each flush strategy loses and costs when things go wrong.

``tests/test_process_faults.py`` and ``tests/test_spool.py`` assert that no accepted event
is lost; this benchmark puts numbers on it, per strategy, side by side with the two usual
hand-written recipes, all measured in one run on the same machine:

* **variants** (uvicorn serving a FastAPI hello-world route, one worker, see
  ``server_apps.py``): ``bare``; ``apiusage-background`` and ``apiusage-end-of-request``
  (``ApiUsage(app)`` with ``APIUSAGE_DELIVERY`` set, spool on, in a fresh file per run);
  ``posthog-capture`` (``posthog.capture()`` in a pure ASGI middleware, the SDK's default
  settings); ``posthog-capture-flush`` (the same plus ``posthog.flush()`` after every
  request, the recipe blog posts give for serverless).
* **scenarios**, each under a paced load (``--rate`` requests per second on one keep-alive
  connection for ``--duration`` seconds; a late request is sent at once, none after the
  end):

  - ``healthy``: PostHog answers at once;
  - ``slow``: every answer of PostHog takes ``--slow`` seconds (default 2), until the end;
  - ``outage``: PostHog answers 503 during the middle 60 % of the load;
  - then, after each of those, the server is stopped with SIGTERM (as a deploy does) and
    what reached PostHog by the time it exited is counted;
  - ``freeze``: AWS Lambda, emulated (``lambda_runtime.py``: the same app behind Mangum,
    ``AWS_LAMBDA_FUNCTION_NAME`` set, one invocation at a time, ``--invocations`` of them
    at ``--rate``): the process is frozen (SIGSTOP) the moment each handler returns and
    thawed for the next invocation, as Lambda does, then killed while frozen (SIGKILL,
    the instance reclaimed). Only what reached PostHog while the process ran counts.
    ``apiusage-end-of-request`` runs with ``delivery="auto"`` here: what it picks on
    Lambda is the thing measured. Latency is the handler's own time (the invocation).

* **measured**: requests answered; ``lost``: answered requests whose event never reached
  the endpoint (distinct uuids counted there); ``doubled``: events that arrived more than
  once; ``on disk``: events left in apiusage's spool (not lost: the next process sends
  them); the response latency p50 / p99 as the load generator saw it, and what it adds to
  the bare app's in the same scenario; the event-loop stall (the longest lateness of a
  task in the app that sleeps 1 ms again and again, and its p99).

Run from the repository root with the test venv (needs nothing but loopback)::

    .nox/tests/bin/python benchmarks/bench_faults.py            # about 5 minutes
    .nox/tests/bin/python benchmarks/bench_faults.py --scenarios freeze,outage --json out.json

The exit status is 0 whatever the numbers say (1 only when a run could not be made).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from server_apps import BENCH_PATHS  # noqa: E402

VARIANTS = {
    "bare": {"BENCH_VARIANT": "bare"},
    "apiusage-background": {"BENCH_VARIANT": "apiusage", "APIUSAGE_DELIVERY": "background"},
    "apiusage-end-of-request": {
        "BENCH_VARIANT": "apiusage",
        "APIUSAGE_DELIVERY": "end_of_request",
    },
    "posthog-capture": {"BENCH_VARIANT": "posthog-capture"},
    "posthog-capture-flush": {"BENCH_VARIANT": "posthog-capture-flush"},
}
SCENARIOS = ("healthy", "slow", "outage", "freeze")
PATH = "/v1/items/42"
HEADERS = {"User-Agent": "python-requests/2.32.3", "X-API-Key": "sk_live_faults_0123456789"}
EVENT = "api_request"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def endpoint_round_trip(url: str, samples: int = 50) -> float:
    """Median seconds of one POST /batch/ of one event of about apiusage's size (gzip,
    kept-alive connection) from here: the yardstick for what delivering before a request
    ends may add to it (the endpoint's decoding is part of every round trip)."""
    import gzip

    parsed = urllib.request.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    properties = {f"property_{n}": f"value-{n:04d}-of-a-typical-length" for n in range(24)}
    event = {"event": EVENT, "distinct_id": "rtt", "uuid": "rtt", "properties": properties}
    body = gzip.compress(json.dumps({"api_key": "phc_rtt", "batch": [event]}).encode(), 1)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        connection.request("POST", "/batch/", body=body, headers=headers)
        connection.getresponse().read()
        times.append(time.perf_counter() - began)
    connection.close()
    return percentile(times, 0.5)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Endpoint:
    """``capture_endpoint.py`` in its own process, with faults switched on and off."""

    def __init__(self, workdir: Path) -> None:
        port_file = workdir / "capture.port"
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "capture_endpoint.py"), "--port-file", str(port_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the capture endpoint did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def count(self) -> dict[str, Any]:
        return http_json(f"{self.url}/count")  # type: ignore[no-any-return]

    def reset(self) -> None:
        http_json(f"{self.url}/reset", "POST", {})
        self.fault(None)

    def settled_count(self, quiet: float, limit: float = 30.0) -> dict[str, Any]:
        """The counts once they stopped changing for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        last, since = self.count(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.1)
            now = self.count()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def fault(self, status: int | None, delay: float = 0.0) -> None:
        setting = {} if status is None else {"status": status, "delay": delay}
        http_json(f"{self.url}/_fault", "POST", setting)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        self.process.wait(10)


def server_environment(variant: str, endpoint: Endpoint, spool: Path) -> dict[str, str]:
    """The variant's configuration, through the environment only, as a deployment has it."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POSTHOG_", "APIUSAGE_", "BENCH_", "AWS_", "K_SERVICE"))
    }
    env.update(VARIANTS[variant])
    env.update(
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
        BENCH_CAPTURE_URL=endpoint.url,
        POSTHOG_API_KEY="phc_faults",
        POSTHOG_HOST=endpoint.url,
        APIUSAGE_IDENTITY_SECRET="bench-faults-identity-secret-0123456789",
        APIUSAGE_EXCLUDE_PATHS=json.dumps(list(BENCH_PATHS)),
        APIUSAGE_SPOOL=str(spool),
    )
    return env


def waiting_on_disk(spool: Path) -> int:
    """Events apiusage left in its spool (not lost: the next process sends them)."""
    if not spool.exists():
        return 0
    uri = f"file:{spool}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM waiting").fetchone()[0])
        except sqlite3.OperationalError:  # created, but no table yet
            return 0


class Server:
    """uvicorn serving ``server_apps:create_fastapi_app`` for one variant."""

    def __init__(self, variant: str, endpoint: Endpoint, workdir: Path) -> None:
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.spool = workdir / f"spool-{variant}-{time.monotonic_ns()}.sqlite3"
        env = server_environment(variant, endpoint, self.spool)
        self.log = workdir / f"{variant}.log"
        self._log = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "server_apps:create_fastapi_app",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{variant} exited:\n{self.log.read_text()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_json(f"{self.url}/health", timeout=1.0) == {"status": "ok"}:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant} did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stall(self) -> dict[str, Any]:
        return http_json(f"{self.url}/_stall")  # type: ignore[no-any-return]

    def reset_stall(self) -> None:
        http_json(f"{self.url}/_stall/reset", "POST", {})

    def terminate(self) -> float:
        """SIGTERM; seconds until the process exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT)
        return time.monotonic() - started

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._log.close()

    def waiting_on_disk(self) -> int:
        return waiting_on_disk(self.spool)


def paced_load(url: str, rate: float, duration: float) -> dict[str, Any]:
    """GET ``url`` on a fixed schedule over one keep-alive connection until ``duration``
    has passed (a late request goes out at once; none is sent after the end)."""
    parsed = urllib.request.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    interval, latencies, errors = 1.0 / rate, [], 0
    start = time.perf_counter()
    sent = 0
    while True:
        due = start + sent * interval
        now = time.perf_counter()
        if due - start >= duration or now - start >= duration:
            break
        if due > now:
            time.sleep(due - now)
        sent += 1
        began = time.perf_counter()
        try:
            connection.request("GET", parsed.path, headers=HEADERS)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
                continue
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
            continue
        latencies.append(time.perf_counter() - began)
    connection.close()
    return {
        "answered": len(latencies),
        "errors": errors,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


@dataclass
class Run:
    scenario: str
    variant: str
    answered: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    stall_max_ms: float = 0.0
    stall_p99_ms: float = 0.0
    received: int = 0  # distinct uuids of api_request events at the endpoint
    doubled: int = 0
    on_disk: int = 0
    stop_s: float = 0.0
    #: freeze: events of the invocations so far not at PostHog while frozen (mean, max):
    #: what reclaiming the instance at that moment would lose.
    exposed_mean: float = 0.0
    exposed_max: int = 0
    #: freeze, bare: one round trip to the endpoint from the thawed instance (p50, ms).
    round_trip_ms: float | None = None
    note: str = ""
    endpoint: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int | None:
        if self.variant == "bare":
            return None
        return max(0, self.answered - self.received - self.on_disk)


def measure(
    scenario: str, variant: str, endpoint: Endpoint, workdir: Path, o: argparse.Namespace
) -> Run:
    if scenario == "freeze":
        return measure_lambda(variant, endpoint, workdir, o)
    endpoint.reset()
    server = Server(variant, endpoint, workdir)
    run = Run(scenario, variant)
    try:
        paced_load(f"{server.url}{PATH}", o.rate, 1.0)  # warm-up: imports, first batches
        time.sleep(1.5)
        endpoint.reset()
        server.reset_stall()
        timers: list[threading.Timer] = []
        if scenario == "slow":
            endpoint.fault(200, o.slow)
        elif scenario == "outage":
            timers = [
                threading.Timer(0.2 * o.duration, endpoint.fault, (503,)),
                threading.Timer(0.8 * o.duration, endpoint.fault, (None,)),
            ]
            for timer in timers:
                timer.start()
        load = paced_load(f"{server.url}{PATH}", o.rate, o.duration)
        for timer in timers:
            timer.join()
        run.answered, run.errors = load["answered"], load["errors"]
        run.p50_ms, run.p99_ms = load["p50_ms"], load["p99_ms"]
        stall = server.stall()
        run.stall_max_ms = float(stall.get("max_ms", 0.0))
        run.stall_p99_ms = float(stall.get("p99_ms", 0.0))
        run.stop_s = server.terminate()
        # A request already sent may still be answered (slowly) after the process exited:
        # count once the endpoint has been quiet for longer than one slow answer.
        quiet = (o.slow if scenario == "slow" else 0.0) + 0.5
        count(run, endpoint.settled_count(quiet), server.waiting_on_disk())
    finally:
        server.kill()
    return run


def count(run: Run, counts: dict[str, Any], on_disk: int) -> None:
    if run.variant != "bare":
        run.received = int(counts.get("unique_events", 0))
        run.doubled = int(counts.get("events", 0)) - run.received
    run.on_disk = on_disk
    run.endpoint = counts
    by_event = counts.get("by_event", {})
    if run.variant != "bare" and by_event and set(by_event) != {EVENT}:
        run.note = (run.note + "; " if run.note else "") + f"events: {by_event}"


def measure_lambda(variant: str, endpoint: Endpoint, workdir: Path, o: argparse.Namespace) -> Run:
    """The freeze scenario: invocations of an emulated Lambda, frozen after each."""
    endpoint.reset()
    run = Run("freeze", variant)
    env = server_environment(variant, endpoint, workdir / f"spool-lambda-{variant}.sqlite3")
    env["AWS_LAMBDA_FUNCTION_NAME"] = "bench-faults"
    if variant == "apiusage-end-of-request":
        del env["APIUSAGE_DELIVERY"]  # what auto picks on Lambda
        run.note = "delivery=auto"
    runtime = subprocess.Popen(
        [sys.executable, str(HERE / "lambda_runtime.py")],
        env=env,
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(workdir / f"lambda-{variant}.log").open("wb"),
        text=True,
        start_new_session=True,
    )
    assert runtime.stdin is not None
    assert runtime.stdout is not None
    durations: list[float] = []
    exposed: list[int] = []
    round_trips: list[float] = []
    try:
        if runtime.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the Lambda runtime of {variant} did not start")
        for number in range(o.warmup_invocations + o.invocations):
            if number == o.warmup_invocations:
                time.sleep(0.5)
                endpoint.reset()
            runtime.stdin.write(f"{PATH}\n")
            runtime.stdin.flush()
            answer = runtime.stdout.readline().split()
            runtime.send_signal(signal.SIGSTOP)  # frozen: the handler returned
            if answer[:2] != ["done", "200"]:
                raise RuntimeError(f"invocation {number} of {variant}: {answer}")
            if variant == "bare":  # the yardstick: a round trip from the thawed instance
                time.sleep(1.0 / o.rate)
                runtime.send_signal(signal.SIGCONT)
                runtime.stdin.write("rtt\n")
                runtime.stdin.flush()
                measured = runtime.stdout.readline().split()
                runtime.send_signal(signal.SIGSTOP)
                if number >= o.warmup_invocations:
                    round_trips.append(float(measured[1]) / 1e6)
            if number >= o.warmup_invocations:
                durations.append(float(answer[2]) / 1e6)
                time.sleep(0.02)  # what was already on the wire lands
                if variant != "bare":
                    missing = len(durations) - int(endpoint.count().get("unique_events", 0))
                    exposed.append(max(0, missing))
            time.sleep(1.0 / o.rate)
            runtime.send_signal(signal.SIGCONT)  # the next invocation thaws it
        runtime.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # what was already on the wire lands
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runtime.pid, signal.SIGKILL)  # reclaimed while frozen
        runtime.wait(10)
        for pipe in (runtime.stdin, runtime.stdout):
            pipe.close()
    run.answered = len(durations)
    if round_trips:
        run.round_trip_ms = percentile(round_trips, 0.5) * 1000
        run.note = f"round trip from the instance: p50 {run.round_trip_ms:.2f} ms"
    if exposed:
        run.exposed_mean = sum(exposed) / len(exposed)
        run.exposed_max = max(exposed)
    run.p50_ms = percentile(durations, 0.50) * 1000
    run.p99_ms = percentile(durations, 0.99) * 1000
    spool = workdir / f"spool-lambda-{variant}.sqlite3"
    count(run, endpoint.count(), waiting_on_disk(spool))
    run.note = (run.note + "; " if run.note else "") + "frozen after each invocation, killed"
    return run


def table(runs: list[Run], scenario: str) -> str:
    rows = [r for r in runs if r.scenario == scenario]
    bare = next((r for r in rows if r.variant == "bare"), None)
    frozen = scenario == "freeze"  # no event loop runs between invocations; no SIGTERM
    head = "| variant | answered | lost | doubled | on disk | p50 ms | p99 ms | + p99 vs bare " + (
        "| undelivered while frozen, mean | max | - |"
        if frozen
        else "| loop stall max ms | stall p99 ms | stop s |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        added = f"{r.p99_ms - bare.p99_ms:+.2f}" if bare and r is not bare else "-"
        lost = "-" if r.lost is None else f"{r.lost}"
        stall = (
            f"{r.exposed_mean:.1f} | {r.exposed_max}"
            if frozen
            else f"{r.stall_max_ms:.2f} | {r.stall_p99_ms:.2f}"
        )
        lines.append(
            f"| {r.variant} | {r.answered} | {lost} | {r.doubled if r.variant != 'bare' else '-'} "
            f"| {r.on_disk if r.variant.startswith('apiusage') else '-'} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} | {added} | {stall} | {'-' if frozen else f'{r.stop_s:.1f}'} |"
        )
    notes = [f"- {r.variant}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def targets(runs: list[Run]) -> list[str]:
    """The fault suite's targets (issue: flush strategies), as PASS / MISS lines."""
    by = {(r.scenario, r.variant): r for r in runs}
    lines = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"{'PASS' if ok else 'MISS'}  {text}")

    for r in runs:
        # Background forced on a freezing runtime is the comparison row auto avoids.
        if r.variant.startswith("apiusage") and (r.scenario, r.variant) != (
            "freeze",
            "apiusage-background",
        ):
            check(
                r.lost == 0 and r.doubled == 0,
                f"{r.scenario} {r.variant}: no event lost or doubled "
                f"(lost {r.lost}, doubled {r.doubled})",
            )
    for variant in ("apiusage-background", "apiusage-end-of-request"):
        slow, healthy = by.get(("slow", variant)), by.get(("healthy", variant))
        if slow and healthy:
            check(
                slow.p99_ms <= 1.1 * healthy.p99_ms,
                f"slow PostHog, {variant}: p99 within 10 % of the healthy run "
                f"({slow.p99_ms:.2f} against {healthy.p99_ms:.2f} ms)",
            )
        for scenario in ("healthy", "slow", "outage"):
            run, bare = by.get((scenario, variant)), by.get((scenario, "bare"))
            if run and bare:
                added = run.stall_max_ms - bare.stall_max_ms
                check(
                    added <= 2.0,
                    f"{scenario}, {variant}: loop stall beyond bare's <= 2 ms ({added:+.2f} ms)",
                )
    frozen, bare = by.get(("freeze", "apiusage-end-of-request")), by.get(("freeze", "bare"))
    if frozen:
        check(frozen.exposed_max == 0, "freeze, auto: nothing undelivered at any freeze")
    if frozen and bare and bare.round_trip_ms is not None:
        added = frozen.p50_ms - bare.p50_ms
        check(
            added <= bare.round_trip_ms,
            f"freeze, auto: added invocation latency <= one round trip "
            f"({added:.2f} ms against {bare.round_trip_ms:.2f} ms, p50)",
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load")
    parser.add_argument("--slow", type=float, default=2.0, help="seconds per answer when slow")
    parser.add_argument(
        "--invocations", type=int, default=100, help="Lambda invocations measured (freeze)"
    )
    parser.add_argument("--warmup-invocations", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write every run here")
    o = parser.parse_args(argv)
    scenarios = [s for s in o.scenarios.split(",") if s]
    variants = [v for v in o.variants.split(",") if v]
    for name in (*scenarios, *variants):
        if name not in (*SCENARIOS, *VARIANTS):
            parser.error(f"unknown scenario or variant {name!r}")
    workdir = Path(tempfile.mkdtemp(prefix="apiusage-bench-faults-"))
    endpoint = Endpoint(workdir)
    round_trip_ms = endpoint_round_trip(endpoint.url) * 1000
    endpoint.reset()
    runs: list[Run] = []
    failed = 0
    started = time.monotonic()
    try:
        for scenario in scenarios:
            for variant in variants:
                try:
                    run = measure(scenario, variant, endpoint, workdir, o)
                except Exception as exc:  # one broken run must not hide the others
                    failed += 1
                    log(f"{scenario} {variant}: FAILED {type(exc).__name__}: {exc}")
                    continue
                runs.append(run)
                log(
                    f"{scenario:8s} {variant:24s} answered {run.answered:4d} lost {run.lost} "
                    f"doubled {run.doubled} on disk {run.on_disk} p99 {run.p99_ms:.2f} ms "
                    f"stall {run.stall_max_ms:.2f} ms stop {run.stop_s:.1f} s {run.note}"
                )
    finally:
        endpoint.stop()
    print(
        f"# Fault suite: {o.rate:g} req/s for {o.duration:g} s per run, uvicorn + FastAPI, "
        f"one worker; PostHog slow = {o.slow:g} s per answer; outage = 503 for the middle "
        f"60 % of the load; one round trip to the endpoint (one event, gzip, kept-alive, "
        f"median): {round_trip_ms:.2f} ms\n"
    )
    for scenario in scenarios:
        print(f"## {scenario}\n")
        print(table(runs, scenario))
        print()
    print("## Targets (printed, not asserted)\n")
    print("\n".join(targets(runs)))
    print()
    print(f"Total time: {time.monotonic() - started:.0f} s")
    if o.json:
        o.json.write_text(json.dumps([{**asdict(r), "lost": r.lost} for r in runs], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
