"""An AWS Lambda function emulated in a process, for the freeze tests.

Like Lambda's runtime, it runs one invocation at a time through Mangum and reports when
the handler has returned: it reads a path per line from stdin, invokes the handler with
an API Gateway (HTTP API, payload 2.0) event for it, and prints ``done <status>
<milliseconds>``. The test freezes the process (SIGSTOP) as soon as it reads that line,
as Lambda freezes an instance between invocations, and may kill it (SIGKILL) for good.

Configured only through the environment: ``AWS_LAMBDA_FUNCTION_NAME`` and the PostHog
key and host, nothing else, as a user deploying to Lambda would.
"""

from __future__ import annotations

import sys
import time

from fastapi import FastAPI
from mangum import Mangum

from fastapi_apiusage import ApiUsage
from tests.support.lambda_events import lambda_event

app = FastAPI()


@app.get("/v1/orders/{order_id}")
async def order(order_id: int) -> dict[str, int]:
    return {"order_id": order_id}


ApiUsage(app, caller_header="x-caller")
handler = Mangum(app, lifespan="off")


def main() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        response = handler(lambda_event(line.strip(), "lambda-caller"), None)
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"done {response['statusCode']} {elapsed_ms:.2f}", flush=True)


if __name__ == "__main__":
    main()
