"""What hostile requests cost: the slowest requests and the slowest event builds.

Drives the hostile mix of ``tests/support/hostile.py`` (undecodable cookies, oversized and
repetitive headers, absurd paths and queries, credentials of every shape) through a raw
ASGI app and a raw WSGI app, each request bare and wrapped by apiusage in turn, and
reports the time apiusage adds to each request (request path) and the time the worker
takes to build each request's events, at the median, p99, p99.9 and maximum. Super-linear
parsing shows up in the tail, not the median.

    python benchmarks/bench_hostile.py              # 3,000 requests per transport
    python benchmarks/bench_hostile.py --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.hostile import HostileRequest, asgi_scope, hostile_requests, wsgi_environ

import apiusage
from apiusage.sinks.memory import MemorySink


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _timed_builds(client: apiusage.UsageClient) -> list[float]:
    """Record the CPU time the worker takes to build each queued item."""
    durations: list[float] = []
    build = client.pipeline.build

    def timed(item: Any, into: Any) -> None:
        # The worker's own CPU time: wall time would include waiting for the GIL.
        started = time.thread_time()
        try:
            build(item, into)
        finally:
            durations.append(time.thread_time() - started)

    client.pipeline.build = timed  # type: ignore[method-assign]
    return durations


def _added(bare: list[float], wrapped: list[float]) -> list[float]:
    return [w - b for b, w in zip(bare, wrapped, strict=True)]


async def _asgi_run(requests: list[HostileRequest], app: Any) -> list[float]:
    durations = []

    async def send(message: Any) -> None:
        pass

    for request in requests:
        messages = [{"type": "http.request", "body": request.body}]

        async def receive(messages: list[Any] = messages) -> Any:
            return messages.pop() if messages else {"type": "http.disconnect"}

        started = time.perf_counter()
        await app(asgi_scope(request), receive, send)
        durations.append(time.perf_counter() - started)
    return durations


def _wsgi_run(requests: list[HostileRequest], app: Any) -> list[float]:
    durations = []
    for request in requests:
        environ = wsgi_environ(request)
        started = time.perf_counter()
        response = app(environ, lambda *args: None)
        b"".join(response)
        getattr(response, "close", lambda: None)()
        durations.append(time.perf_counter() - started)
    return durations


def _row(label: str, values: list[float]) -> str:
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1e3

    return (
        f"{label:<40} {statistics.median(ordered) * 1e3:9.3f} {at(0.99):9.3f} "
        f"{at(0.999):9.3f} {ordered[-1] * 1e3:9.3f}"
    )


def benign_requests(count: int) -> list[HostileRequest]:
    """Ordinary requests, for comparison: what the tail looks like without hostility."""
    headers = [
        (b"user-agent", b"python-requests/2.32.3"),
        (b"authorization", b"Bearer sk_live_0123456789abcdef"),
        (b"accept", b"application/json"),
    ]
    return [
        HostileRequest("GET", f"/v1/items/{n}", b"expand=owner", list(headers))
        for n in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    print(f"{args.requests} hostile requests per transport; milliseconds")
    print(f"{'':<40} {'median':>9} {'p99':>9} {'p99.9':>9} {'max':>9}")
    for transport, mix in (
        ("asgi", "hostile"),
        ("asgi", "benign"),
        ("wsgi", "hostile"),
        ("wsgi", "benign"),
    ):
        requests = (
            hostile_requests(args.requests, seed=11)
            if mix == "hostile"
            else benign_requests(args.requests)
        )
        sink = MemorySink()
        client = apiusage.UsageClient(
            sink=sink, identity_secret="bench-hostile-identity-secret", caller_header="x-caller"
        )
        builds = _timed_builds(client)
        if transport == "asgi":
            wrapped_app = apiusage.ASGIMiddleware(_asgi_app, client=client)
            bare = asyncio.run(_asgi_run(requests, _asgi_app))
            wrapped = asyncio.run(_asgi_run(requests, wrapped_app))
        else:
            wrapped_app = apiusage.WSGIMiddleware(_wsgi_app, client=client)
            bare = _wsgi_run(requests, _wsgi_app)
            wrapped = _wsgi_run(requests, wrapped_app)
        client.flush(60)
        stats = client.stats.snapshot()
        print(_row(f"{transport}, {mix}: request path, added", _added(bare, wrapped)))
        print(_row(f"{transport}, {mix}: building (worker CPU)", builds))
        events = len(sink.named("api_request"))
        print(
            f"{'':<40} events {events}/{len(requests)}, internal errors "
            f"{stats['internal_errors']}, dropped {stats['dropped']}"
        )
        client.close(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
