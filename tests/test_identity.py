"""Who made a request: built-in resolvers, keyed API-key identities, identify() and groups."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

import apiusage
import apiusage.registry
from apiusage import ASGIMiddleware, Identity, KeyedHasher, from_header, from_state
from apiusage.attached import CallerNotRead
from apiusage.record import RequestRecord
from apiusage.request_view import RequestView
from apiusage.sinks.memory import MemorySink
from tests.conftest import MakeClient
from tests.support.apps import BASIC, JWT, asgi_client, starlette_app

pytestmark = pytest.mark.anyio

KEY_ID = re.compile(r"key_[0-9a-f]{32}")
SECRET_A = "identity-secret-aaaaaaaaaaaaaaaa"
SECRET_B = "identity-secret-bbbbbbbbbbbbbbbb"


def state_view(
    state: Any = None, *, user: Any = None, headers: dict[str, str] | None = None
) -> RequestView:
    scope: dict[str, Any] = {"type": "http", "path": "/", "headers": []}
    if state is not None:
        scope["state"] = state
    if user is not None:
        scope["user"] = user
    raw = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    scope["headers"] = raw
    record = RequestRecord(
        transport="asgi", method="GET", path="/", query_string=b"", raw_headers=raw, scope=scope
    )
    return RequestView(record)


class User:
    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


# ------------------------------------------------------------------------ from_state
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (User(id=7, org_id="acme"), Identity("7", organisation="acme")),
        (User(pk="u-1", organization_id=12), Identity("u-1", organisation="12")),
        (
            User(id="u-2", organisation=User(id="org-9", name="Nine")),
            Identity("u-2", organisation="org-9"),
        ),
        (User(username="ann", team_id="t-1"), Identity("ann", organisation="t-1")),
        (User(id="u-3"), Identity("u-3")),
        ({"id": "u-4", "tenant_id": "t-4"}, Identity("u-4", organisation="t-4")),
        ({"email": "e@example.com"}, Identity("e@example.com")),
        ("u-5", Identity("u-5")),
        (42, Identity("42")),
        (Identity("u-6", organisation="o-6"), Identity("u-6", organisation="o-6")),
        (User(id="u-7", is_authenticated=True), Identity("u-7")),
        (User(id="anon", is_authenticated=False), None),  # anonymous users give no identity
        ("", None),
        (None, None),
        # Something attached that names no caller: an error the chain reports (counted,
        # and a warning that names the fix), never a silent anonymous request.
        (User(name="no id"), CallerNotRead),
        ({"id": ""}, CallerNotRead),
        (True, CallerNotRead),
    ],
)
def test_from_state(value: Any, expected: Identity | type[Exception] | None) -> None:
    for state in ({"user": value}, SimpleNamespace(user=value)):
        if expected is CallerNotRead:
            with pytest.raises(CallerNotRead, match="none of the fields id, pk"):
                from_state()(state_view(state))
        else:
            assert from_state()(state_view(state)) == expected


def test_from_state_attribute_scope_user_and_truncation() -> None:
    assert from_state("account")(state_view({"account": User(id="acc-1")})) == Identity("acc-1")
    assert from_state("account")(state_view({"user": User(id="acc-1")})) is None
    # Starlette's AuthenticationMiddleware puts the user in scope["user"].
    assert from_state()(state_view(user=SimpleUser("sam"))) == Identity("sam")
    assert from_state()(state_view(user=User(id="x", is_authenticated=False))) is None
    [long_id] = [from_state()(state_view({"user": "x" * 1000}))]
    assert long_id is not None
    assert len(long_id.distinct_id) == 200


def test_from_state_reads_every_kind_of_request_state() -> None:
    """Dicts, attribute objects, mapping-like objects (Flask's ``g``) and ``__getattr__``
    namespaces (Starlette's ``State``) all give the caller, and a miss gives None."""
    from flask import Flask, g
    from starlette.datastructures import State

    class Attributes:
        user = None  # a class attribute, shadowed by the instance's

    attributes = Attributes()
    attributes.user = User(id="attr")
    assert from_state()(state_view(attributes)) == Identity("attr")
    assert from_state()(state_view(State({"user": User(id="state")}))) == Identity("state")
    assert from_state()(state_view(State({}))) is None
    assert from_state()(state_view(Attributes())) is None
    app = Flask(__name__)
    with app.app_context():
        assert from_state()(state_view(g._get_current_object())) is None
        g.user = User(id="in-g", org_id="acme")
        g._login_user = User(id="login")
        state = g._get_current_object()
        assert from_state()(state_view(state)) == Identity("in-g", organisation="acme")
        assert from_state("_login_user")(state_view(state)) == Identity("login")


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-login")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None


async def test_starlette_authentication_user_is_the_caller(
    recording: tuple[apiusage.UsageClient, MemorySink],
) -> None:
    client, sink = recording
    app = starlette_app()
    app.user_middleware.insert(0, Middleware(AuthenticationMiddleware, backend=HeaderAuth()))
    async with asgi_client(ASGIMiddleware(app, client=client)) as http:
        await http.get("/things", headers={"X-Login": "sam"})
        await http.get("/things")  # UnauthenticatedUser: anonymous
        await http.get("/login?user=u-1&org=o-1", headers={"X-Login": "sam"})  # state wins
    assert client.flush()
    events = sink.named("api_request")
    assert events[0].distinct_id == "sam"
    assert events[1].personless
    assert events[1].distinct_id == events[1].uuid
    assert (events[2].distinct_id, events[2].groups) == ("u-1", {"organisation": "o-1"})


# ----------------------------------------------------------------------- from_header
def test_from_header() -> None:
    resolver = from_header("X-Caller", organisation_header="X-Org")
    assert resolver(state_view(headers={"X-Caller": "gw-user", "X-Org": "gw-org"})) == Identity(
        "gw-user", organisation="gw-org"
    )
    assert resolver(state_view(headers={"x-caller": "only-user"})) == Identity("only-user")
    assert resolver(state_view(headers={"X-Org": "gw-org"})) is None
    assert resolver(state_view(headers={"X-Caller": ""})) is None


async def test_caller_header_setting(make_client: MakeClient) -> None:
    client, sink = make_client(caller_header="X-Gateway-User")
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        await http.get("/things", headers={"X-Gateway-User": "gw-1", "X-API-Key": "also-a-key"})
    assert client.flush()
    [event] = sink.named("api_request")
    assert event.distinct_id == "gw-1"  # the header resolver runs before the API-key hash


# ---------------------------------------------------------------------- from_api_key
CREDENTIALS = [
    ({"X-API-Key": "sk_live_TOPSECRET_1"}, "", "sk_live_TOPSECRET_1"),
    ({"Authorization": "Bearer opaque_TOPSECRET_2"}, "", "opaque_TOPSECRET_2"),
    ({"Authorization": "Token tok_TOPSECRET_3"}, "", "tok_TOPSECRET_3"),
    ({}, "api_key=q_TOPSECRET_4", "q_TOPSECRET_4"),
    ({"Authorization": BASIC}, "", "alice"),
]


async def _key_ids(make_client: MakeClient, secret: str) -> tuple[list[str], str]:
    client, sink = make_client(identity_secret=secret)
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        for headers, query, _ in CREDENTIALS:
            await http.get(f"/things?{query}", headers=headers)
        await http.get("/track?n=1", headers={"X-API-Key": "sk_live_TOPSECRET_1"})
    assert client.flush()
    everything = json.dumps(
        [event.as_dict() for event in sink.events] + [asdict(g) for g in sink.groups]
    )
    return [event.distinct_id for event in sink.named("api_request")], everything


async def test_api_key_identity_is_keyed_stable_and_never_leaks(make_client: MakeClient) -> None:
    first, dump_first = await _key_ids(make_client, SECRET_A)
    again, _ = await _key_ids(make_client, SECRET_A)
    other, dump_other = await _key_ids(make_client, SECRET_B)

    assert all(KEY_ID.fullmatch(distinct_id) for distinct_id in first), first
    assert len(set(first[:5])) == 5  # different credentials, different callers
    assert first[5] == first[0]  # the same key twice: the same caller
    assert first == again  # same secret, another client: same identities
    assert not set(first) & set(other)  # another secret: unrelated identities
    for _, _, credential in CREDENTIALS:
        if credential != "alice":
            assert credential not in dump_first
            assert credential not in dump_other
    assert "TOPSECRET" not in dump_first + dump_other
    assert "s3cret" not in dump_first  # the basic-auth password


async def test_jwt_and_session_are_not_hashed_into_identities(make_client: MakeClient) -> None:
    client, sink = make_client()
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        await http.get("/things", headers={"Authorization": f"Bearer {JWT}"})
        await http.get("/things", headers={"Cookie": "sessionid=abc"})
    assert client.flush()
    events = sink.named("api_request")
    assert [(event.personless, event.properties["auth_method"]) for event in events] == [
        (True, "jwt"),
        (True, "session"),
    ]
    assert JWT not in json.dumps([event.as_dict() for event in events])


def test_keyed_hasher() -> None:
    hasher = KeyedHasher(b"0123456789abcdef")
    assert hasher("k") == hasher("k") != hasher("k2")
    assert KEY_ID.fullmatch(hasher("k"))
    assert hasher("k") != KeyedHasher(b"0123456789abcdeF")("k")
    with pytest.raises(ValueError, match="16 bytes"):
        KeyedHasher(b"short")


async def test_local_identity_secret_is_shared_by_clients_of_one_store() -> None:
    """Without identity_secret, clients using the same local store share a kept secret."""
    ids = []
    for _ in range(2):
        client = apiusage.UsageClient(sink=MemorySink())
        sink = client.sink
        assert isinstance(sink, MemorySink)
        try:
            async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
                await http.get("/things", headers={"X-API-Key": "local-key"})
            assert client.flush()
            ids.append(sink.events[0].distinct_id)
        finally:
            client.close()
    assert KEY_ID.fullmatch(ids[0])
    assert ids[0] == ids[1]


# ------------------------------------------------------------ identify() and groups
async def test_identify_group_updates_once_per_organisation(make_client: MakeClient) -> None:
    client, sink = make_client()
    calls = [
        ("alice", "acme", "pro"),  # new organisation: sent
        ("bob", "acme", "pro"),  # same properties: not again
        ("alice", "acme", None),  # no properties: nothing new
        ("carol", "acme", "enterprise"),  # changed: sent again
        ("dave", "globex", None),  # new organisation: sent, without properties
        ("erin", "globex", "free"),  # new properties: sent
        ("frank", None, "pro"),  # no organisation: no group
    ]
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        for user, org, plan in calls:
            query = (
                f"user={user}" + (f"&org={org}" if org else "") + (f"&plan={plan}" if plan else "")
            )
            assert (await http.get(f"/identify?{query}")).status_code == 200
    assert client.flush()
    assert [(g.group_type, g.group_key, g.properties) for g in sink.groups] == [
        ("organisation", "acme", {"plan": "pro"}),
        ("organisation", "acme", {"plan": "enterprise"}),
        ("organisation", "globex", {}),
        ("organisation", "globex", {"plan": "free"}),
    ]
    requests = sink.named("api_request")
    assert [event.distinct_id for event in requests] == [user for user, _, _ in calls]
    # Person properties go with a caller's first event, and again only when they change.
    assert [event.person_properties for event in requests[:3]] == [
        {"email": "alice@example.com"},
        {"email": "bob@example.com"},
        {},
    ]


async def test_identify_group_type_follows_settings(make_client: MakeClient) -> None:
    client, sink = make_client(organisation_group="company")
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        await http.get("/identify?user=u&org=c-1&plan=x")
    assert client.flush()
    assert [(g.group_type, g.group_key) for g in sink.groups] == [("company", "c-1")]
    assert sink.named("api_request")[0].groups == {"company": "c-1"}


def test_identify_outside_a_request(
    recording: tuple[apiusage.UsageClient, MemorySink], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sink = recording
    monkeypatch.setattr(apiusage.registry, "default_client", lambda: client)
    apiusage.identify(5, organisation="acme", organisation_properties={"plan": "pro"}, name="Five")
    apiusage.identify(5, organisation="acme", organisation_properties={"plan": "pro"}, name="Five")
    assert client.flush()
    assert [(g.group_key, g.properties) for g in sink.groups] == [("acme", {"plan": "pro"})]
    events = sink.named("$set")
    assert len(events) == 2  # an explicit identify() always updates the person
    assert events[0].distinct_id == "5"
    assert events[0].person_properties == {"name": "Five"}
    assert events[0].groups == {"organisation": "acme"}


async def test_resolver_returning_a_wrong_type_is_an_error_not_a_crash(
    make_client: MakeClient,
) -> None:
    client, sink = make_client(identify=[lambda view: {"id": "dict"}, lambda view: "second"])
    async with asgi_client(ASGIMiddleware(starlette_app(), client=client)) as http:
        assert (await http.get("/things")).status_code == 200
    assert client.flush()
    assert sink.named("api_request")[0].distinct_id == "second"
    assert client.stats.snapshot()["resolver_errors"] == 1


def test_identity_needs_a_distinct_id() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Identity("")
