"""``delivery="end_of_request"``: each request's events are at PostHog before it ends.

Serverless runtimes freeze the process as soon as the handler returns, so the tests look
at the capture endpoint right after the handler (or the test client) returned, without
waiting: what is not there by then would never leave a frozen instance.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from mangum import Mangum

import apiusage
from apiusage.delivery import BackgroundDelivery
from apiusage.health import Stats
from apiusage.runtime import ephemeral_runtime
from fastapi_apiusage import ApiUsage as FastAPIApiUsage
from flask_apiusage import ApiUsage as FlaskApiUsage
from tests.support.capture_server import CaptureServer
from tests.support.lambda_events import lambda_event

API_KEY = "phc_end_of_request"


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture(autouse=True)
def lambda_event_loop() -> Iterator[None]:
    """The loop Mangum runs invocations on (it takes the thread's, as on Lambda), closed
    after the test."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def posthog_env(capture: CaptureServer, monkeypatch: pytest.MonkeyPatch) -> CaptureServer:
    """A Lambda-like environment: only the function name and the PostHog key are set."""
    for name in ("APIUSAGE_STORE", "APIUSAGE_DELIVERY", "K_SERVICE", "FUNCTION_TARGET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders-api")
    monkeypatch.setenv("POSTHOG_API_KEY", API_KEY)
    monkeypatch.setenv("POSTHOG_HOST", capture.url)
    monkeypatch.setenv("APIUSAGE_IDENTITY_SECRET", "end-of-request-secret-0123456789")
    monkeypatch.setenv("APIUSAGE_FLUSH_INTERVAL", "600")  # the timer never fires here
    return capture


def test_auto_picks_end_of_request_on_lambda_and_every_invocation_is_delivered_by_its_end(
    posthog_env: CaptureServer,
) -> None:
    app = FastAPI()

    @app.get("/v1/orders/{order_id}")
    async def order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    usage = FastAPIApiUsage(app, caller_header="x-caller")
    assert usage.client.delivers_at_end_of_request
    handler = Mangum(app, lifespan="off")
    for number in range(8):
        started = time.perf_counter()
        response = handler(lambda_event(f"/v1/orders/{number}", f"caller-{number}"), None)
        elapsed = time.perf_counter() - started
        assert response["statusCode"] == 200
        # Frozen from here on: the event must already be at PostHog.
        received = [e for e in posthog_env.events() if e["event"] == "api_request"]
        assert [e["distinct_id"] for e in received][-1] == f"caller-{number}"
        assert len(received) == number + 1
        assert elapsed < 1.0
    assert len(posthog_env.batches()) == 8  # one batch per invocation
    assert usage.client.stats.snapshot()["dropped"] == 0


def test_a_flask_request_is_delivered_before_the_test_client_returns(
    posthog_env: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIUSAGE_DELIVERY", "end_of_request")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    app = Flask(__name__)

    @app.get("/v1/widgets/<int:widget_id>")
    def widget(widget_id: int) -> dict[str, int]:
        apiusage.track("widget_viewed", {"widget": widget_id}, distinct_id="user-9")
        return {"widget_id": widget_id}

    FlaskApiUsage(app)
    with app.test_client() as http:
        assert http.get("/v1/widgets/4", buffered=True).status_code == 200  # closed, as servers do
    names = sorted(event["event"] for event in posthog_env.events())
    assert names == ["api_request", "api_route_inventory", "widget_viewed"]


def test_when_posthog_is_unreachable_the_request_ends_within_its_budget(
    posthog_env: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIUSAGE_REQUEST_FLUSH_TIMEOUT", "0.3")
    posthog_env.fail_next(100, 503, delay=0.5)  # each attempt outlasts the request's budget
    app = FastAPI()

    @app.get("/v1/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    usage = FastAPIApiUsage(app)
    handler = Mangum(app, lifespan="off")
    started = time.perf_counter()
    assert handler(lambda_event("/v1/ping", "someone"), None)["statusCode"] == 200
    assert time.perf_counter() - started < 0.3 + 0.5
    stats = usage.client.stats.snapshot()
    assert stats["requests_ended_undelivered"] == 1
    assert stats["dropped"] == 0  # still queued, or being retried: not lost


def test_requests_waiting_for_delivery_hold_no_thread_the_app_needs(
    posthog_env: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty requests wait for a slow PostHog at once; meanwhile the app's own
    ``asyncio.to_thread`` work (on the loop's default executor, six threads here) runs at
    once: the waits are futures the delivery worker resolves, not threads."""
    monkeypatch.setenv("APIUSAGE_DELIVERY", "end_of_request")
    posthog_env.fail_next(100, 200, delay=0.5)  # every answer takes half a second
    app = FastAPI()

    @app.get("/v1/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/v1/threaded")
    async def threaded() -> dict[str, float]:
        started = time.perf_counter()
        await asyncio.to_thread(lambda: None)
        return {"waited": time.perf_counter() - started}

    FastAPIApiUsage(app, exclude_paths=["/v1/threaded"])

    async def scenario() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(6))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            waiting = [asyncio.create_task(http.get(f"/v1/items/{n}")) for n in range(20)]
            await asyncio.sleep(0.1)  # all twenty are waiting for PostHog now
            waited = (await http.get("/v1/threaded")).json()["waited"]
            statuses = [response.status_code for response in await asyncio.gather(*waiting)]
        return waited, statuses.count(200)

    waited, answered = asyncio.get_event_loop().run_until_complete(scenario())
    assert answered == 20
    assert waited < 0.25, f"the app's thread work waited {waited:.2f} s behind delivery"
    assert len([e for e in posthog_env.events() if e["event"] == "api_request"]) == 20


def test_a_request_waits_for_its_own_items_not_for_later_ones() -> None:
    release = threading.Event()
    processed: list[str] = []

    def process(batch: list[Any]) -> None:
        for item in batch:
            if item == "slow":
                release.wait(10)
            processed.append(item)

    delivery = BackgroundDelivery(
        process, Stats(), max_queue_size=100, batch_size=100, flush_interval=600
    )
    try:
        delivery.submit("first")
        assert delivery.deliver_through(delivery.submitted, timeout=5)
        assert processed == ["first"]
        delivery.submit("slow")
        slow_position = delivery.submitted
        delivery.submit("after")
        # "slow" holds the worker: neither it nor what came after can be delivered yet.
        assert not delivery.deliver_through(slow_position, timeout=0.2)
        release.set()
        assert delivery.deliver_through(delivery.submitted, timeout=5)
        assert processed == ["first", "slow", "after"]
    finally:
        release.set()
        delivery.close(5)


@pytest.mark.parametrize(
    ("environ", "runtime"),
    [
        ({"AWS_LAMBDA_FUNCTION_NAME": "f"}, "AWS Lambda"),
        ({"FUNCTION_TARGET": "handler", "K_SERVICE": "f"}, "Google Cloud Functions"),
        ({"FUNCTION_NAME": "f", "GCP_PROJECT": "p"}, "Google Cloud Functions"),
        ({"K_SERVICE": "api", "K_REVISION": "api-1"}, "Google Cloud Run"),
        ({"FUNCTIONS_WORKER_RUNTIME": "python"}, "Azure Functions"),
        ({"VERCEL": "1"}, "Vercel"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, None),
        ({}, None),
    ],
)
def test_runtimes_are_recognised_by_their_environment(
    environ: dict[str, str], runtime: str | None
) -> None:
    assert ephemeral_runtime(environ) == runtime


def test_background_is_kept_when_asked_for_even_on_lambda(
    posthog_env: CaptureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIUSAGE_DELIVERY", "background")
    client = apiusage.UsageClient()
    try:
        assert not client.delivers_at_end_of_request
    finally:
        client.close(timeout=1)


def test_auto_says_once_what_it_picked_and_why(
    posthog_env: CaptureServer, caplog: pytest.LogCaptureFixture
) -> None:
    from apiusage import client as client_module

    client_module._announce.cache_clear()  # another test may have said it already
    caplog.set_level("INFO", logger="apiusage")
    clients = [apiusage.UsageClient(), apiusage.UsageClient(event_name="other_name")]
    try:
        assert all(client.delivers_at_end_of_request for client in clients)
        said = [
            r.getMessage() for r in caplog.records if "delivery=end_of_request" in r.getMessage()
        ]
        assert len(said) == 1
        assert "AWS Lambda" in said[0]
    finally:
        for client in clients:
            client.close(timeout=1)
