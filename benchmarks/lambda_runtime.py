"""An AWS Lambda runtime emulated in one process, for ``bench_faults.py``'s freeze scenario.

Like Lambda's runtime it runs one invocation at a time: it reads a path per line from
stdin, passes an API Gateway (HTTP API, payload 2.0) event for it to the handler (Mangum
around ``server_apps.create_fastapi_app()``, the variant from ``BENCH_VARIANT``), and
prints ``done <status> <microseconds the handler took>``. The benchmark freezes the
process (SIGSTOP) as soon as it reads that line, as Lambda freezes an instance between
invocations, and kills it (SIGKILL) at the end, as Lambda reclaims a frozen instance.

The line ``rtt`` instead times one round trip to the capture endpoint from the instance,
thawed as an invocation is: one POST of a one-event gzip batch over a kept-alive
connection (``http.client``, nothing else), printed as ``rtt <microseconds>``: the
yardstick for what delivering before the handler returns may add.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import sys
import time
import urllib.parse
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


class RoundTrip:
    """One POST of a one-event batch to the capture endpoint, timed."""

    def __init__(self) -> None:
        url = urllib.parse.urlsplit(os.environ["BENCH_CAPTURE_URL"])
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        properties = {f"property_{n}": f"value-{n:04d}-of-a-typical-length" for n in range(24)}
        event = {"event": "rtt", "distinct_id": "rtt", "uuid": "rtt", "properties": properties}
        batch = {"api_key": "phc_rtt", "batch": [event]}
        self.body = gzip.compress(json.dumps(batch).encode(), 1)
        self.headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}

    def __call__(self) -> float:
        started = time.perf_counter()
        self.connection.request("POST", "/batch/", body=self.body, headers=self.headers)
        self.connection.getresponse().read()
        return time.perf_counter() - started


def main() -> None:
    handler = Mangum(create_fastapi_app(), lifespan="off")
    round_trip = RoundTrip()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "rtt":
            print(f"rtt {round_trip() * 1e6:.0f}", flush=True)
            continue
        started = time.perf_counter()
        response = handler(lambda_event(line.strip()), None)
        micros = (time.perf_counter() - started) * 1e6
        print(f"done {response['statusCode']} {micros:.0f}", flush=True)


if __name__ == "__main__":
    main()
