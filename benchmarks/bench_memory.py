"""Memory held by one queued record, measured with tracemalloc, against the queue's estimate.

The delivery queue is bounded in records (``max_queue_size``) and in bytes
(``max_queue_bytes``); the byte bound counts an estimate made on the request path. This
measures what a queued record really holds (the worker kept asleep, every request made
of fresh objects as a server would make them) and prints it beside the estimate::

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import asyncio
import gc
import io
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_overhead import (
    ASGI_SCOPE,
    WSGI_ENVIRON,
    receive,
    send,
    starlette_app,
    start_response,
)

REQUESTS = 2000


def _fresh_asgi_scope() -> dict[str, Any]:
    scope = dict(ASGI_SCOPE)
    scope["headers"] = [(bytes(bytearray(k)), bytes(bytearray(v))) for k, v in scope["headers"]]
    scope["path"] = "/v1/items/" + str(42)
    return scope


def _fresh_environ() -> dict[str, Any]:
    environ = {
        k: (v.encode().decode() if isinstance(v, str) else v) for k, v in WSGI_ENVIRON.items()
    }
    environ["wsgi.input"] = io.BytesIO(b"")
    return environ


def measure(kind: str) -> tuple[int, int]:
    """(measured, estimated) bytes per queued record."""
    import apiusage
    from apiusage.testing import recording_client

    client, _ = recording_client(batch_size=10_000, flush_interval=3600, max_queue_size=10**6)
    if kind == "asgi":
        asgi_app = apiusage.ASGIMiddleware(starlette_app(), client=client)

        async def requests(count: int) -> None:
            for _ in range(count):
                await asgi_app(_fresh_asgi_scope(), receive, send)  # type: ignore[arg-type]

        def run(count: int) -> None:
            asyncio.run(requests(count))

    else:
        from flask import Flask

        flask_app = Flask("memory")

        @flask_app.get("/v1/items/<item_id>")
        def item(item_id: str) -> dict[str, str]:
            return {"id": item_id}

        wsgi_app = apiusage.WSGIMiddleware(flask_app.wsgi_app, client=client)

        def run(count: int) -> None:
            for _ in range(count):
                body = wsgi_app(_fresh_environ(), start_response)
                list(body)
                body.close()  # type: ignore[attr-defined]

    run(50)
    client.delivery._queue.clear()  # type: ignore[attr-defined]
    client.delivery._bytes_out = client.delivery._bytes_in  # type: ignore[attr-defined]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    estimated_before = client.delivery.pending_bytes  # type: ignore[attr-defined]
    run(REQUESTS)
    gc.collect()
    measured = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    estimated = client.delivery.pending_bytes - estimated_before  # type: ignore[attr-defined]
    client.delivery._queue.clear()  # type: ignore[attr-defined]  # nothing to deliver
    client.delivery._bytes_out = client.delivery._bytes_in  # type: ignore[attr-defined]
    client.close(timeout=0)
    return measured // REQUESTS, estimated // REQUESTS


def main() -> None:
    print(f"{'':<6} {'measured B/record':>18} {'estimated B/record':>19}")
    for kind in ("asgi", "wsgi"):
        measured, estimated = measure(kind)
        print(f"{kind:<6} {measured:>18} {estimated:>19}")
    print(
        "\nThe request is GET /v1/items/42 with Host, User-Agent, Accept and X-API-Key "
        "headers; the record keeps the last three."
    )


if __name__ == "__main__":
    main()
