"""A generated API usage history with known answers, written through apiusage's own
builder into a local store.

Used by the report tests (each answer checked against what the generator knows it made)
and by ``benchmarks/bench_report.py`` (the same shape at a million events). Requests are
real :class:`~apiusage.record.RequestRecord` objects built by the real pipeline, so the
stored rows are exactly what an instrumented app would have written.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from apiusage import Identity, Route, UsageClient
from apiusage.inventory import InventoryRequest
from apiusage.record import JourneyEvent, RequestRecord
from apiusage.sinks.store import LocalStoreSink

__all__ = ["UsageHistory", "generate"]

DAY = 86_400.0
#: The start of the generated history (2026-10-01T00:00:00Z).
START = 1_790_812_800.0

#: (method, template) of the generated API; the first two are deprecated, the last is
#: never called.
ROUTE_SHAPES = [
    ("GET", "/legacy/reports"),
    ("POST", "/legacy/export"),
    ("POST", "/signup"),
    ("POST", "/login"),
    ("POST", "/projects"),
    ("POST", "/projects/{project_id}/widgets"),
    ("GET", "/admin/never"),
]
JOURNEY = ["user_signup", "user_login", "project_create", "widget_create"]
AUTH_HEADERS: dict[str, tuple[bytes, bytes] | None] = {
    "api_key": (b"x-api-key", b"key-%d"),
    "bearer": (b"authorization", b"Bearer tok-%d"),
    "basic": (b"authorization", b"Basic dXNlcjpwYXNz"),
    "none": None,
}
LIBRARIES = [b"acme-python/2.1.0", b"acme-python/1.4.2", b"acme-node/3.0.0", b"curl/8.5.0"]


@dataclass
class UsageHistory:
    """What was generated: the store and the answers the report must find."""

    store: Path
    routes: list[tuple[str, str]]
    deprecated: list[tuple[str, str]]
    never_called: list[tuple[str, str]]
    requests: int = 0
    #: (method, route) → requests
    by_route: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (method, route) → requests with status >= 400 and < 500, and >= 500
    client_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    server_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: organisation → API versions it called
    versions_by_org: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: caller → API versions it called
    versions_by_caller: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: caller → requests
    requests_by_caller: Counter[str] = field(default_factory=Counter)
    #: auth method → requests
    by_auth: Counter[str] = field(default_factory=Counter)
    #: (method, route) deprecated → organisation → requests
    deprecated_callers: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    #: (method, route) deprecated → (organisation, caller) → requests
    deprecated_by_caller: dict[tuple[str, str], Counter[tuple[str | None, str | None]]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    #: Every call of a deprecated endpoint: (method, route, organisation, caller, time)
    deprecated_calls: list[tuple[str, str, str | None, str | None, float]] = field(
        default_factory=list
    )
    #: organisation → (method, route) it called
    routes_by_org: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    #: journey step → callers who reached it (in order)
    journey_callers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: (method, route) → durations in milliseconds
    durations: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    #: organisation → (method, route) → durations in milliseconds
    org_durations: dict[str, dict[tuple[str, str], list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    #: organisation → client library → requests
    libraries_by_org: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    #: (flag, answer) → requests, 4xx, 5xx, durations in milliseconds
    flag_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    flag_client_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    flag_server_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    flag_durations: dict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )


def _routes(count: int) -> list[tuple[str, str]]:
    routes = list(ROUTE_SHAPES[:-1])
    resources = ["orders", "invoices", "users", "teams", "files", "events", "keys", "hooks"]
    index = 0
    while len(routes) < count - 1:
        resource = resources[index % len(resources)]
        suffix = index // len(resources)
        template = f"/{resource}{suffix or ''}/{{{resource}_id}}"
        routes.append(("GET" if index % 2 == 0 else "DELETE", template))
        index += 1
    routes.append(ROUTE_SHAPES[-1])
    return routes


def generate(
    store: Path,
    *,
    events: int = 10_000,
    organisations: int = 30,
    routes: int = 20,
    days: int = 30,
    seed: int = 7,
    batch: int = 2_000,
    inventory: bool = True,
) -> UsageHistory:
    """Write about ``events`` events (requests and their journey events) to ``store``."""
    rng = random.Random(seed)
    client = UsageClient(
        sink=LocalStoreSink(store),
        identity_secret="usage-data-secret-0123456789",
        catch_signals=False,
    )
    all_routes = _routes(routes)
    history = UsageHistory(
        store=store,
        routes=all_routes,
        deprecated=all_routes[:2],
        never_called=[all_routes[-1]],
    )
    # The app's route inventory, as its adapter would list it: two deprecated routes.
    routes = [
        Route.of(method, route, deprecated=(method, route) in history.deprecated)
        for method, route in all_routes
    ]
    if inventory:
        client.pipeline.process(
            [InventoryRequest((lambda: routes,), "fastapi", (), lambda path: False)]
        )
    called = all_routes[:-1]
    # Popularity falls off along the list (a few routes carry most of the traffic).
    weights = [1.0 / (rank + 1) for rank in range(len(called))]
    orgs = [f"org-{n:03d}" for n in range(organisations)]
    pending: list[RequestRecord] = []
    journeys = 0
    while history.requests + journeys < events:
        org = orgs[rng.randrange(len(orgs))]
        org_number = int(org[4:])
        user = f"user-{org_number}-{rng.randrange(5)}"
        method, route = rng.choices(called, weights)[0]
        if (method, route) in history.deprecated and org_number % 3:
            method, route = called[2 + rng.randrange(len(called) - 2)]  # only every 3rd org
        auth = list(AUTH_HEADERS)[org_number % 4 if rng.random() < 0.9 else rng.randrange(4)]
        # Every 5th organisation runs v1 and v2 side by side; the rest keep to one.
        version = "v2" if org_number % 2 else "v1"
        if org_number % 5 == 0 and rng.random() < 0.5:
            version = "v2" if version == "v1" else "v1"
        status = rng.choices([200, 201, 400, 404, 500], [80, 10, 5, 4, 1])[0]
        library = LIBRARIES[(org_number + (rng.random() < 0.2)) % len(LIBRARIES)]
        headers: list[tuple[bytes, bytes]] = [(b"user-agent", library)]
        if version:
            headers.append((b"api-version", version.encode()))
        auth_header = AUTH_HEADERS[auth]
        if auth_header is not None:
            name, value = auth_header
            headers.append((name, value % org_number if b"%d" in value else value))
        record = RequestRecord("http", method, route, b"", tuple(headers), {}, "", "fastapi")
        record.started_at = START + rng.random() * days * DAY
        record.route = route
        record.status = status
        record.duration_ns = int(rng.lognormvariate(2.5, 0.6) * 1e6)
        record.response_bytes = rng.randrange(100, 5_000)
        identity = None if auth == "none" else Identity(user, org)
        record.identity = identity
        if route.startswith("/projects"):  # an experiment: even organisations get it
            answer = org_number % 2 == 0
            record.flags = {"new-pagination": answer}
            served = ("new-pagination", "true" if answer else "false")
            history.flag_requests[served] += 1
            history.flag_client_errors[served] += 400 <= status < 500
            history.flag_server_errors[served] += status >= 500
            history.flag_durations[served].append(round(record.duration_ns / 1e6, 3))
        step = _journey_step(route)
        if identity is not None and step is not None and status < 400:
            reached = history.journey_callers
            previous = JOURNEY.index(step) - 1
            if previous < 0 or user in reached[JOURNEY[previous]]:
                reached[step].add(user)
            record.journey = [JourneyEvent(step, {}, record.started_at)]
            journeys += 1
        pending.append(record)
        history.requests += 1
        history.by_route[method, route] += 1
        if 400 <= status < 500:
            history.client_errors[method, route] += 1
        elif status >= 500:
            history.server_errors[method, route] += 1
        history.by_auth[auth] += 1
        duration = round(record.duration_ns / 1e6, 3)
        history.durations[method, route].append(duration)
        if identity is not None:
            history.org_durations[org][method, route].append(duration)
        if (method, route) in history.deprecated:
            caller = (org, user) if identity is not None else (None, None)
            history.deprecated_by_caller[method, route][caller] += 1
            history.deprecated_calls.append((method, route, *caller, record.started_at))
        if identity is not None:
            history.routes_by_org[org].add((method, route))
            history.versions_by_org[org].add(version)
            history.versions_by_caller[user].add(version)
            history.requests_by_caller[user] += 1
            history.libraries_by_org[org][library.decode().split("/")[0]] += 1
            if (method, route) in history.deprecated:
                history.deprecated_callers[method, route][org] += 1
        if len(pending) >= batch:
            client.pipeline.process(pending)
            pending = []
    if pending:
        client.pipeline.process(pending)
    client.close()
    return history


def _journey_step(route: str) -> str | None:
    return {
        "/signup": "user_signup",
        "/login": "user_login",
        "/projects": "project_create",
        "/projects/{project_id}/widgets": "widget_create",
    }.get(route)


def store_size(path: Path) -> int:
    """Bytes on disk of the store (with its write-ahead log)."""
    total = 0
    for suffix in ("", "-wal"):
        candidate = Path(str(path) + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total
