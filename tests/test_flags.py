"""Feature flags on API requests: evaluated locally (apiusage's own definitions, or
PostHog's through the real ``posthog`` client against a stand-in of its definitions
endpoint), once per request, recorded on the request's event as PostHog's experiments
read them, and never a network call or an exception on the request path."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import apiusage
from apiusage import ConfigurationError, UsageClient
from apiusage.feature_flags.local import parse_flag
from apiusage.sinks.memory import MemorySink
from apiusage.testing import force_flags
from fastapi_apiusage import ApiUsage as FastApiUsage
from fastapi_apiusage import Flag
from tests.adapters.drivers import IDENTITY_SECRET
from tests.support.capture_server import CaptureServer

FLAGS = {
    "new-pagination": {"rollout": 20, "by": "organisation"},
    "widgets-v3": {"variants": {"control": 50, "v3": 50}, "by": "organisation"},
    "beta": {"callers": ["usr_vip"]},
    "kill-switch": False,
}
ORGANISATIONS = [f"org_{n}" for n in range(300)]


def posthog_definitions(rollout: float = 20) -> dict[str, Any]:
    """The same flags as PostHog defines them (group 0 is the organisation)."""
    by_organisation = {"aggregation_group_type_index": 0}
    return {
        "flags": [
            {
                "id": 1,
                "key": "new-pagination",
                "active": True,
                "filters": {
                    **by_organisation,
                    "groups": [{"properties": [], "rollout_percentage": rollout}],
                },
            },
            {
                "id": 2,
                "key": "widgets-v3",
                "active": True,
                "filters": {
                    **by_organisation,
                    "groups": [{"properties": [], "rollout_percentage": 100}],
                    "multivariate": {
                        "variants": [
                            {"key": "control", "rollout_percentage": 50},
                            {"key": "v3", "rollout_percentage": 50},
                        ]
                    },
                },
            },
        ],
        "group_type_mapping": {"0": "organisation"},
        "cohorts": {},
    }


@pytest.fixture
def posthog_flags() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        server.flags_key = "phs_test_flags_key"
        server.flag_definitions = posthog_definitions()
        yield server


def flags_app(client: UsageClient, calls: list[str]) -> Any:
    """An API whose handler asks for flags (twice for one of them)."""

    def items(request: Request) -> JSONResponse:
        org = request.headers.get("x-org")
        user = request.headers.get("x-user")
        if user:
            request.state.user = {"id": user, "organisation_id": org}
        first = apiusage.flag("new-pagination")
        again = apiusage.flag("new-pagination")  # the same answer, from the request
        calls.append(f"{first}/{again}")
        return JSONResponse({"pagination": first, "widgets": apiusage.flag("widgets-v3")})

    app = Starlette(routes=[Route("/v1/items", items)])
    return apiusage.ASGIMiddleware(app, client=client)


def send(app: Any, *headers: dict[str, str]) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [(await http.get("/v1/items", headers=sent)).json() for sent in headers]

    return anyio.run(run)


def caller(user: str, org: str) -> dict[str, str]:
    return {"x-user": user, "x-org": org}


# ------------------------------------------------------------------ apiusage's own flags
def test_local_rollouts_agree_with_posthogs_own_evaluation(
    posthog_flags: CaptureServer,
) -> None:
    """Who is in a rollout is PostHog's hash: the same organisations get the same answers
    here, offline, as PostHog's local evaluation gives them (``get_all_flags``: the
    client's evaluator in every supported ``posthog`` version, and it sends nothing)."""
    from posthog import Posthog

    posthog = Posthog(
        "phc_test",
        host=posthog_flags.url,
        secret_key=posthog_flags.flags_key,
        send=False,
    )
    posthog.load_feature_flags()
    try:
        local = {key: parse_flag(key, FLAGS[key]) for key in ("new-pagination", "widgets-v3")}
        ours, theirs = {}, {}
        for org in ORGANISATIONS:
            identity = apiusage.Identity(f"usr_{org}", organisation=org)
            answers = posthog.get_all_flags(
                identity.distinct_id, groups={"organisation": org}, only_evaluate_locally=True
            )
            for key, flag in local.items():
                ours[org, key] = flag.evaluate(identity)
                theirs[org, key] = (answers or {}).get(key)
    finally:
        posthog.shutdown()
    assert ours == theirs
    enabled = sum(1 for org in ORGANISATIONS if ours[org, "new-pagination"])
    assert 40 <= enabled <= 80  # about 20 % of 300
    variants = {ours[org, "widgets-v3"] for org in ORGANISATIONS}
    assert variants == {"control", "v3"}


def test_answers_are_the_same_in_every_process() -> None:
    script = (
        "import apiusage, json;"
        "from apiusage.feature_flags.local import parse_flag;"
        "flag = parse_flag('new-pagination', {'rollout': 20, 'by': 'organisation'});"
        f"print(json.dumps([flag.evaluate(apiusage.Identity('u', organisation=o)) "
        f"for o in {ORGANISATIONS!r}]))"
    )
    here = parse_flag("new-pagination", FLAGS["new-pagination"])
    expected = [here.evaluate(apiusage.Identity("u", organisation=org)) for org in ORGANISATIONS]
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == str(expected).replace("True", "true").replace("False", "false")


def test_a_flag_is_evaluated_once_per_request_and_recorded_on_its_event() -> None:
    sink = MemorySink()
    client = UsageClient(sink=sink, identity_secret=IDENTITY_SECRET, flags=FLAGS)
    calls: list[str] = []
    org_in = next(
        org
        for org in ORGANISATIONS
        if parse_flag("new-pagination", FLAGS["new-pagination"]).evaluate(
            apiusage.Identity("x", organisation=org)
        )
    )
    replies = send(
        flags_app(client, calls),
        caller("usr_1", org_in),
        caller("usr_1", org_in),  # again: no second exposure event
        caller("usr_2", "org_0"),
        {},  # anonymous: rollouts by organisation have no organisation to bucket
    )
    assert client.flush(10)
    client.close(5)

    assert [reply["pagination"] for reply in replies] == [True, True, False, False]
    assert calls == ["True/True", "True/True", "False/False", "False/False"]
    requests = sink.named("api_request")
    first = requests[0].properties
    assert first["$feature/new-pagination"] is True
    assert first["$feature/widgets-v3"] in ("control", "v3")
    assert first["$active_feature_flags"] == ["new-pagination", "widgets-v3"]
    assert requests[3].properties["$feature/new-pagination"] is False
    exposures = [
        (e.distinct_id, e.properties["$feature_flag"], e.properties["$feature_flag_response"])
        for e in sink.named("$feature_flag_called")
    ]
    assert sorted(exposures) == sorted(
        [
            ("usr_1", "new-pagination", True),
            ("usr_1", "widgets-v3", first["$feature/widgets-v3"]),
            ("usr_2", "new-pagination", False),
            ("usr_2", "widgets-v3", requests[2].properties["$feature/widgets-v3"]),
        ]
    )  # once per caller, flag and answer; none for the anonymous request
    exposure = sink.named("$feature_flag_called")[0]
    assert exposure.groups == {"organisation": org_in}


def test_named_callers_and_fixed_answers() -> None:
    client = UsageClient(sink=MemorySink(), identity_secret=IDENTITY_SECRET, flags=FLAGS)
    try:
        assert client.flags.evaluate(["beta"], apiusage.Identity("usr_vip")) == {"beta": True}
        assert client.flags.evaluate(["beta"], apiusage.Identity("usr_x")) == {"beta": False}
        assert client.flags.evaluate(["kill-switch"], None) == {"kill-switch": False}
    finally:
        client.close(5)


def test_outside_a_request_the_caller_is_named(tmp_path: Any) -> None:
    """A worker or a script names the caller; the process's client answers (a process of
    its own, so that its client is the default one)."""
    script = f"""
import apiusage
client = apiusage.use_client(identity_secret={IDENTITY_SECRET!r}, flags={FLAGS!r}, sink=None)
apiusage.ASGIMiddleware(lambda scope, receive, send: None, client=client)
print(apiusage.flag("beta", distinct_id="usr_vip"), apiusage.flag("beta", distinct_id="usr_x"),
      apiusage.flags(distinct_id="usr_vip")["beta"], apiusage.flag("beta", "none"))
"""
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert output.split() == ["True", "False", "True", "False"]  # no caller: not in the list


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"rollout": 120}, "rollout is a share from 0 to 100"),
        ({"variants": {"a": 50, "b": 40}}, "must add up to 100, not 90"),
        ({"rolout": 10}, "unknown field(s) rolout"),
        ({"callers": {"usr_1": "c"}, "variants": {"a": 50, "b": 50}}, "answers 'c'"),
        ({"by": "team"}, "by is 'caller' or 'organisation'"),
        (3, "a definition is true, false, a variant name or a mapping"),
    ],
)
def test_bad_definitions_fail_at_start_up(definition: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=r"flags: flag 'broken'") as raised:
        UsageClient(
            sink=MemorySink(), identity_secret=IDENTITY_SECRET, flags={"broken": definition}
        )
    assert message in str(raised.value)


def test_a_flags_file_is_read_and_the_setting_wins(tmp_path: Any) -> None:
    path = tmp_path / "flags.json"
    path.write_text('{"beta": true, "new-pagination": {"rollout": 0}}')
    client = UsageClient(
        sink=MemorySink(), identity_secret=IDENTITY_SECRET, flags_file=path, flags={"beta": False}
    )
    try:
        answers = client.flags.evaluate(None, apiusage.Identity("usr_1", organisation="o"))
        assert answers == {"beta": False, "new-pagination": False}
    finally:
        client.close(5)
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="flags_file"):
        UsageClient(sink=MemorySink(), identity_secret=IDENTITY_SECRET, flags_file=path)


def test_an_unknown_flag_answers_the_default_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = MemorySink()
    client = UsageClient(sink=sink, identity_secret=IDENTITY_SECRET, flags=FLAGS)

    def handler(request: Request) -> JSONResponse:
        request.state.user = "usr_1"
        return JSONResponse([apiusage.flag("no-such-flag", "fallback") for _ in range(3)])

    app = apiusage.ASGIMiddleware(Starlette(routes=[Route("/v1/items", handler)]), client=client)
    with caplog.at_level(logging.WARNING, logger="apiusage"):
        replies = send(app, {}, {})
    assert client.flush(10)
    client.close(5)
    assert replies == [["fallback"] * 3] * 2
    warnings = [r.getMessage() for r in caplog.records if "no-such-flag" in r.getMessage()]
    assert len(warnings) == 1
    assert "the default 'fallback' applies" in warnings[0]
    # A default is not an answer: nothing is recorded for it.
    assert all(
        "$feature/no-such-flag" not in event.properties for event in sink.named("api_request")
    )


def test_force_flags_answers_every_caller_and_is_recorded() -> None:
    sink = MemorySink()
    client = UsageClient(sink=sink, identity_secret=IDENTITY_SECRET, flags=FLAGS)
    with force_flags({"new-pagination": True, "widgets-v3": "v3"}):
        replies = send(flags_app(client, []), caller("usr_9", "org_0"), {})
    after = send(flags_app(client, []), caller("usr_9", "org_0"))
    assert client.flush(10)
    client.close(5)
    assert replies == [{"pagination": True, "widgets": "v3"}] * 2
    assert after == [{"pagination": False, "widgets": after[0]["widgets"]}]
    assert sink.named("api_request")[0].properties["$feature/widgets-v3"] == "v3"


# ---------------------------------------------------------------------- PostHog's flags
def posthog_client_settings(server: CaptureServer, **extra: Any) -> dict[str, Any]:
    return {
        "posthog_api_key": "phc_test",
        "posthog_host": server.url,
        "posthog_flags_api_key": server.flags_key,
        "identity_secret": IDENTITY_SECRET,
        "spool": "off",
        **extra,
    }


def wait_until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_posthog_flags_are_evaluated_locally_and_refreshed_while_serving(
    posthog_flags: CaptureServer,
) -> None:
    client = UsageClient(**posthog_client_settings(posthog_flags, flag_poll_interval=0.2))
    remote = client.flags.remote
    assert remote is not None
    wait_until(lambda: remote.ready)
    local = parse_flag("new-pagination", FLAGS["new-pagination"])
    org_in = next(
        o for o in ORGANISATIONS if local.evaluate(apiusage.Identity("x", organisation=o))
    )
    org_out = next(
        o for o in ORGANISATIONS if not local.evaluate(apiusage.Identity("x", organisation=o))
    )
    calls: list[str] = []
    app = flags_app(client, calls)
    try:
        served = send(app, caller("usr_1", org_in), caller("usr_2", org_out))
        assert [reply["pagination"] for reply in served] == [True, False]

        posthog_flags.flag_definitions = posthog_definitions(rollout=100)  # rolled out to all
        wait_until(lambda: send(app, caller("usr_2", org_out))[0]["pagination"] is True)
        assert client.flush(10)
    finally:
        client.close(5)

    events = [e for e in posthog_flags.events() if e["event"] == "api_request"]
    assert events[0]["properties"]["$feature/new-pagination"] is True
    assert events[1]["properties"]["$feature/new-pagination"] is False
    assert events[-1]["properties"]["$feature/new-pagination"] is True
    exposures = {
        (e["distinct_id"], e["properties"]["$feature_flag_response"])
        for e in posthog_flags.events()
        if e["event"] == "$feature_flag_called"
        and e["properties"]["$feature_flag"] == "new-pagination"
    }
    assert exposures == {("usr_1", True), ("usr_2", False), ("usr_2", True)}
    fetches = [r for r in posthog_flags.requests if r.path.startswith("/flags/definitions")]
    assert len(fetches) >= 2  # polled while serving


def test_posthog_down_at_start_up_answers_defaults_without_stalling(
    posthog_flags: CaptureServer, caplog: pytest.LogCaptureFixture
) -> None:
    posthog_flags.flag_definitions = None  # 503
    client = UsageClient(**posthog_client_settings(posthog_flags, flag_poll_interval=0.2))
    app = flags_app(client, [])
    try:
        with caplog.at_level(logging.WARNING, logger="apiusage"):
            started = time.perf_counter()
            replies = send(app, *[caller("usr_1", "org_1")] * 20)
            elapsed = time.perf_counter() - started
        assert replies == [{"pagination": False, "widgets": False}] * 20
        assert elapsed < 2.0  # no request waited for PostHog
        assert "definitions have not arrived yet" in caplog.text

        posthog_flags.flag_definitions = posthog_definitions(rollout=100)  # back
        assert client.flags.remote is not None
        wait_until(lambda: send(app, caller("usr_1", "org_1"))[0]["pagination"] is True)
    finally:
        client.close(5)


# ------------------------------------------------------------------ framework idioms
def current_user(request: Request) -> str:
    """An app's own auth dependency (FastAPI resolves these annotations from the module)."""
    request.state.user = {"id": "usr_vip", "organisation_id": "org_1"}
    return "usr_vip"


def test_fastapi_flag_dependency_and_the_flags_header() -> None:
    sink = MemorySink()
    app = FastAPI()

    @app.get("/v1/items")
    def items(
        user: Annotated[str, Depends(current_user)],
        beta: Annotated[bool, Flag("beta")],
        kill: Annotated[bool, Flag("kill-switch", True)],
    ) -> dict[str, bool]:
        return {"beta": beta, "kill": kill}

    FastApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET, flags=FLAGS, flags_header=True)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get("/v1/items")

    response = anyio.run(run)
    assert response.json() == {"beta": True, "kill": False}
    assert response.headers["x-feature-flags"] == "beta=true, kill-switch=false"
    assert app._apiusage.client.flush(10)  # type: ignore[attr-defined]
    (event,) = sink.named("api_request")
    assert event.properties["$active_feature_flags"] == ["beta"]


def test_flask_views_and_the_flags_header() -> None:
    from flask import Flask, g
    from werkzeug.test import Client

    from flask_apiusage import ApiUsage

    sink = MemorySink()
    app = Flask(__name__)

    @app.get("/v1/items")
    def items() -> dict[str, Any]:
        g.user = {"id": "usr_vip"}
        return {"beta": apiusage.flag("beta")}

    ApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET, flags=FLAGS, flags_header=True)
    response = Client(app).get("/v1/items", buffered=True)
    assert response.json == {"beta": True}
    assert response.headers["X-Feature-Flags"] == "beta=true"
    assert ApiUsage.client_for(app).flush(10)
    assert sink.named("api_request")[0].properties["$feature/beta"] is True


def test_without_the_setting_no_header_is_added() -> None:
    client = UsageClient(sink=MemorySink(), identity_secret=IDENTITY_SECRET, flags=FLAGS)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=flags_app(client, []))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get("/v1/items", headers=caller("usr_1", "org_1"))

    try:
        assert "x-feature-flags" not in anyio.run(run).headers
    finally:
        client.close(5)


def mixed_definitions() -> dict[str, Any]:
    """Plain rollouts (apiusage evaluates them) and flags only the client can evaluate."""
    base = posthog_definitions()
    base["flags"] += [
        {  # by person, 35 %
            "id": 3,
            "key": "person-rollout",
            "active": True,
            "filters": {"groups": [{"properties": [], "rollout_percentage": 35}]},
        },
        {  # every one (no rollout given)
            "id": 4,
            "key": "everyone",
            "active": True,
            "filters": {"groups": [{"properties": []}]},
        },
        {"id": 5, "key": "switched-off", "active": False, "filters": {"groups": []}},
        {  # a person-property condition: the client's evaluator
            "id": 6,
            "key": "pro-plan",
            "active": True,
            "filters": {
                "groups": [
                    {
                        "properties": [
                            {"key": "plan", "value": ["pro"], "operator": "exact", "type": "person"}
                        ],
                        "rollout_percentage": 100,
                    }
                ]
            },
        },
        {  # two conditions: the client's evaluator
            "id": 7,
            "key": "two-conditions",
            "active": True,
            "filters": {
                "groups": [
                    {"properties": [], "rollout_percentage": 10},
                    {"properties": [], "rollout_percentage": 40},
                ]
            },
        },
    ]
    return base


def test_posthogs_plain_rollouts_evaluated_by_apiusage_agree_with_the_client(
    posthog_flags: CaptureServer,
) -> None:
    from posthog import Posthog

    from apiusage.feature_flags.posthog import PostHogFlags, plain_rollout
    from apiusage.health import Stats

    posthog_flags.flag_definitions = mixed_definitions()
    posthog = Posthog(
        "phc_test", host=posthog_flags.url, secret_key=posthog_flags.flags_key, send=False
    )
    posthog.load_feature_flags()
    flags = PostHogFlags(posthog, "organisation", Stats(), owned=True)
    try:
        mapping = {"0": "organisation"}
        plain = {
            d["key"]
            for d in mixed_definitions()["flags"]
            if plain_rollout(d, mapping, "organisation")
        }
        assert plain == {
            "new-pagination",
            "widgets-v3",
            "person-rollout",
            "everyone",
            "switched-off",
        }
        for number in range(200):
            identity = apiusage.Identity(
                f"usr_{number}",
                organisation=f"org_{number % 40}",
                person_properties={"plan": "pro" if number % 3 == 0 else "free"},
            )
            theirs = posthog.get_all_flags(
                identity.distinct_id,
                groups={"organisation": identity.organisation},
                person_properties=dict(identity.person_properties),
                only_evaluate_locally=True,
            )
            assert flags.evaluate(None, identity) == theirs
            for key in theirs:  # one at a time, as apiusage.flag() asks
                assert flags.evaluate([key], identity) == {key: theirs[key]}
    finally:
        flags.close()
        posthog.shutdown()


def test_a_handed_in_posthog_client_with_a_secret_key_turns_flags_on(
    posthog_flags: CaptureServer,
) -> None:
    from posthog import Posthog

    posthog = Posthog(
        "phc_test", host=posthog_flags.url, secret_key=posthog_flags.flags_key, send=False
    )
    client = UsageClient(posthog_client=posthog, identity_secret=IDENTITY_SECRET, spool="off")
    try:
        remote = client.flags.remote
        assert remote is not None
        wait_until(lambda: remote.ready)
        org_in = next(
            org
            for org in ORGANISATIONS
            if parse_flag("new-pagination", FLAGS["new-pagination"]).evaluate(
                apiusage.Identity("x", organisation=org)
            )
        )
        identity = apiusage.Identity("usr_1", organisation=org_in)
        assert client.flags.evaluate(["new-pagination"], identity) == {"new-pagination": True}
    finally:
        client.close(5)
    assert posthog.poller is not None
    assert posthog.poller.is_alive()
    posthog.shutdown()


def test_malformed_posthog_definitions_answer_defaults_and_never_raise(
    posthog_flags: CaptureServer, caplog: pytest.LogCaptureFixture
) -> None:
    definitions = posthog_definitions()
    definitions["flags"] += [
        {"id": 8, "key": "garbled", "active": True, "filters": {"groups": "nonsense"}},
        {
            "id": 9,
            "key": "unknown-operator",
            "active": True,
            "filters": {
                "groups": [
                    {
                        "properties": [
                            {"key": "plan", "value": "x", "operator": "bogus", "type": "person"}
                        ],
                        "rollout_percentage": 100,
                    }
                ]
            },
        },
        {"id": 10, "key": "no-filters", "active": True},
        {"key": None, "active": True, "filters": {}},
    ]
    posthog_flags.flag_definitions = definitions
    client = UsageClient(**posthog_client_settings(posthog_flags))
    remote = client.flags.remote
    assert remote is not None
    wait_until(lambda: remote.ready)

    def handler(request: Request) -> JSONResponse:
        request.state.user = {"id": "usr_1", "organisation_id": "org_1"}
        keys = ["garbled", "unknown-operator", "no-filters", "new-pagination"]
        return JSONResponse({key: apiusage.flag(key, "default") for key in keys})

    app = apiusage.ASGIMiddleware(Starlette(routes=[Route("/v1/items", handler)]), client=client)
    try:
        with caplog.at_level(logging.WARNING, logger="apiusage"):
            (reply,) = send(app, {})
    finally:
        client.close(5)
    assert reply["garbled"] == "default"
    assert reply["unknown-operator"] == "default"
    assert reply["new-pagination"] in (True, False)  # the good flags still answer
    assert "'garbled' has no answer" in caplog.text


def test_a_changed_flags_file_is_read_again_and_a_broken_one_keeps_the_last(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Ops roll a flag out by editing the file: no restart."""
    import os

    import apiusage.feature_flags

    monkeypatch.setattr(apiusage.feature_flags, "FILE_CHECK_EVERY", 0.0)
    path = tmp_path / "flags.json"
    path.write_text('{"widgets-v3": {"rollout": 0}}')
    client = UsageClient(sink=MemorySink(), identity_secret=IDENTITY_SECRET, flags_file=path)
    caller = apiusage.Identity("usr_1", organisation="org_1")

    def rewrite(text: str, seconds_later: int) -> None:
        path.write_text(text)
        stamp = os.stat(path).st_mtime + seconds_later
        os.utime(path, (stamp, stamp))

    try:
        assert client.flags.evaluate(["widgets-v3"], caller) == {"widgets-v3": False}
        rewrite('{"widgets-v3": {"rollout": 100}}', 1)
        assert client.flags.evaluate(["widgets-v3"], caller) == {"widgets-v3": True}
        with caplog.at_level(logging.WARNING, logger="apiusage"):
            rewrite('{"widgets-v3": {"rollout": 150}}', 2)
            assert client.flags.evaluate(["widgets-v3"], caller) == {"widgets-v3": True}
        assert "rollout is a share from 0 to 100" in caplog.text
        assert "keep their last good definitions" in caplog.text
        path.unlink()  # gone: the last definitions stand
        assert client.flags.evaluate(["widgets-v3"], caller) == {"widgets-v3": True}
    finally:
        client.close(5)
