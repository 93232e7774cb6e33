"""Which runtime the process runs on, for ``delivery="auto"``.

Serverless runtimes freeze or throttle the instance as soon as a request (an invocation)
has been answered, so a background thread may never get to deliver: there, each request
delivers its own events before it ends (``end_of_request``). Everywhere else a worker
delivers in the background. Each runtime is recognised by an environment variable it
sets for the code it runs:

========================================  ========================================
runtime                                   variable
========================================  ========================================
AWS Lambda (Mangum, apig-wsgi …)          ``AWS_LAMBDA_FUNCTION_NAME``
Google Cloud Functions                    ``FUNCTION_TARGET``, or ``FUNCTION_NAME`` with
                                          ``GCP_PROJECT``
Google Cloud Run (services; CPU may be    ``K_SERVICE``
throttled between requests)
Azure Functions                           ``FUNCTIONS_WORKER_RUNTIME``
Vercel functions                          ``VERCEL``
========================================  ========================================
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ephemeral_runtime"]


def ephemeral_runtime(environ: Mapping[str, str]) -> str | None:
    """The name of the serverless runtime ``environ`` belongs to, or None for a server."""
    if environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return "AWS Lambda"
    if environ.get("FUNCTION_TARGET") or (
        environ.get("FUNCTION_NAME") and environ.get("GCP_PROJECT")
    ):
        return "Google Cloud Functions"
    if environ.get("K_SERVICE"):
        return "Google Cloud Run"
    if environ.get("FUNCTIONS_WORKER_RUNTIME"):
        return "Azure Functions"
    if environ.get("VERCEL"):
        return "Vercel"
    return None
