"""Throughput, latency, delivery and event-loop stall of apiusage behind real servers.

``bench_overhead.py`` measures apiusage's request path in-process. This benchmark serves
real apps with real servers and loads them with ``wrk``:

* **servers**: uvicorn serving a FastAPI app (one worker, ``--no-access-log``, uvicorn's
  default loop and HTTP parser) and gunicorn serving a Flask app (one sync worker, no
  access log), each in its own process on 127.0.0.1;
* **routes**: ``hello`` (``GET /v1/items/{item_id}``, small JSON) and ``work``
  (``GET /v1/work/{item_id}``, about 1 ms of CPU in a calibrated busy loop, small JSON);
* **variants**: ``bare``; ``apiusage`` (``ApiUsage(app)``, delivering to PostHog); and
  ``posthog-capture`` (a hand-written pure ASGI / WSGI middleware calling a real
  ``posthog.Posthog.capture()`` once per request);
* **delivery**: a counting PostHog capture endpoint (``capture_endpoint.py``) in another
  process receives every event; after each run the server is stopped with SIGTERM (so
  apiusage flushes at shutdown) and the events it received are compared with the
  requests the app served;
* **event-loop stall** (uvicorn only): a task in the FastAPI app sleeps 1 ms again and
  again and records how late it wakes up, (a) during the saturating wrk run and (b)
  under a moderate paced load (default 300 req/s) where the loop has idle time, so that
  lateness beyond the bare app's is the stall that apiusage's delivery work causes.

Run it with the interpreter that has the servers and apps installed (the test venv)::

    .nox/tests/bin/python benchmarks/bench_server.py            # about 7-8 minutes
    .nox/tests/bin/python benchmarks/bench_server.py --quick    # about 2 minutes, noisier
    # a baseline: serve apiusage from an export of another commit
    git archive HEAD src adapters | tar -x -C /tmp/apiusage-head
    .nox/tests/bin/python benchmarks/bench_server.py --apiusage-path /tmp/apiusage-head

The server is pinned to one CPU and wrk, the pacer and the capture endpoint to the others
(``--no-pin`` to turn that off). Other processes and the hypervisor's steal time disturb
such numbers: each run reports how much CPU time they took ("other CPU %", "stolen %"),
before each run the benchmark waits (``--idle-wait``) for other processes to go quiet,
and "req per CPU-s" (requests per CPU-second of the server's processes) is given next to
req/s, since it holds up better on a busy machine. The stall monitor also times the
garbage collector's pauses, which are often the longest stalls.

It needs ``wrk`` (Debian/Ubuntu: ``apt-get install wrk``). Target lines are printed as
PASS / MISS; the exit status is 0 whatever they say (non-zero only when the benchmark
itself could not run).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from server_apps import BENCH_PATHS, VARIANTS, burn  # noqa: E402

SERVERS = ("uvicorn", "gunicorn")
ROUTES = {"hello": "/v1/items/42", "work": "/v1/work/42"}
HEADERS = {
    "User-Agent": "python-requests/2.32.3",
    "X-API-Key": "sk_live_benchmark_0123456789abcdef",
    "Accept": "application/json",
}
IDENTITY_SECRET = "bench-identity-secret-0123456789"  # 32 characters
assert len(IDENTITY_SECRET) == 32

TARGET_HELLO = 0.75
TARGET_WORK = 0.97
TARGET_STALL_MS = 2.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 45.0

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d, "mean_us": %.1f, ' ..
    '"max_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""

INSTALL_WRK = """\
wrk (the HTTP load generator) is not installed or not on PATH.
Install it, then run this again:
  Debian / Ubuntu:  sudo apt-get update && sudo apt-get install -y wrk
  Fedora:           sudo dnf install wrk
  macOS:            brew install wrk
"""


# ------------------------------------------------------------------------------ helpers


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def http_json(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def affinity_setter(cpus: set[int] | None) -> Any:
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None

    def set_affinity() -> None:
        os.sched_setaffinity(0, cpus)

    return set_affinity


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# ------------------------------------------------------------------- CPU accounting

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: % of one CPU taken by other processes, or stolen by the hypervisor from the server's CPU,
#: during a run, from which the run is flagged as disturbed.
FOREIGN_WARN = 10.0


def cpu_times() -> dict[str, dict[str, float]]:
    """``/proc/stat`` per CPU ("cpu" is all of them), in seconds: ``proc`` (user, nice and
    system time: what processes ran), ``irq`` (interrupts and softirqs: mostly the loopback
    network) and ``steal`` (time the hypervisor gave the virtual CPU to someone else)."""
    times: dict[str, dict[str, float]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return times
    for line in lines:
        if not line.startswith("cpu"):
            break
        name, *raw = line.split()
        v = [int(x) for x in raw] + [0] * 8
        times[name] = {
            "proc": (v[0] + v[1] + v[2]) / TICKS,
            "irq": (v[5] + v[6]) / TICKS,
            "steal": v[7] / TICKS,
        }
    return times


def group_cpu(pgids: set[int]) -> float:
    """CPU seconds used so far by the live processes of these process groups."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in pgids:  # pgrp; utime and stime are fields 14 and 15
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


class CpuWindow:
    """CPU used during a window: by the server, by processes that are not ours, and stolen
    from the server's CPU by the hypervisor."""

    def __init__(
        self, server_pgid: int | None, own_pgids: set[int], server_cpus: set[int] | None
    ) -> None:
        self.server = {server_pgid} if server_pgid else set()
        self.own = own_pgids  # this process and the capture endpoint
        self.steal_cpus = [f"cpu{n}" for n in sorted(server_cpus)] if server_cpus else ["cpu"]
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, the pacer, once reaped
        times = cpu_times()
        machine = times.get("cpu", {})
        return {
            "time": time.monotonic(),
            "proc": machine.get("proc", 0.0),
            "irq": machine.get("irq", 0.0),
            "steal": sum(times.get(cpu, {}).get("steal", 0.0) for cpu in self.steal_cpus),
            "server": group_cpu(self.server) if self.server else 0.0,
            "own": group_cpu(self.own),
            "reaped": children.ru_utime + children.ru_stime,
        }

    def stop(self) -> dict[str, float]:
        end = self._read()
        d = {key: end[key] - self.start[key] for key in end}
        elapsed = d["time"] or 1e-9
        foreign = max(0.0, d["proc"] - d["server"] - d["own"] - d["reaped"])
        steal_cpus = 1 if self.steal_cpus != ["cpu"] else (os.cpu_count() or 1)
        return {
            "server_cpu_pct": d["server"] / elapsed * 100,
            "server_cpu_s": d["server"],
            "foreign_cpu_pct": foreign / elapsed * 100,
            "steal_pct": d["steal"] / elapsed / steal_cpus * 100,
            "irq_cpu_pct": d["irq"] / elapsed * 100,
        }


def wait_idle(own_pgids: set[int], limit: float) -> float:
    """Wait (up to ``limit`` s) until other processes use under FOREIGN_WARN % of a CPU;
    the share they used in the last half second."""
    deadline = time.monotonic() + limit
    announced = False
    while True:
        window = CpuWindow(None, own_pgids, None)
        time.sleep(0.5)
        foreign = window.stop()["foreign_cpu_pct"]
        if foreign < FOREIGN_WARN or time.monotonic() >= deadline:
            if announced:
                log(f"  ... going on, other processes now at {foreign:.0f}% of a CPU")
            return foreign
        if not announced:
            log(
                f"  other processes use {foreign:.0f}% of a CPU: "
                f"waiting up to {limit:.0f} s for them"
            )
            announced = True


# --------------------------------------------------------------------------- processes


class CaptureEndpoint:
    """``capture_endpoint.py`` in its own process."""

    def __init__(self, workdir: Path, cpus: set[int] | None) -> None:
        port_file = workdir / "capture.port"
        self.log = workdir / "capture.log"
        self._log_handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "capture_endpoint.py"), "--port-file", str(port_file)],
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=affinity_setter(cpus),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"capture endpoint did not start:\n{self.log.read_text()}")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def count(self) -> dict[str, int]:
        return http_json(f"{self.url}/count")  # type: ignore[no-any-return]

    def reset(self) -> None:
        http_json(f"{self.url}/reset", method="POST")

    def settled_count(self, quiet: float = 0.5, timeout: float = 10.0) -> dict[str, int]:
        """The counters once they stopped changing for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last = self.count()
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.count()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                break
        return last

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self._log_handle.close()


def server_command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "server_apps:create_fastapi_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "server_apps:create_flask_app()",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--worker-class",
        "sync",
        "--log-level",
        "warning",
        "--graceful-timeout",
        "30",
        # no --access-logfile: gunicorn writes no access log
    ]


def server_env(
    variant: str, capture_url: str, work_loops: int, apiusage_path: Path | None
) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POSTHOG_", "APIUSAGE_", "BENCH_"))
    }
    paths = [str(HERE)]
    if apiusage_path is not None:  # another checkout of apiusage, ahead of the installed one
        paths += [str(apiusage_path / "src"), str(apiusage_path / "adapters")]
    paths += [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        PYTHONUNBUFFERED="1",
        BENCH_VARIANT=variant,
        BENCH_WORK_LOOPS=str(work_loops),
        BENCH_CAPTURE_URL=capture_url,
    )
    if variant == "apiusage":
        env.update(
            POSTHOG_API_KEY="phc_bench",
            POSTHOG_HOST=capture_url,
            APIUSAGE_IDENTITY_SECRET=IDENTITY_SECRET,
            APIUSAGE_EXCLUDE_PATHS=json.dumps(list(BENCH_PATHS)),
        )
    return env


class Server:
    def __init__(
        self,
        server: str,
        variant: str,
        capture_url: str,
        work_loops: int,
        workdir: Path,
        cpus: set[int] | None,
        tag: str,
        apiusage_path: Path | None = None,
    ) -> None:
        self.server = server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{tag}.log"
        self._log_handle = self.log.open("wb")
        run_dir = workdir / "cwd"  # no .env file of the repository is read
        run_dir.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            server_command(server, self.port),
            env=server_env(variant, capture_url, work_loops, apiusage_path),
            cwd=run_dir,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=affinity_setter(cpus),
        )

    def output(self) -> str:
        self._log_handle.flush()
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.output()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_json(f"{self.url}/health", timeout=1.0) == {"status": "ok"}:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"server not ready within {START_TIMEOUT}s:\n{self.output()}")

    def get(self, path: str, method: str = "GET") -> Any:
        return http_json(f"{self.url}{path}", method=method)

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM, as a process manager sends it; (exit code, seconds until it exited)."""
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - start
        self.kill()
        return code, elapsed

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self._log_handle.close()


def run_wrk(
    url: str, duration: float, connections: int, lua: Path, cpus: set[int] | None
) -> dict[str, Any]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    for name, value in HEADERS.items():
        args += ["-H", f"{name}: {value}"]
    args += ["-s", str(lua), url]
    completed = subprocess.run(
        args, capture_output=True, text=True, preexec_fn=affinity_setter(cpus), check=False
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            result["errors"] = sum(
                result[k] for k in ("connect", "read", "write", "status", "timeout")
            )
            result["text"] = completed.stdout
            return result
    raise RuntimeError(
        f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    )


def run_pacer(url: str, rate: float, duration: float, cpus: set[int] | None) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "_pace", url, str(rate), str(duration)],
        capture_output=True,
        text=True,
        preexec_fn=affinity_setter(cpus),
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"pacer failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def pace(url: str, rate: float, duration: float) -> None:
    """Send GETs to ``url`` at ``rate`` per second for ``duration`` s over one keep-alive
    connection, on a fixed schedule (a late request is sent at once, never skipped)."""
    parsed = urllib.parse.urlsplit(url)
    host, port, path = parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path
    connection = http.client.HTTPConnection(host, port, timeout=5)
    interval = 1.0 / rate
    total = int(rate * duration)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    for i in range(total):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        try:
            connection.request("GET", path, headers=HEADERS)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=5)
            continue
        latencies.append(time.perf_counter() - sent)
    elapsed = time.perf_counter() - start
    connection.close()
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "errors": errors,
                "elapsed": elapsed,
                "rps": len(latencies) / elapsed,
                "p50_us": percentile(latencies, 0.5) * 1e6,
                "p99_us": percentile(latencies, 0.99) * 1e6,
            }
        )
    )


# ---------------------------------------------------------------------------- the runs


@dataclass
class Options:
    duration: float
    warmup: float
    connections: int
    servers: list[str]
    variants: list[str]
    routes: list[str]
    repeats: int
    moderate_rate: float
    moderate_duration: float
    moderate: bool
    pin: bool
    json_path: Path | None
    keep_logs: bool
    apiusage_path: Path | None
    idle_wait: float


@dataclass
class Run:
    server: str
    route: str
    variant: str
    repeat: int
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    wrk_requests: int = 0  # measured run
    wrk_total: int = 0  # warm-up + measured run
    served: int = 0  # counted by the app (the /v1 routes)
    events: int = 0  # received by the capture endpoint
    batches: int = 0
    exit_code: int | None = None
    shutdown_s: float = 0.0
    stall: dict[str, Any] = field(default_factory=dict)
    apiusage_stats: dict[str, Any] = field(default_factory=dict)
    pacer: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def expected_events(self) -> int:
        return 0 if self.variant == "bare" else self.served

    @property
    def delivered(self) -> float | None:
        if self.variant == "bare":
            return None
        return self.events / self.served if self.served else 0.0


class Bench:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if options.pin and len(cpus) >= 2:
            self.server_cpus: set[int] | None = {cpus[-1]}
            self.load_cpus: set[int] | None = set(cpus[:-1])
        else:
            self.server_cpus = self.load_cpus = None
        self.lua = workdir / "done.lua"
        self.lua.write_text(WRK_LUA)
        self.work_loops, self.work_ms = self.calibrate()
        self.capture = CaptureEndpoint(workdir, self.load_cpus)
        self.own_pgids = {self.capture.process.pid, os.getpgid(0)}
        self.counter = 0
        self.apiusage_files: set[str] = set()

    def calibrate(self) -> tuple[int, float]:
        """Busy-loop iterations for about 1 ms of CPU, measured on the server's CPU."""
        previous = os.sched_getaffinity(0) if self.server_cpus else None
        if self.server_cpus:
            os.sched_setaffinity(0, self.server_cpus)
        try:
            probe = 20_000
            burn(probe)
            best = min(self._time_burn(probe) for _ in range(15))
            loops = max(1, round(probe * 0.001 / best))
            ms = median([self._time_burn(loops) for _ in range(15)]) * 1000
        finally:
            if previous:
                os.sched_setaffinity(0, previous)
        return loops, ms

    @staticmethod
    def _time_burn(loops: int) -> float:
        start = time.process_time()
        burn(loops)
        return time.process_time() - start

    def start_server(self, server: str, variant: str, tag: str) -> Server:
        self.counter += 1
        process = Server(
            server,
            variant,
            self.capture.url,
            self.work_loops,
            self.workdir,
            self.server_cpus,
            f"{self.counter:02d}-{tag}",
            self.options.apiusage_path,
        )
        try:
            process.wait_ready()
        except BaseException:
            process.kill()
            raise
        return process

    def finish(self, run: Run, process: Server) -> None:
        """Read the app's counters, stop it with SIGTERM, count what was delivered."""
        time.sleep(0.3)  # let the last requests wrk cut off finish
        stats = process.get("/_stats")
        run.served = int(stats.get("served", 0))
        run.apiusage_stats = stats.get("apiusage", {}) or {}
        if "apiusage_error" in stats:
            run.apiusage_stats = {"error": stats["apiusage_error"]}
        if stats.get("apiusage_file"):
            self.apiusage_files.add(stats["apiusage_file"])
        run.exit_code, run.shutdown_s = process.stop()
        counts = self.capture.settled_count()
        run.events, run.batches = counts["events"], counts["batches"]
        if run.exit_code is None:
            run.error = f"did not exit within {STOP_TIMEOUT}s of SIGTERM (killed)"
        elif run.exit_code not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM
            run.error = f"exit code {run.exit_code}"

    def throughput_run(self, server: str, route: str, variant: str, repeat: int) -> Run:
        o = self.options
        run = Run(server, route, variant, repeat)
        self.capture.reset()
        wait_idle(self.own_pgids, o.idle_wait)
        process = self.start_server(server, variant, f"{server}-{route}-{variant}")
        try:
            url = process.url + ROUTES[route]
            warm = run_wrk(url, o.warmup, o.connections, self.lua, self.load_cpus)
            if server == "uvicorn":
                process.get("/_stall/reset", method="POST")
            window = CpuWindow(process.process.pid, self.own_pgids, self.server_cpus)
            result = run_wrk(url, o.duration, o.connections, self.lua, self.load_cpus)
            run.cpu = window.stop()
            if server == "uvicorn":
                run.stall = process.get("/_stall")
            run.rps = result["rps"]
            run.p50_ms = result["p50_us"] / 1000
            run.p99_ms = result["p99_us"] / 1000
            run.errors = result["errors"] + warm["errors"]
            run.wrk_requests = result["requests"]
            run.wrk_total = result["requests"] + warm["requests"]
            self.finish(run, process)
        except BaseException:
            process.kill()
            raise
        return run

    def moderate_run(self, variant: str, repeat: int) -> Run:
        o = self.options
        run = Run("uvicorn", "hello", variant, repeat)
        self.capture.reset()
        wait_idle(self.own_pgids, o.idle_wait)
        process = self.start_server("uvicorn", variant, f"moderate-{variant}")
        try:
            url = process.url + ROUTES["hello"]
            warm = run_pacer(url, o.moderate_rate, min(2.0, o.warmup), self.load_cpus)
            process.get("/_stall/reset", method="POST")
            window = CpuWindow(process.process.pid, self.own_pgids, self.server_cpus)
            result = run_pacer(url, o.moderate_rate, o.moderate_duration, self.load_cpus)
            run.cpu = window.stop()
            run.stall = process.get("/_stall")
            run.pacer = result
            run.rps = result["rps"]
            run.p50_ms = result["p50_us"] / 1000
            run.p99_ms = result["p99_us"] / 1000
            run.errors = result["errors"] + warm["errors"]
            run.wrk_requests = result["requests"]
            run.wrk_total = result["requests"] + warm["requests"]
            self.finish(run, process)
        except BaseException:
            process.kill()
            raise
        return run

    def close(self) -> None:
        self.capture.stop()


# ----------------------------------------------------------------------------- report


def machine_info(bench: Bench) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    wrk_line = (wrk_version.stdout or wrk_version.stderr).splitlines()[:1]
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    has_httptools = importlib.util.find_spec("httptools") is not None
    packages = [
        "apiusage",
        "uvicorn",
        "gunicorn",
        "fastapi",
        "starlette",
        "flask",
        "werkzeug",
        "posthog",
        "h11",
        "uvloop",
        "httptools",
        "pydantic",
    ]
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "pinning": (
            f"server on CPU {sorted(bench.server_cpus)}, wrk / pacer / capture endpoint on "
            f"CPU {sorted(bench.load_cpus or [])}"
            if bench.server_cpus
            else "none"
        ),
        "uvicorn_loop": "uvloop" if has_uvloop else "asyncio",
        "uvicorn_http": "httptools" if has_httptools else "h11",
        "wrk": wrk_line[0] if wrk_line else "",
        "versions": {name: pkg_version(name) for name in packages},
        "work_loops": bench.work_loops,
        "work_ms": bench.work_ms,
    }


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    right = [h not in ("route", "variant", "server") for h in headers]

    def fmt(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if r else c.ljust(w)
                for c, w, r in zip(cells, widths, right, strict=True)
            )
            + " |"
        )

    lines = [
        fmt(headers),
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2))
            for w, r in zip(widths, right, strict=True)
        )
        + "|",
    ]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def aggregate(runs: list[Run]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (server, route, variant): medians over repeats, delivery summed."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.server, run.route, run.variant), []).append(run)
    result = {}
    for key, group in groups.items():
        stalls = [r.stall for r in group if r.stall]
        result[key] = {
            "rps": median([r.rps for r in group]),
            "p50_ms": median([r.p50_ms for r in group]),
            "p99_ms": median([r.p99_ms for r in group]),
            "errors": sum(r.errors for r in group),
            "wrk_total": sum(r.wrk_total for r in group),
            "served": sum(r.served for r in group),
            "events": sum(r.events for r in group),
            "expected": sum(r.expected_events for r in group),
            "shutdown_s": max(r.shutdown_s for r in group),
            "dropped": sum(int(r.apiusage_stats.get("dropped", 0) or 0) for r in group),
            "problems": [f"{r.server}/{r.route}/{r.variant}: {r.error}" for r in group if r.error],
            "stall_max_ms": median([s["max_ms"] for s in stalls]) if stalls else None,
            "stall_p999_ms": median([s["p999_ms"] for s in stalls]) if stalls else None,
            "stall_p99_ms": median([s["p99_ms"] for s in stalls]) if stalls else None,
            "stall_count": sum(int(s["count"]) for s in stalls) if stalls else 0,
            "stall_over_2ms": sum(int(s.get("over_2ms", 0)) for s in stalls) if stalls else 0,
            "gc_collections": sum(int(s.get("gc_collections", 0)) for s in stalls),
            "gc_full": sum(int(s.get("gc_full_collections", 0)) for s in stalls),
            "gc_max_ms": max((float(s.get("gc_max_ms", 0.0)) for s in stalls), default=0.0),
            "repeats": len(group),
            "server_cpu_pct": median([r.cpu.get("server_cpu_pct", 0.0) for r in group]),
            "foreign_cpu_pct": max(r.cpu.get("foreign_cpu_pct", 0.0) for r in group),
            "steal_pct": max(r.cpu.get("steal_pct", 0.0) for r in group),
            "rps_cpu": median(
                [r.wrk_requests / r.cpu["server_cpu_s"] for r in group if r.cpu.get("server_cpu_s")]
            ),
            "cpu_us_per_req": median(
                [
                    r.cpu.get("server_cpu_s", 0.0) / r.wrk_requests * 1e6
                    for r in group
                    if r.wrk_requests
                ]
            ),
        }
    return result


def delivered_cell(agg: dict[str, Any], variant: str) -> str:
    if variant == "bare":
        return f"{agg['events']} (none expected)" if agg["events"] else "-"
    expected = agg["expected"]
    ratio = agg["events"] / expected if expected else 0.0
    return f"{agg['events']}/{expected} = {ratio:.2%}"


def report(
    bench: Bench, info: dict[str, Any], runs: list[Run], moderate: list[Run]
) -> dict[str, Any]:
    o = bench.options
    print()
    print("## Machine")
    print()
    for key in ("python", "platform", "cpu", "cpu_count", "pinning", "wrk"):
        print(f"- {key}: {info[key]}")
    print(
        f"- uvicorn loop / HTTP parser: {info['uvicorn_loop']} / {info['uvicorn_http']} "
        "(uvicorn's defaults, 'auto')"
    )
    print("- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"- apiusage served from: {', '.join(sorted(bench.apiusage_files)) or 'n/a'}")
    print(
        f"- work route: {info['work_loops']} busy-loop iterations = "
        f"{info['work_ms']:.3f} ms of CPU (calibrated)"
    )
    print(
        f"- load: wrk -t1 -c{o.connections}, warm-up {o.warmup:g} s then {o.duration:g} s "
        f"measured, {o.repeats} repeat(s); headers: "
        + ", ".join(f"{k}: {v}" for k, v in HEADERS.items())
    )

    agg = aggregate(runs)
    targets: list[tuple[str, bool | None, str]] = []

    print()
    print("## Throughput and delivery (saturating wrk load)")
    print()
    print(
        "req/s, p50, p99: wrk's measured run. server CPU %: CPU time of the server's processes "
        "(all threads) during it, in % of one CPU. req per CPU-s: requests / that CPU time, the "
        "throughput the server would reach with a whole CPU to itself (it holds up better than "
        "req/s when other processes or the hypervisor take CPU time: 'other CPU %' and "
        "'stolen %' say how much they took).\n"
        "wrk done: requests wrk completed, warm-up included. served: requests the app's routes "
        "served (a few more: wrk drops those it cuts off at its end). events delivered: what "
        "the capture endpoint received once the server exited after SIGTERM / served."
    )
    for server in o.servers:
        rows, delivery_rows = [], []
        for route in o.routes:
            bare = agg.get((server, route, "bare"))
            for variant in o.variants:
                a = agg.get((server, route, variant))
                if a is None:
                    continue
                ratio = f"{a['rps'] / bare['rps']:.1%}" if bare and bare["rps"] else "-"
                cpu_ratio = (
                    f"{a['rps_cpu'] / bare['rps_cpu']:.1%}" if bare and bare["rps_cpu"] else "-"
                )
                rows.append(
                    [
                        route,
                        variant,
                        f"{a['rps']:,.0f}",
                        ratio,
                        f"{a['p50_ms']:.2f}",
                        f"{a['p99_ms']:.2f}",
                        str(a["errors"]),
                        f"{a['server_cpu_pct']:.0f}",
                        f"{a['rps_cpu']:,.0f}",
                        cpu_ratio,
                        flag_foreign(a["foreign_cpu_pct"]),
                        flag_foreign(a["steal_pct"]),
                    ]
                )
                delivery_rows.append(
                    [
                        route,
                        variant,
                        f"{a['wrk_total']:,}",
                        f"{a['served']:,}",
                        delivered_cell(a, variant),
                        str(a["dropped"]) if variant == "apiusage" else "-",
                        f"{a['shutdown_s']:.1f}",
                    ]
                )
        server_name = "uvicorn + FastAPI" if server == "uvicorn" else "gunicorn (sync) + Flask"
        print()
        print(f"### {server_name}")
        print()
        print(
            table(
                [
                    "route",
                    "variant",
                    "req/s",
                    "vs bare",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                    "server CPU %",
                    "req per CPU-s",
                    "vs bare (CPU)",
                    "other CPU %",
                    "stolen %",
                ],
                rows,
            )
        )
        print()
        print(
            table(
                [
                    "route",
                    "variant",
                    "wrk done",
                    "served",
                    "events delivered",
                    "apiusage dropped",
                    "stop s",
                ],
                delivery_rows,
            )
        )

    # Targets on throughput and delivery.
    for server in o.servers:
        for route, threshold in (("hello", TARGET_HELLO), ("work", TARGET_WORK)):
            bare, usage = agg.get((server, route, "bare")), agg.get((server, route, "apiusage"))
            if route not in o.routes or not bare or not usage:
                continue
            ratio = usage["rps"] / bare["rps"] if bare["rps"] else 0.0
            cpu_ratio = usage["rps_cpu"] / bare["rps_cpu"] if bare["rps_cpu"] else 0.0
            targets.append(
                (
                    f"{server} {route}: apiusage req/s >= {threshold:.0%} of bare",
                    ratio >= threshold,
                    f"{ratio:.1%} (per CPU-s: {cpu_ratio:.1%})",
                )
            )
    for (server, route, variant), a in agg.items():
        if variant != "apiusage":
            continue
        ok = a["expected"] > 0 and a["events"] >= a["expected"]
        targets.append(
            (
                f"{server} {route}: every apiusage event delivered",
                ok,
                f"{a['events']}/{a['expected']}"
                + (f", dropped {a['dropped']}" if a["dropped"] else ""),
            )
        )

    # Event-loop stall.
    stall_json: dict[str, Any] = {}
    if "uvicorn" in o.servers:
        print()
        print("## Event-loop stall, uvicorn + FastAPI")
        print()
        print(
            "Lateness of a task that sleeps 1 ms again and again (actual - expected wake-up); "
            "'late > 2 ms': how many wake-ups were that late. GCs (full): garbage collections "
            "in the server during the run (full ones, generation 2, in brackets), and the "
            "longest one: a GC pause stalls the loop for as long as it lasts. '+ vs bare' is "
            "the lateness beyond the bare app's. With several repeats, max and percentiles are "
            "medians over them, counts are sums, GC max is the maximum."
        )
        print()
        print("### (a) during the saturating wrk run")
        print()
        rows = []
        for route in o.routes:
            bare = agg.get(("uvicorn", route, "bare"))
            for variant in o.variants:
                a = agg.get(("uvicorn", route, variant))
                if a is None or a["stall_max_ms"] is None:
                    continue
                rows.append(stall_row(route, variant, a, bare))
        print(table(stall_headers(), rows))
        if moderate:
            magg = aggregate(moderate)
            print()
            print(
                f"### (b) moderate load: {o.moderate_rate:g} req/s on hello for "
                f"{o.moderate_duration:g} s (one keep-alive connection, paced; "
                "the loop has idle time)"
            )
            print()
            rows = []
            bare = magg.get(("uvicorn", "hello", "bare"))
            for variant in o.variants:
                a = magg.get(("uvicorn", "hello", variant))
                if a is None:
                    continue
                row = stall_row("hello", variant, a, bare)
                row.insert(2, f"{a['rps']:.0f}")
                added = (
                    "-"
                    if variant == "bare" or not bare
                    else f"{a['cpu_us_per_req'] - bare['cpu_us_per_req']:+.0f}"
                )
                row += [
                    f"{a['cpu_us_per_req']:.0f}",
                    added,
                    delivered_cell(a, variant),
                    flag_foreign(a["foreign_cpu_pct"]),
                    flag_foreign(a["steal_pct"]),
                ]
                rows.append(row)
            headers = stall_headers()
            headers.insert(2, "req/s")
            print(
                table(
                    [
                        *headers,
                        "server CPU µs/req",
                        "+ vs bare",
                        "events delivered",
                        "other CPU %",
                        "stolen %",
                    ],
                    rows,
                )
            )
            print()
            print(
                "server CPU µs/req: the server's CPU time (all its threads) over the run / "
                "requests; the stall monitor's own wake-ups are in every row."
            )
            usage = magg.get(("uvicorn", "hello", "apiusage"))
            if bare and usage:
                added_max = usage["stall_max_ms"] - bare["stall_max_ms"]
                added_p999 = usage["stall_p999_ms"] - bare["stall_p999_ms"]
                added_p99 = usage["stall_p99_ms"] - bare["stall_p99_ms"]
                print()
                print(
                    f"Longest GC pause: bare {bare['gc_max_ms']:.1f} ms "
                    f"({bare['gc_collections']} collections, {bare['gc_full']} full), apiusage "
                    f"{usage['gc_max_ms']:.1f} ms ({usage['gc_collections']} collections, "
                    f"{usage['gc_full']} full)"
                )
                print(
                    f"Stall caused by delivery (apiusage - bare, moderate load): "
                    f"max {added_max:+.2f} ms, p99.9 {added_p999:+.2f} ms, p99 {added_p99:+.2f} ms"
                )
                targets.append(
                    (
                        "delivery-caused stall (max lateness, moderate load) "
                        f"<= {TARGET_STALL_MS:g} ms",
                        added_max <= TARGET_STALL_MS,
                        f"{added_max:+.2f} ms",
                    )
                )
                ok = usage["expected"] > 0 and usage["events"] >= usage["expected"]
                targets.append(
                    (
                        "uvicorn moderate: every apiusage event delivered",
                        ok,
                        f"{usage['events']}/{usage['expected']}",
                    )
                )
            stall_json = {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in magg.items()}
        sat_bare = agg.get(("uvicorn", "hello", "bare"))
        sat_usage = agg.get(("uvicorn", "hello", "apiusage"))
        if sat_bare and sat_usage and sat_bare["stall_max_ms"] is not None:
            print()
            print(
                "Under saturation (hello) apiusage - bare: "
                f"max {sat_usage['stall_max_ms'] - sat_bare['stall_max_ms']:+.2f} ms, "
                f"p99 {sat_usage['stall_p99_ms'] - sat_bare['stall_p99_ms']:+.2f} ms "
                "(informational: a saturated loop is late by the requests it runs, too)"
            )

    foreign = [
        r
        for r in runs + moderate
        if max(r.cpu.get("foreign_cpu_pct", 0.0), r.cpu.get("steal_pct", 0.0)) >= FOREIGN_WARN
    ]
    if foreign:
        print()
        print(
            f"**{len(foreign)} run(s) were disturbed** (marked '!'): other processes took CPU "
            "time ('other CPU %', in % of one CPU), or the hypervisor gave the server's CPU to "
            "someone else ('stolen %', steal time of the server's CPU). Their req/s and "
            "latencies are low and noisy; 'req per CPU-s' holds up better. Run again on an "
            "idle machine for numbers worth quoting."
        )

    problems = [p for a in agg.values() for p in a["problems"]]
    if moderate:
        problems += [p for a in aggregate(moderate).values() for p in a["problems"]]
    if problems:
        print()
        print("## Problems")
        for problem in problems:
            print(f"- {problem}")

    print()
    print("## Targets")
    print()
    for name, ok, value in targets:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {value}")
    return {
        "throughput": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in agg.items()},
        "moderate": stall_json,
        "targets": [{"target": n, "pass": ok, "value": v} for n, ok, v in targets],
    }


def flag_foreign(pct: float) -> str:
    return f"{pct:.0f}" + (" !" if pct >= FOREIGN_WARN else "")


def stall_headers() -> list[str]:
    return [
        "route",
        "variant",
        "samples",
        "max ms",
        "p99.9 ms",
        "p99 ms",
        "late > 2 ms",
        "GCs (full)",
        "GC max ms",
        "+ max vs bare",
        "+ p99.9 vs bare",
        "+ p99 vs bare",
    ]


def stall_row(
    route: str, variant: str, a: dict[str, Any], bare: dict[str, Any] | None
) -> list[str]:
    def diff(key: str) -> str:
        if variant == "bare" or not bare or bare.get(key) is None:
            return "-"
        return f"{a[key] - bare[key]:+.2f}"

    return [
        route,
        variant,
        f"{a['stall_count']:,}",
        f"{a['stall_max_ms']:.2f}",
        f"{a['stall_p999_ms']:.2f}",
        f"{a['stall_p99_ms']:.2f}",
        f"{a['stall_over_2ms']:,}",
        f"{a['gc_collections']:,} ({a['gc_full']})",
        f"{a['gc_max_ms']:.2f}",
        diff("stall_max_ms"),
        diff("stall_p999_ms"),
        diff("stall_p99_ms"),
    ]


# ------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="apiusage behind real servers: throughput, latency, delivery, loop stall.",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of each measured wrk run (default 8)"
    )
    parser.add_argument("--warmup", type=float, help="seconds of the warm-up wrk run (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--servers", default="uvicorn,gunicorn", help="comma-separated: uvicorn,gunicorn"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated: " + ",".join(VARIANTS)
    )
    parser.add_argument("--routes", default="hello,work", help="comma-separated: hello,work")
    parser.add_argument(
        "--repeats",
        type=int,
        help="runs per combination, variants interleaved in alternating order (default 2, "
        "--quick 1)",
    )
    parser.add_argument(
        "--moderate-rate",
        type=float,
        default=300.0,
        help="req/s of the moderate load (default 300)",
    )
    parser.add_argument(
        "--moderate-duration", type=float, help="seconds of the moderate load (default 10)"
    )
    parser.add_argument(
        "--no-moderate", action="store_true", help="skip the moderate-load stall runs"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the server and the load to separate CPUs"
    )
    parser.add_argument("--quick", action="store_true", help="short runs (3 s), noisier")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' logs (their path is printed)"
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=20.0,
        help="before each run, wait up to this many seconds for other processes to go quiet "
        "(default 20)",
    )
    parser.add_argument(
        "--apiusage-path",
        type=Path,
        help="serve apiusage from this checkout (its src/ and adapters/) instead of the installed "
        "one, "
        "e.g. a 'git archive' of a baseline commit",
    )
    args = parser.parse_args(argv)

    def choose(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
        chosen = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in chosen if v not in allowed]
        if unknown or not chosen:
            parser.error(f"--{what}: choose from {', '.join(allowed)} (got {value!r})")
        return chosen

    variants = choose(args.variants, VARIANTS, "variants")
    if "bare" not in variants:
        variants.insert(0, "bare")  # every ratio is relative to it
    return Options(
        duration=args.duration or (3.0 if args.quick else 8.0),
        warmup=args.warmup or (1.0 if args.quick else 3.0),
        connections=args.connections,
        servers=choose(args.servers, SERVERS, "servers"),
        variants=variants,
        routes=choose(args.routes, tuple(ROUTES), "routes"),
        repeats=max(1, args.repeats or (1 if args.quick else 2)),
        moderate_rate=args.moderate_rate,
        moderate_duration=args.moderate_duration or (4.0 if args.quick else 10.0),
        moderate=not args.no_moderate,
        pin=not args.no_pin,
        json_path=args.json,
        keep_logs=args.keep_logs,
        apiusage_path=args.apiusage_path.resolve() if args.apiusage_path else None,
        idle_wait=args.idle_wait,
    )


def in_turn(variants: list[str], repeat: int) -> list[str]:
    """The variants in alternating order from one repeat to the next, so that a slow drift
    of the machine does not always favour the same one."""
    return list(variants) if repeat % 2 == 0 else list(reversed(variants))


def main(argv: list[str] | None = None) -> int:
    if shutil.which("wrk") is None:
        print(INSTALL_WRK, file=sys.stderr)
        return 2
    options = parse_args(argv)
    for module in ("fastapi", "uvicorn") if "uvicorn" in options.servers else ():
        if importlib.util.find_spec(module) is None:
            print(
                f"{module} is not installed for {sys.executable}; use the test venv",
                file=sys.stderr,
            )
            return 2
    for module in ("flask", "gunicorn") if "gunicorn" in options.servers else ():
        if importlib.util.find_spec(module) is None:
            print(
                f"{module} is not installed for {sys.executable}; use the test venv",
                file=sys.stderr,
            )
            return 2

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="apiusage-bench-server-"))
    bench = Bench(options, workdir)
    info = machine_info(bench)
    log(
        f"work route calibrated: {bench.work_loops} loops = {bench.work_ms:.3f} ms; "
        f"logs in {workdir}"
    )
    runs: list[Run] = []
    moderate: list[Run] = []
    try:
        for server in options.servers:
            for route in options.routes:
                for repeat in range(options.repeats):
                    for variant in in_turn(options.variants, repeat):
                        run = bench.throughput_run(server, route, variant, repeat)
                        runs.append(run)
                        log(
                            f"{server:8} {route:5} {variant:15} {run.rps:8,.0f} req/s  "
                            f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  "
                            f"served {run.served:7,}  events {run.events:7,}"
                            + (f"  stall max {run.stall['max_ms']:.2f} ms" if run.stall else "")
                            + (f"  [{run.error}]" if run.error else "")
                        )
        if options.moderate and "uvicorn" in options.servers:
            for repeat in range(options.repeats):
                for variant in in_turn(options.variants, repeat):
                    run = bench.moderate_run(variant, repeat)
                    moderate.append(run)
                    log(
                        f"moderate {variant:15} {run.rps:6.0f} req/s  "
                        f"stall max {run.stall['max_ms']:.2f} ms  "
                        f"p99 {run.stall['p99_ms']:.3f} ms  "
                        f"served {run.served:,}  events {run.events:,}"
                    )
    finally:
        bench.close()

    results = report(bench, info, runs, moderate)
    elapsed = time.monotonic() - started
    print()
    print(f"Total time: {elapsed:.0f} s")
    if options.json_path:
        payload = {
            "machine": info,
            "options": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()
            },
            "runs": [asdict(r) | {"delivered": r.delivered} for r in runs],
            "moderate_runs": [asdict(r) | {"delivered": r.delivered} for r in moderate],
            "elapsed_s": elapsed,
            **results,
        }
        options.json_path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"Results written to {options.json_path}")
    if options.keep_logs:
        print(f"Server logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_pace":
        pace(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
