"""A local stand-in for PostHog's v0 capture endpoint, for wire-contract and process tests.

It listens on 127.0.0.1 (a free port), accepts ``POST /batch/`` bodies (optionally
``Content-Encoding: gzip``), keeps every decoded batch with its raw headers, and answers
``200 {"status": 1}``. It can be told to fail the next N batch requests with a given
status (and headers such as ``Retry-After``), to answer them only after a delay, to break
them (a connection reset, or bytes that are not HTTP), and to refuse bodies over a size
with 413, as PostHog does, to exercise retries, splits and drops.
Anything else (``/flags``, ``/decide`` …) is recorded and answered ``200 {}``.

Use it as a context manager::

    with CaptureServer() as server:
        client = apiusage.UsageClient(posthog_api_key="phc_test", posthog_host=server.url)
        ...
        server.wait_for(3)

or run it as a process (``python -m tests.support.capture_server --port-file PATH``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["CaptureServer", "ReceivedRequest"]


#: Where the ``posthog`` client fetches flag definitions (newer, then older versions).
_FLAG_DEFINITION_PATHS = ("/flags/definitions", "/api/feature_flag/local_evaluation")


@dataclass
class ReceivedRequest:
    """One HTTP request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    #: The body after gzip decoding, as text (what a leak check should search).
    text: str
    #: The parsed JSON body, or None when it was not JSON.
    payload: Any
    #: The status the server answered with.
    status: int
    received_at: float = field(default_factory=time.time)
    #: The client's TCP port: one port for many requests means a kept-alive connection.
    client_port: int = 0

    @property
    def batch(self) -> list[dict[str, Any]]:
        if isinstance(self.payload, dict) and isinstance(self.payload.get("batch"), list):
            return self.payload["batch"]
        return []


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a process killed while PostHog hung) is
        part of the tests, not an error to print."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class CaptureServer:
    """PostHog's ``/batch/`` endpoint, in a background thread of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        # How to answer the next batch requests: (status, extra headers, delay in seconds,
        # fault). A fault replaces the answer: "reset" or "garbage".
        self._failures: list[tuple[int, dict[str, str], float, str | None]] = []
        #: Decoded bodies larger than this are answered 413 (None: no limit).
        self.max_body_bytes: int | None = None
        #: What PostHog's flag-definitions endpoint (local evaluation) answers: a
        #: ``{"flags": [...], "group_type_mapping": {...}, "cohorts": {}}`` document, or
        #: None for "down" (503). ``flags_key``: the secret key it requires.
        self.flag_definitions: dict[str, Any] | None = None
        self.flags_key: str | None = None
        self._server = _QuietServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        address = self._server.server_address
        self.host = str(address[0])
        self.port = int(address[1])
        self.url = f"http://{self.host}:{self.port}"

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> CaptureServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="capture-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control
    def fail_next(
        self,
        count: int,
        status: int = 500,
        *,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        fault: str | None = None,
    ) -> None:
        """Answer the next ``count`` batch requests with ``status`` (then 200 again).

        ``headers`` are added to those answers; ``delay`` holds each answer back that long
        (longer than the client's timeout makes it a timeout). ``fault`` answers with no
        HTTP at all: ``"reset"`` resets the connection (TCP RST) once the body is read,
        ``"garbage"`` writes bytes that are not an HTTP response and closes it.
        """
        if fault not in (None, "reset", "garbage"):
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._failures.extend([(status, dict(headers or {}), delay, fault)] * count)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._failures.clear()

    # ----------------------------------------------------------------- queries
    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received, in arrival order (including failed and non-batch ones)."""
        with self._lock:
            return list(self._requests)

    def batches(self, *, accepted_only: bool = True) -> list[ReceivedRequest]:
        """The ``/batch/`` requests (by default only those answered 200)."""
        return [
            request
            for request in self.requests
            if request.path.split("?")[0] == "/batch/"
            and (request.status == 200 or not accepted_only)
        ]

    def client_ports(self) -> set[int]:
        """The client ports that batches came from (one per connection)."""
        return {request.client_port for request in self.batches(accepted_only=False)}

    def events(self, *, accepted_only: bool = True) -> list[dict[str, Any]]:
        """All batch items, flattened, in arrival order."""
        return [
            item for request in self.batches(accepted_only=accepted_only) for item in request.batch
        ]

    def wait_for(
        self,
        count: int,
        timeout: float = 5.0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        accepted_only: bool = True,
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` (matching) events arrived; return them all.

        Raises AssertionError on timeout, saying what did arrive.
        """
        deadline = time.monotonic() + timeout

        def matching() -> list[dict[str, Any]]:
            events = self.events(accepted_only=accepted_only)
            return [e for e in events if predicate(e)] if predicate else events

        with self._lock:
            while True:
                found = matching()
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [event.get("event") for event in self.events(accepted_only=False)]
                    raise AssertionError(
                        f"expected at least {count} events within {timeout}s, got {len(found)}; "
                        f"all received: {names}"
                    )
                self._lock.wait(min(remaining, 0.1))

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` HTTP requests arrived (whatever their answer)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} requests within {timeout}s, got {len(self._requests)}"
                    )
                self._lock.wait(min(remaining, 0.1))
            return list(self._requests)

    # ---------------------------------------------------------------- handling
    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def _answer_for_batch(self, size: int) -> tuple[int, dict[str, str], float, str | None]:
        with self._lock:
            if self._failures:
                return self._failures.pop(0)
        if self.max_body_bytes is not None and size > self.max_body_bytes:
            return 413, {}, 0.0, None
        return 200, {}, 0.0, None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Answer in one segment: with Nagle on, the client's delayed ACK holds every
            # answer back 40 ms, which no real PostHog does and which would throttle delivery.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def _read_body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                raw = self._read_body()
                headers = {name.lower(): value for name, value in self.headers.items()}
                decoded = raw
                if headers.get("content-encoding", "").lower() == "gzip" and raw:
                    decoded = gzip.decompress(raw)
                text = decoded.decode("utf-8", errors="replace")
                try:
                    payload = json.loads(text) if text else None
                except ValueError:
                    payload = None
                route = self.path.split("?")[0].rstrip("/")
                if self.command == "GET" and route in _FLAG_DEFINITION_PATHS:
                    self._answer_flag_definitions(headers)
                    return
                is_batch = self.command == "POST" and self.path.split("?")[0] == "/batch/"
                status, extra_headers, delay, fault = (
                    server._answer_for_batch(len(decoded)) if is_batch else (200, {}, 0.0, None)
                )
                if delay:
                    time.sleep(delay)
                server._record(
                    ReceivedRequest(
                        self.command,
                        self.path,
                        headers,
                        raw,
                        text,
                        payload,
                        status,
                        client_port=int(self.client_address[1]),
                    )
                )
                if fault is not None:
                    self._break(fault)
                elif not is_batch:
                    self._answer(200, {})
                elif status == 200:
                    self._answer(200, {"status": 1})
                else:
                    detail = f"capture server answered {status}"
                    self._answer(status, {"detail": detail}, extra_headers)

            def _answer_flag_definitions(self, headers: dict[str, str]) -> None:
                server._record(
                    ReceivedRequest(self.command, self.path, headers, b"", "", None, 200)
                )
                definitions = server.flag_definitions
                if server.flags_key and headers.get("authorization") != (
                    f"Bearer {server.flags_key}"
                ):
                    self._answer(401, {"detail": "invalid key"})
                elif definitions is None:
                    self._answer(503, {"detail": "flag definitions are down"})
                else:
                    self._answer(200, definitions)

            def _break(self, fault: str) -> None:
                self.close_connection = True
                if fault == "garbage":
                    self.wfile.write(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n{]")
                    self.wfile.flush()
                    return
                # SO_LINGER 0: close() sends a TCP RST instead of a FIN.
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()

            do_POST = _handle
            do_GET = _handle

        return Handler


def main(argv: list[str] | None = None) -> None:
    """Run the server until interrupted, writing its port and every received event to files."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the chosen port here")
    parser.add_argument(
        "--out", type=Path, help="append each received batch item here (JSON lines)"
    )
    args = parser.parse_args(argv)
    with CaptureServer(port=args.port) as server:
        if args.port_file:
            args.port_file.write_text(str(server.port))
        print(f"capture server listening on {server.url}", flush=True)
        written = 0
        try:
            while True:
                events = server.events()
                if args.out and len(events) > written:
                    with args.out.open("a", encoding="utf-8") as handle:
                        for event in events[written:]:
                            handle.write(json.dumps(event) + "\n")
                    written = len(events)
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
