"""A fast stand-in for PostHog's capture endpoint that only counts, for the server benchmark.

Unlike ``tests/support/capture_server.py`` it keeps nothing but counters, so it stays cheap
however many events arrive. Run it in its own process::

    python benchmarks/capture_endpoint.py --port-file /tmp/capture.port

Endpoints:

* ``POST /batch/`` (also ``/capture/``, ``/e/``, ``/i/v0/e/``): a JSON body,
  ``Content-Encoding: gzip`` or plain, ``{"api_key": ..., "batch": [...]}``; the items of
  ``batch`` are counted (a body without ``batch`` counts as one event). Answers
  ``200 {"status": 1}``; a body that cannot be decoded answers 400 and is counted as bad.
* ``GET /count``: ``{"events": N, "by_event": {name: n}, "unique_events": U,
  "batches": B, "bad_requests": X, "refused_batches": R, "bytes": Y}`` (``unique_events``:
  distinct ``uuid`` values among the events; ``events - unique_events`` arrived twice).
* ``POST /reset``: zeroes every counter.
* ``POST /_fault`` with ``{"status": S, "delay": D}``: from now on, answer every capture
  request ``S`` (its events are not counted: PostHog is down) after ``D`` seconds (a
  status of 200 with a delay: PostHog is slow); ``{}`` restores the normal answer.
* Anything else (``/flags`` …): ``200 {}``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Counters", "main", "make_server"]

CAPTURE_PATHS = frozenset(
    {"/batch/", "/batch", "/capture/", "/capture", "/e/", "/e", "/i/v0/e/", "/i/v0/e", "/track/"}
)


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events = 0
        self.by_event: Counter[str] = Counter()
        self.batches = 0
        self.bad_requests = 0
        self.refused_batches = 0
        self.bytes = 0
        self.uuids: set[str] = set()
        #: (status, delay) for every capture request while a fault is set.
        self.fault: tuple[int, float] | None = None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "events": self.events,
                "by_event": dict(self.by_event),
                "unique_events": len(self.uuids),
                "refused_batches": self.refused_batches,
                "batches": self.batches,
                "bad_requests": self.bad_requests,
                "bytes": self.bytes,
            }

    def reset(self) -> None:
        with self.lock:
            self.events = self.batches = self.bad_requests = self.bytes = 0
            self.refused_batches = 0
            self.by_event.clear()
            self.uuids.clear()


def _decode(raw: bytes, encoding: str, query: str) -> Any:
    if "gzip" in encoding or "compression=gzip" in query or raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif encoding == "deflate":
        raw = zlib.decompress(raw)
    return json.loads(raw)


def make_server(host: str, port: int, counters: Counters) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as PostHog's client expects
        # Headers and body go out in two writes: with Nagle's algorithm the body would wait
        # for the client's delayed ACK (40 ms), holding every POST that long.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/count":
                self._answer(200, counters.snapshot())
            else:
                self._answer(200, {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            if path == "/reset":
                counters.reset()
                self._answer(200, {"status": 1})
                return
            if path == "/_fault":
                setting = json.loads(raw or b"{}")
                counters.fault = (
                    (int(setting.get("status", 200)), float(setting.get("delay", 0.0)))
                    if setting
                    else None
                )
                self._answer(200, {"status": 1})
                return
            if path not in CAPTURE_PATHS:
                self._answer(200, {})
                return
            fault = counters.fault
            if fault is not None:
                status, delay = fault
                if delay:
                    time.sleep(delay)
                if status != 200:
                    with counters.lock:
                        counters.refused_batches += 1
                    self._answer(status, {"detail": "PostHog is down (benchmark fault)"})
                    return
            try:
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                payload = _decode(raw, encoding, query)
            except (ValueError, OSError, EOFError, zlib.error):
                with counters.lock:
                    counters.bad_requests += 1
                self._answer(400, {"detail": "undecodable body"})
                return
            if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
                events = payload["batch"]
            elif isinstance(payload, list):
                events = payload
            else:
                events = [payload]
            names = [e.get("event") if isinstance(e, dict) else None for e in events]
            uuids = [e.get("uuid") for e in events if isinstance(e, dict)]
            with counters.lock:  # counted before answering: a flush that returns sees it
                counters.uuids.update(str(u) for u in uuids if u)
                counters.events += len(events)
                counters.by_event.update(str(name) for name in names)
                counters.batches += 1
                counters.bytes += len(raw)
            self._answer(200, {"status": 1})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Counting PostHog capture endpoint.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--port-file", type=Path, help="write the chosen port here")
    args = parser.parse_args(argv)

    counters = Counters()
    server = make_server(args.host, args.port, counters)
    port = int(server.server_address[1])

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        tmp = args.port_file.with_name(args.port_file.name + f".{os.getpid()}.tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)  # readers never see a half-written file
    print(f"capture endpoint listening on http://{args.host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
