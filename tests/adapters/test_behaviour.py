"""One behaviour table for every framework: the example apps in docs/examples/, in-process.

Each test runs against every driver (see drivers.py); what is native to a framework (route
template syntax, transport, where an unhandled error ends up) comes from the driver.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from apiusage import Event
from tests.adapters.drivers import DRIVERS, Driver, Reply, make_driver

ALICE = {"x-api-key": "key-alice"}
BOB = {"x-api-key": "key-bob"}


@pytest.fixture(params=list(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    driver = make_driver(request.param)
    driver.start()
    yield driver
    driver.close()


def only(events: list[Event]) -> Event:
    assert len(events) == 1, [(event.name, event.properties.get("route")) for event in events]
    return events[0]


def assert_common(
    driver: Driver, event: Event, reply: Reply, *, method: str, route: str | None
) -> None:
    """What every api_request event carries, whatever the route."""
    properties = event.properties
    assert properties["status_code"] == reply.status
    assert properties["response_bytes"] == len(reply.body)
    assert properties["method"] == method
    # The framework's own template, and the same in OpenAPI's syntax (what reports merge).
    assert properties["route_template"] == (driver.framework_template(route) if route else None)
    assert properties["route"] == (driver.template(route) if route else None)
    assert properties["duration_ms"] > 0
    assert properties["framework"] == driver.framework
    assert properties["transport"] == driver.transport
    assert properties["client_library"] == "acme-sdk"
    assert properties["client_library_version"] == "2.1"
    assert properties["request_id"] == event.uuid


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_request_of_a_known_caller(driver: Driver, version: str) -> None:
    reply = driver.request("GET", f"/{version}/items/7", headers=ALICE)

    assert reply.status == 200
    if version == "v1":
        assert reply.json() == {"id": 7, "name": "Item 7", "owner": "usr_alice"}
    else:
        assert reply.json() == {"item": {"id": 7, "name": "Item 7"}, "owner": {"id": "usr_alice"}}
    event = only(driver.events())
    assert event.name == "api_request"
    assert_common(driver, event, reply, method="GET", route=f"item_{version}")
    properties = event.properties
    assert properties["status_class"] == "2xx"
    assert properties["api_version"] == version
    assert properties["api_version_source"] == "path"
    assert properties["auth_method"] == "api_key"
    assert properties["auth_location"] == "header"
    assert properties["exception"] is None
    assert properties["request_bytes"] == 0
    # The app's own user: its id is the caller, its organisation the PostHog group.
    assert event.distinct_id == "usr_alice"
    assert properties["organisation"] == "org_acme"
    assert event.groups == {"organisation": "org_acme"}
    assert not event.personless
    assert [(group.group_type, group.group_key) for group in driver.sink.groups] == [
        ("organisation", "org_acme")
    ]


def test_callers_are_told_apart(driver: Driver) -> None:
    driver.request("GET", "/v1/items/1", headers=ALICE)
    driver.request("GET", "/v2/items/2", headers=BOB)
    driver.request("GET", "/v1/items/3", headers=ALICE)

    events = driver.events()
    assert [(event.distinct_id, event.groups.get("organisation")) for event in events] == [
        ("usr_alice", "org_acme"),
        ("usr_bob", "org_globex"),
        ("usr_alice", "org_acme"),
    ]
    assert [event.properties["api_version"] for event in events] == ["v1", "v2", "v1"]
    assert len({event.properties["request_id"] for event in events}) == 3


def test_request_without_credentials(driver: Driver) -> None:
    reply = driver.request("GET", "/v1/items/7")

    assert reply.status == 401
    event = only(driver.events())
    assert_common(driver, event, reply, method="GET", route="item_v1")
    assert event.properties["auth_method"] == "none"
    assert event.properties["auth_location"] is None
    assert event.properties["organisation"] is None
    assert event.personless
    assert event.groups == {}
    assert event.distinct_id == event.properties["request_id"]
    assert driver.sink.groups == []


def test_a_refused_api_key_names_no_caller(driver: Driver) -> None:
    """The example apps answer an unknown key with 401: a failed authentication, not a
    caller (a random key would otherwise be a new phantom caller each time)."""
    first = driver.request("GET", "/v1/items/7", headers={"x-api-key": "key-mallory"})
    second = driver.request("GET", "/v2/items/8", headers={"x-api-key": "key-mallory"})
    driver.request("GET", "/v1/items/9", headers={"x-api-key": "key-trudy"})

    assert (first.status, second.status) == (401, 401)
    events = driver.events()
    assert len(events) == 3
    for event in events:
        assert event.properties["auth_method"] == "api_key"
        assert event.properties["auth_failed"] is True
        assert event.personless
        assert event.distinct_id == event.uuid  # the request's own id, never the key's
        assert "mallory" not in event.distinct_id
        assert event.groups == {}


def test_journey_event_inherits_the_request(driver: Driver) -> None:
    payload = {"name": "Apollo"}
    reply = driver.request("POST", "/v1/projects", headers=BOB, json=payload)

    assert reply.status == 201
    project = reply.json()
    assert project["name"] == "Apollo"
    assert project["organisation_id"] == "org_globex"
    request_event = only(driver.events())
    assert_common(driver, request_event, reply, method="POST", route="/v1/projects")
    assert request_event.properties["request_bytes"] == len(json.dumps(payload).encode())
    assert request_event.distinct_id == "usr_bob"

    journey = only(driver.events("project_create"))
    assert journey.properties["project_id"] == project["id"]
    assert journey.distinct_id == "usr_bob"
    assert journey.groups == {"organisation": "org_globex"}
    assert journey.properties["request_id"] == request_event.uuid
    assert journey.properties["route"] == driver.template("/v1/projects")
    assert journey.properties["method"] == "POST"
    assert journey.properties["api_version"] == "v1"
    assert journey.uuid != request_event.uuid
    assert journey.timestamp >= request_event.timestamp


def test_signup_identifies_the_new_caller_and_its_organisation(driver: Driver) -> None:
    organisation = f"org_{secrets.token_hex(4)}"
    payload = {"email": "new@example.com", "organisation": organisation, "plan": "pro"}
    reply = driver.request("POST", "/v1/signup", json=payload)

    assert reply.status == 201
    created = reply.json()
    assert created["organisation_id"] == organisation
    request_event = only(driver.events())
    assert_common(driver, request_event, reply, method="POST", route="/v1/signup")
    # No credentials were sent, but identify() named the caller during the request.
    assert request_event.properties["auth_method"] == "none"
    assert request_event.distinct_id == created["id"]
    assert request_event.groups == {"organisation": organisation}
    assert not request_event.personless

    signup = only(driver.events("signup"))
    assert signup.distinct_id == created["id"]
    assert signup.groups == {"organisation": organisation}
    assert signup.properties["plan"] == "pro"
    assert signup.properties["request_id"] == request_event.uuid
    group = only([group for group in driver.sink.groups if group.group_key == organisation])
    assert (group.group_type, group.properties) == ("organisation", {"plan": "pro"})

    # The key handed out at sign-up works, and is the same caller.
    own_key = {"x-api-key": created["api_key"]}
    assert driver.request("GET", "/v1/items/1", headers=own_key).status == 200
    later = driver.events()[-1]
    assert later.distinct_id == created["id"]
    assert later.groups == {"organisation": organisation}


def test_streamed_response_is_timed_to_its_last_chunk(driver: Driver) -> None:
    reply = driver.request("GET", "/v1/stream", headers=ALICE)

    assert reply.status == 200
    assert reply.body == b"chunk 0\nchunk 1\nchunk 2\n"
    event = only(driver.events())
    assert_common(driver, event, reply, method="GET", route="/v1/stream")
    pauses_ms = 2 * driver.module.STREAM_PAUSE * 1000
    assert event.properties["duration_ms"] >= 0.9 * pauses_ms


def test_unhandled_error_is_recorded_as_a_500(driver: Driver) -> None:
    reply = driver.request("GET", "/v1/boom", headers=ALICE)

    assert reply.status == 500
    event = only(driver.events())
    assert_common(driver, event, reply, method="GET", route="/v1/boom")
    assert event.properties["status_class"] == "5xx"
    assert event.properties["exception"] == "RuntimeError"
    # Starlette and FastAPI re-raise after sending their 500, so the server logs the error;
    # the others answer the 500 themselves.
    assert [type(error) for error in driver.server_errors] == (
        [RuntimeError] if driver.errors_reach_server else []
    )


def outcome(driver: Driver, method: str, path: str, **request: Any) -> tuple[Any, ...]:
    reply = driver.request(method, path, **request)
    errors = [(type(error), str(error)) for error in driver.server_errors]
    driver.server_errors.clear()
    return reply.status, reply.body, errors


def test_the_app_behaves_as_without_apiusage(driver: Driver) -> None:
    """Status, body and what reaches the server are the same with apiusage disabled."""
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/boom", {"headers": ALICE}),
        ("GET", "/v1/items/7", {"headers": ALICE}),
        ("GET", "/v1/items/7", {}),
        ("GET", "/v1/stream", {}),
        ("GET", "/v1/nope", {}),
    ]
    instrumented = [outcome(driver, method, path, **request) for method, path, request in calls]
    assert len(driver.events()) == len(calls)
    driver.close()

    plain = make_driver(driver.name)
    plain.start(enabled=False)
    try:
        uninstrumented = [outcome(plain, method, path, **kwargs) for method, path, kwargs in calls]
        assert plain.events(None) == []  # nothing at all: track()/identify() are ignored too
    finally:
        plain.close()
    assert instrumented == uninstrumented
    assert [status for status, _, _ in instrumented] == [500, 200, 401, 200, 404]


def test_not_found_has_no_route(driver: Driver) -> None:
    # /v1/nope is under a prefix (mount, blueprint, include …) that matches; /v3 is not.
    under_prefix = driver.request("GET", "/v1/nope", headers=ALICE)
    missing = driver.request("GET", "/v3/nothing/here")

    assert (under_prefix.status, missing.status) == (404, 404)
    under, nothing = driver.events()
    for event, reply in ((under, under_prefix), (nothing, missing)):
        assert_common(driver, event, reply, method="GET", route=None)
        assert event.properties["exception"] is None
    assert nothing.properties["api_version"] == "v3"  # from the path, when no route matched


def test_health_check_is_not_recorded(driver: Driver) -> None:
    reply = driver.request("GET", "/health")

    assert reply.status == 200
    assert reply.json() == {"status": "ok"}
    assert driver.events(None) == []
    assert driver.client is not None
    assert driver.client.stats.snapshot()["requests_recorded"] == 0

    driver.request("GET", "/v1/items/1", headers=ALICE)  # recording itself works
    assert only(driver.events()).properties["route"] == driver.template("item_v1")
