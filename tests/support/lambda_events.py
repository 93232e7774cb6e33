"""AWS Lambda's input for an HTTP request: an API Gateway HTTP API (payload 2.0) event, as
Lambda hands it to Mangum. Shared by the in-process tests and the emulated runtime."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["lambda_event"]


def lambda_event(path: str, caller: str) -> dict[str, Any]:
    """A ``GET path`` from ``caller`` (its ``x-caller`` header), with curl's user agent."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "api.example.com", "x-caller": caller, "user-agent": "curl/8.1"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.9",
                "userAgent": "curl/8.1",
            },
            "requestId": "id",
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": False,
    }
