"""An AWS Lambda runtime emulated in one process, for ``bench_faults.py``'s freeze scenario.

Like Lambda's runtime it runs one invocation at a time: it reads a path per line from
stdin, passes an API Gateway (HTTP API, payload 2.0) event for it to the handler (Mangum
around ``server_apps.create_fastapi_app()``, the variant from ``BENCH_VARIANT``), and
prints ``done <status> <microseconds the handler took>``. The benchmark freezes the
process (SIGSTOP) as soon as it reads that line, as Lambda freezes an instance between
invocations, and kills it (SIGKILL) at the end, as Lambda reclaims a frozen instance.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mangum import Mangum
from server_apps import create_fastapi_app

HEADERS = {
    "host": "api.example.com",
    "user-agent": "python-requests/2.32.3",
    "x-api-key": "sk_live_faults_0123456789",
}


def lambda_event(path: str) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": HEADERS,
        "requestContext": {
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4"},
            "requestId": "id",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": False,
    }


def main() -> None:
    handler = Mangum(create_fastapi_app(), lifespan="off")
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        response = handler(lambda_event(line.strip()), None)
        micros = (time.perf_counter() - started) * 1e6
        print(f"done {response['statusCode']} {micros:.0f}", flush=True)


if __name__ == "__main__":
    main()
