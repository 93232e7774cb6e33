"""Callers in apps shaped like real ones, each following its framework's own tutorials.

- FastAPI + SQLAlchemy + JWT: a ``yield`` session dependency, ``get_current_user``
  returning the ORM user and attaching it as ``request.state.user``; the handler commits
  (which expires the user) and the session is closed before apiusage finishes.
- Flask's flaskr tutorial: ``g.user`` is a ``sqlite3.Row`` loaded from the session cookie,
  and the database connection is closed at teardown.

Every event must name its caller; nothing may be silently anonymous.
"""

# No `from __future__ import annotations`: FastAPI reads the local dependencies' annotations.

import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from flask import Flask, g, session
from sqlalchemy import ForeignKey, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.orm.exc import DetachedInstanceError
from sqlalchemy.pool import StaticPool
from werkzeug.test import Client

import apiusage
from apiusage.sinks.memory import MemorySink
from fastapi_apiusage import ApiUsage as FastApiUsage
from flask_apiusage import ApiUsage as FlaskApiUsage
from tests.adapters.drivers import IDENTITY_SECRET

SECRET = "jwt-secret-for-tests-only-0123456789"


def serve(app: Any, *requests: tuple[str, str, dict[str, str]], root_path: str = "") -> list[int]:
    """Each request through the ASGI app in turn (the app runs to its end before the
    next): their statuses."""

    async def send_all() -> list[int]:
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return [
                (await http.request(method, path, headers=headers)).status_code
                for method, path, headers in requests
            ]

    return anyio.run(send_all)


# ------------------------------------------------------------- FastAPI + SQLAlchemy + JWT
class Base(DeclarativeBase):
    pass


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    organization_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    requests: Mapped[int] = mapped_column(default=0)


def sqlalchemy_app(sink: MemorySink, **settings: Any) -> tuple[FastAPI, sessionmaker[Session]]:
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine)  # expire_on_commit=True, SQLAlchemy's default
    with sessions.begin() as db:
        db.add_all([Organisation(id=10, name="Acme"), Organisation(id=20, name="Globex")])
        db.add_all(
            [
                User(id=1, email="alice@acme.example", organization_id=10),
                User(id=2, email="bob@globex.example", organization_id=20),
            ]
        )

    app = FastAPI()

    def get_db() -> Iterator[Session]:
        with sessions() as db:
            yield db

    def get_current_user(request: Request, db: Annotated[Session, Depends(get_db)]) -> User:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            raise HTTPException(401, "Could not validate credentials") from None
        user = db.get(User, int(claims["sub"]))
        if user is None:
            raise HTTPException(401, "Could not validate credentials")
        request.state.user = user  # as apiusage's FastAPI page says
        return user

    @app.post("/api/v1/items")
    def create_item(
        db: Annotated[Session, Depends(get_db)],
        user: Annotated[User, Depends(get_current_user)],
    ) -> dict[str, int]:
        user.requests += 1
        db.commit()  # expires `user`: reading it after the session closes fails
        return {"ok": 1}

    @app.get("/api/v1/me")
    async def me(user: Annotated[User, Depends(get_current_user)]) -> dict[str, Any]:
        return {"id": user.id, "email": user.email}

    FastApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET, **settings)
    return app, sessions


def bearer(user_id: int) -> dict[str, str]:
    return {"authorization": "Bearer " + jwt.encode({"sub": str(user_id)}, SECRET)}


def test_fastapi_sqlalchemy_jwt_callers_survive_commit_and_session_close() -> None:
    sink = MemorySink()
    app, _ = sqlalchemy_app(sink)
    statuses = serve(
        app,
        ("POST", "/api/v1/items", bearer(1)),
        ("POST", "/api/v1/items", bearer(2)),
        ("GET", "/api/v1/me", bearer(1)),
        ("POST", "/api/v1/items", bearer(1)),
        ("POST", "/api/v1/items", {"authorization": "Bearer not.a.jwt"}),
    )
    assert statuses == [200, 200, 200, 200, 401]
    usage = app._apiusage.client
    assert usage.flush(10)

    events = sink.named("api_request")
    assert [(e.distinct_id, e.groups) for e in events[:4]] == [
        ("1", {"organisation": "10"}),
        ("2", {"organisation": "20"}),
        ("1", {"organisation": "10"}),
        ("1", {"organisation": "10"}),
    ]
    refused = events[4]
    assert refused.personless
    assert refused.properties["auth_failed"] is True
    assert refused.properties["auth_method"] == "bearer"  # "not.a.jwt" is no JWT
    stats = usage.stats.snapshot()
    assert (stats["resolver_errors"], stats["callers_unresolved"]) == (0, 0)


def test_the_expired_orm_user_cannot_be_read_after_the_request() -> None:
    """Why the caller is read when it is attached: afterwards, the same object fails."""
    sink = MemorySink()
    app, _ = sqlalchemy_app(sink)
    seen: list[User] = []

    @app.middleware("http")
    async def remember_user(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        user = getattr(request.state, "user", None)
        if user is not None:
            seen.append(user)
        return response

    assert serve(app, ("POST", "/api/v1/items", bearer(1))) == [200]
    assert app._apiusage.client.flush(10)
    (user,) = seen
    with pytest.raises(DetachedInstanceError):
        _ = user.id
    assert sink.named("api_request")[0].distinct_id == "1"


def test_a_resolver_that_reads_the_orm_user_late_warns_with_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A resolver of the user's own reading the expired user after the response: the
    error is counted and logged once, saying what to do instead."""
    sink = MemorySink()
    app, _ = sqlalchemy_app(sink, identify=lambda view: str(view.state["user"].id))
    with caplog.at_level(logging.ERROR, logger="apiusage"):
        assert serve(app, *[("POST", "/api/v1/items", bearer(1))] * 3) == [200] * 3
        client = app._apiusage.client
        assert client.flush(10)

    logged = [r for r in caplog.records if "DetachedInstanceError" in r.getMessage()]
    assert len(logged) == 1  # rate-limited
    assert "apiusage.identify(" in logged[0].getMessage()
    assert "request.state.user = user" in logged[0].getMessage()
    assert client.stats.snapshot()["resolver_errors"] == 3
    # The built-in resolver still read the caller as it was attached.
    assert [event.distinct_id for event in sink.named("api_request")] == ["1", "1", "1"]


# ------------------------------------------------------------- attached values of every kind
@dataclass
class Account:
    account_id: str
    id: str


class Claims(dict[str, Any]):
    """A JWT's claims, as many apps attach them."""


def kinds_app(sink: MemorySink) -> FastAPI:
    from pydantic import BaseModel

    class PydanticUser(BaseModel):
        id: int
        org_id: str

    row_db = sqlite3.connect(":memory:", check_same_thread=False)
    row_db.row_factory = sqlite3.Row
    row_db.execute("CREATE TABLE user (id INTEGER, tenant_id TEXT)")
    row_db.execute("INSERT INTO user VALUES (5, 't-5')")
    attached = {
        "dataclass": lambda: Account(account_id="acc-1", id="u-dc"),
        "pydantic": lambda: PydanticUser(id=7, org_id="o-7"),
        "mapping": lambda: {"id": "u-map", "organisation_id": "o-map"},
        "claims": lambda: Claims(sub="u-jwt", org_id="o-jwt", exp=1),
        "row": lambda: row_db.execute("SELECT * FROM user").fetchone(),
        "plain-id": lambda: 99,
        "identity": lambda: apiusage.Identity("u-ident", organisation="o-ident"),
        "unrecognised": lambda: object(),
    }
    app = FastAPI()

    @app.get("/kinds/{kind}")
    def attach(kind: str, request: Request) -> dict[str, str]:
        request.state.user = attached[kind]()
        return {"kind": kind}

    FastApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    return app


def test_every_kind_of_attached_user_names_its_caller(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    app = kinds_app(sink)
    kinds = ["dataclass", "pydantic", "mapping", "claims", "row", "plain-id", "identity"]
    with caplog.at_level(logging.WARNING, logger="apiusage"):
        paths = [("GET", f"/kinds/{kind}", {}) for kind in [*kinds, *["unrecognised"] * 2]]
        assert serve(app, *paths) == [200] * len(paths)
        client = app._apiusage.client
        assert client.flush(10)

    callers = [(e.distinct_id, e.groups.get("organisation")) for e in sink.named("api_request")]
    assert callers[: len(kinds)] == [
        ("u-dc", "acc-1"),
        ("7", "o-7"),
        ("u-map", "o-map"),
        ("u-jwt", "o-jwt"),
        ("5", "t-5"),
        ("99", None),
        ("u-ident", "o-ident"),
    ]
    unrecognised = sink.named("api_request")[len(kinds) :]
    assert all(event.personless for event in unrecognised)
    # Counted each time, said once, naming what was seen and the fix.
    assert client.stats.snapshot()["callers_unresolved"] == 2
    (warning,) = [r for r in caplog.records if "callers_unresolved" in r.getMessage()]
    message = warning.getMessage()
    assert "the attached object has none of the fields id, pk" in message
    assert "apiusage.identify(" in message
    assert "apiusage.Identity" in message


# ------------------------------------------------------------------------ Flask's flaskr
def flaskr_app(sink: MemorySink, database: Path) -> Flask:
    """The flaskr tutorial's shape: g.db per request, g.user a sqlite3.Row."""
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE user (id INTEGER PRIMARY KEY, username TEXT)")
        db.execute("INSERT INTO user VALUES (1, 'alice'), (2, 'bob')")

    app = Flask(__name__)
    app.config.update(SECRET_KEY="dev", DATABASE=database)

    def get_db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = sqlite3.connect(app.config["DATABASE"])
            g.db.row_factory = sqlite3.Row
        return g.db  # type: ignore[no-any-return]

    @app.teardown_appcontext
    def close_db(exc: BaseException | None = None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.before_request
    def load_logged_in_user() -> None:
        user_id = session.get("user_id")
        g.user = (
            None
            if user_id is None
            else get_db().execute("SELECT * FROM user WHERE id = ?", (user_id,)).fetchone()
        )

    @app.post("/auth/login/<int:user_id>")
    def login(user_id: int) -> str:
        session.clear()
        session["user_id"] = user_id
        return "ok"

    @app.get("/")
    def index() -> dict[str, Any]:
        user = g.user
        return {"user": None if user is None else user["username"]}

    FlaskApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    return app


def test_flaskr_g_user_sqlite_row_names_the_caller(tmp_path: Path) -> None:
    sink = MemorySink()
    app = flaskr_app(sink, tmp_path / "flaskr.sqlite3")
    # Buffered: the response is closed at once, as a WSGI server closes it.
    alice, bob = Client(app), Client(app)
    assert alice.get("/", buffered=True).json == {"user": None}
    assert alice.post("/auth/login/1", buffered=True).status_code == 200
    assert bob.post("/auth/login/2", buffered=True).status_code == 200
    for _ in range(3):
        assert alice.get("/", buffered=True).json == {"user": "alice"}
        assert bob.get("/", buffered=True).json == {"user": "bob"}
    client = FlaskApiUsage.client_for(app)
    assert client.flush(10)

    events = sink.named("api_request")
    callers = [None if e.personless else e.distinct_id for e in events]
    # Anonymous before logging in; the login request itself ran before the session existed.
    assert callers == [None, None, None, *["1", "2"] * 3]
    assert client.stats.snapshot()["callers_unresolved"] == 0


# ------------------------------------------------------------------- what is not API traffic
def test_fastapi_prefixed_docs_health_checks_and_static_files_are_not_recorded(
    tmp_path: Path,
) -> None:
    from fastapi.staticfiles import StaticFiles

    (tmp_path / "logo.txt").write_text("logo")
    sink = MemorySink()
    app = FastAPI(
        openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs", redoc_url="/api/v1/redoc"
    )

    @app.get("/api/v1/utils/health-check/")
    def health_check() -> bool:
        return True

    @app.get("/api/v1/items")
    def items() -> list[int]:
        return [1]

    @app.get("/api/v1/healthy-items")  # only whole segments are names
    def healthy_items() -> list[int]:
        return [2]

    FastApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    app.mount("/assets", StaticFiles(directory=tmp_path))  # after ApiUsage(app): still known
    paths = [
        "/api/v1/openapi.json",
        "/api/v1/docs",
        "/docs/oauth2-redirect",  # FastAPI's default, not under docs_url
        "/api/v1/redoc",
        "/api/v1/utils/health-check/",
        "/assets/logo.txt",
        "/api/v1/livez",  # no such route: a 404, but not API traffic either
        "/api/v1/items",
        "/api/v1/healthy-items",
    ]
    statuses = serve(app, *[("GET", path, {}) for path in paths])
    assert statuses == [200] * 6 + [404, 200, 200]
    assert app._apiusage.client.flush(10)
    recorded = [event.properties["route"] for event in sink.named("api_request")]
    assert recorded == ["/api/v1/items", "/api/v1/healthy-items"]
    # Nor are they in the route inventory.
    (inventory,) = sink.named("api_route_inventory")
    listed = {route["route"] for route in inventory.properties["routes"]}
    assert listed == {"/api/v1/items", "/api/v1/healthy-items"}


def test_framework_paths_are_recorded_when_the_setting_is_off() -> None:
    sink = MemorySink()
    app = FastAPI(openapi_url="/api/v1/openapi.json")
    FastApiUsage(
        app,
        sink=sink,
        identity_secret=IDENTITY_SECRET,
        exclude_framework_paths=False,
        exclude_path_names=[],
    )
    assert serve(app, ("GET", "/api/v1/openapi.json", {})) == [200]
    assert app._apiusage.client.flush(10)
    assert [e.properties["route"] for e in sink.named("api_request")] == ["/api/v1/openapi.json"]


def test_exclusions_are_paths_of_the_app_under_a_root_path() -> None:
    sink = MemorySink()
    app = FastAPI()  # served at /gateway: the server's root path

    @app.get("/items")
    def items() -> list[int]:
        return [1]

    FastApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    requests = [("GET", "/gateway/docs", {}), ("GET", "/gateway/items", {})]
    assert serve(app, *requests, root_path="/gateway") == [200, 200]
    assert app._apiusage.client.flush(10)
    assert [e.properties["route"] for e in sink.named("api_request")] == ["/items"]


def test_flask_static_files_are_not_recorded(tmp_path: Path) -> None:
    from flask import Blueprint

    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "app.css").write_text("body {}")
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "admin.js").write_text("1")
    sink = MemorySink()
    app = Flask(__name__, static_folder=tmp_path / "static")
    FlaskApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    admin = Blueprint(
        "admin",
        __name__,
        static_folder=tmp_path / "admin",
        static_url_path="/static",
        url_prefix="/admin",
    )
    app.register_blueprint(admin)  # after init_app: still known

    @app.get("/v1/items")
    def items() -> list[int]:
        return [1]

    http = Client(app)
    paths = ["/static/app.css", "/admin/static/admin.js", "/v1/items", "/v1/healthz"]
    assert [http.get(path, buffered=True).status_code for path in paths] == [200, 200, 200, 404]
    assert FlaskApiUsage.client_for(app).flush(10)
    assert [e.properties["route"] for e in sink.named("api_request")] == ["/v1/items"]


# ------------------------------------------------------------------------ apiusage doctor
def test_doctor_shows_callers_not_read_and_anonymous_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first day: logged-in traffic that reaches apiusage anonymous is visible."""
    from apiusage.cli import NOT_HEALTHY, main

    store = tmp_path / "events.sqlite3"
    app = FastAPI()

    @app.get("/v1/me")
    def me(request: Request) -> dict[str, str]:
        request.state.user = {"id": "u-1"}
        return {}

    @app.get("/v1/projects")
    def projects(request: Request) -> dict[str, str]:
        request.state.user = Account.__new__(Account)  # no id: apiusage cannot read it
        return {}

    @app.get("/v1/status")
    def status() -> dict[str, str]:
        return {}

    FastApiUsage(app, store=store, identity_secret=IDENTITY_SECRET)
    requests = [("GET", "/v1/me", {}), *[("GET", "/v1/projects", {})] * 3]
    assert serve(app, *requests, ("GET", "/v1/status", {})) == [200] * 5
    app._apiusage.client.close(5)

    monkeypatch.setenv("APIUSAGE_STORE", str(store))
    assert main(["doctor", "--json"]) == NOT_HEALTHY
    report = json.loads(capsys.readouterr().out)
    assert report["store"]["callers_unresolved"] == 3
    assert report["anonymous_by_route"] == [
        {"method": "GET", "route": "/v1/projects", "requests": 3, "anonymous": 3},
        {"method": "GET", "route": "/v1/status", "requests": 1, "anonymous": 1},
    ]
    assert main(["health"]) == NOT_HEALTHY
    text = capsys.readouterr().out
    assert "attached but named no caller: 3" in text
    assert "GET /v1/projects" in text
    assert "NOT HEALTHY: callers could not be read" in text


def test_a_middleware_outside_still_sees_what_the_app_attached() -> None:
    """The state apiusage watches is a copy of the server's ``scope["state"]``; what the
    app attached is copied back when the request ends, so a middleware outside apiusage
    that kept the first dict (a logging middleware, say) still reads it."""
    sink = MemorySink()
    app = FastAPI()

    @app.get("/v1/me")
    def me(request: Request) -> dict[str, str]:
        request.state.user = {"id": "u-1"}
        request.state.trace = "t-1"
        return {}

    FastApiUsage(app, sink=sink, identity_secret=IDENTITY_SECRET)
    seen: list[dict[str, Any]] = []

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        state = scope["state"] = {"lifespan": "kept"}  # what the server hands each request
        await app(scope, receive, send)
        seen.append(state)

    assert serve(outer, ("GET", "/v1/me", {})) == [200]
    assert app._apiusage.client.flush(10)
    assert seen == [{"lifespan": "kept", "user": {"id": "u-1"}, "trace": "t-1"}]
    assert sink.named("api_request")[0].distinct_id == "u-1"
