"""``apiusage report``'s answers, checked against a generated history whose answers are known.

The history (``tests/support/usage_data.py``) is written by the real builder into a real
store; each answer is compared with what the generator counted as it made the requests.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from apiusage.report import summarise
from tests.support.usage_data import DAY, START, UsageHistory, generate


def nearest_rank(ordered: list[float], share: float) -> float:
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> UsageHistory:
    store = tmp_path_factory.mktemp("report") / "events.sqlite3"
    return generate(store, events=6_000, organisations=30, routes=16, days=30)


def test_endpoints_are_counted_with_their_errors_callers_and_latency(
    history: UsageHistory,
) -> None:
    summary = summarise(history.store)
    assert summary.total_requests == history.requests
    found = {(entry.method, entry.route): entry for entry in summary.endpoints}
    assert set(found) == set(history.by_route)
    for endpoint, requests in history.by_route.items():
        entry = found[endpoint]
        assert entry.requests == requests
        assert entry.client_errors == history.client_errors[endpoint]
        assert entry.server_errors == history.server_errors[endpoint]
        ordered = sorted(history.durations[endpoint])
        assert entry.p50_ms == nearest_rank(ordered, 0.50)
        assert entry.p95_ms == nearest_rank(ordered, 0.95)
    # Most used first.
    assert [entry.requests for entry in summary.endpoints] == sorted(
        (entry.requests for entry in summary.endpoints), reverse=True
    )


def test_versions_per_organisation_and_organisations_on_several(history: UsageHistory) -> None:
    summary = summarise(history.store)
    found = {entry.organisation: set(entry.requests) for entry in summary.versions_by_organisation}
    assert found == history.versions_by_org
    several = {entry.organisation for entry in summary.multi_version_organisations}
    assert several == {
        org for org, versions in history.versions_by_org.items() if len(versions) > 1
    }
    assert several  # the generator puts every 5th organisation on two versions
    assert all(int(org[4:]) % 5 == 0 for org in several)


def test_auth_methods_by_requests_callers_and_organisations(history: UsageHistory) -> None:
    summary = summarise(history.store)
    requests = {entry.auth_method: entry.requests for entry in summary.auth_methods}
    assert requests == dict(history.by_auth)
    anonymous = next(entry for entry in summary.auth_methods if entry.auth_method == "none")
    assert (anonymous.callers, anonymous.organisations) == (0, 0)
    assert all(entry.failed == 0 for entry in summary.auth_methods)  # no 401 or 403 here


def test_client_libraries_per_organisation(history: UsageHistory) -> None:
    summary = summarise(history.store)
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in summary.client_libraries:
        if entry.organisation is not None:
            found[entry.organisation][entry.client_library] += entry.requests
    assert found == history.libraries_by_org


def test_a_window_and_an_organisation_narrow_every_answer(history: UsageHistory) -> None:
    whole = summarise(history.store)
    first_half = summarise(history.store, until=START + 15 * DAY)
    second_half = summarise(history.store, since=START + 15 * DAY)
    assert first_half.total_requests + second_half.total_requests == whole.total_requests
    assert 0 < first_half.total_requests < whole.total_requests
    assert second_half.first_seen is not None
    assert second_half.first_seen >= START + 15 * DAY

    one = summarise(history.store, organisation="org-005")
    assert one.organisations == 1
    assert {entry.organisation for entry in one.versions_by_organisation} == {"org-005"}
    assert sum(entry.requests for entry in one.endpoints) == one.total_requests
    assert one.total_requests == sum(
        entry.requests for entry in whole.client_libraries if entry.organisation == "org-005"
    )
    for entry in one.endpoints:
        ordered = sorted(history.org_durations["org-005"][entry.method, entry.route])
        assert (entry.p50_ms, entry.p95_ms) == (
            nearest_rank(ordered, 0.50),
            nearest_rank(ordered, 0.95),
        )


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apiusage", "report", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_prints_json_with_named_fields(history: UsageHistory) -> None:
    result = _report("--store", str(history.store), "--json", "--since", "2026-10-16")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["since"] == START + 15 * DAY
    endpoint = data["endpoints"][0]
    assert set(endpoint) >= {"method", "route", "requests", "client_errors", "p95_ms"}
    assert {entry["organisation"] for entry in data["multi_version_organisations"]}
    assert data["total_requests"] == sum(entry["requests"] for entry in data["versions"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "neither an ISO date"),
        (["--until", "7x"], "neither an ISO date"),
        (["--org", "no-such-org"], "no events of organisation 'no-such-org'"),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_failing_status(
    history: UsageHistory, args: list[str], message: str
) -> None:
    result = _report("--store", str(history.store), *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_store_is_one_clear_line(tmp_path: Path) -> None:
    result = _report("--store", str(tmp_path / "nothing.sqlite3"))
    assert result.returncode == 1
    assert "no local store at" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_and_latency_by_feature_flag_answer(history: UsageHistory) -> None:
    summary = summarise(history.store)
    found = {(entry.flag, entry.answer): entry for entry in summary.flags}
    assert (
        set(found)
        == set(history.flag_requests)
        == {
            ("new-pagination", "true"),
            ("new-pagination", "false"),
        }
    )
    for served, requests in history.flag_requests.items():
        entry = found[served]
        assert entry.requests == requests
        assert entry.client_errors == history.flag_client_errors[served]
        assert entry.server_errors == history.flag_server_errors[served]
        ordered = sorted(history.flag_durations[served])
        assert entry.p50_ms == nearest_rank(ordered, 0.50)
        assert entry.p95_ms == nearest_rank(ordered, 0.95)
    # One organisation's report: only its answer (even organisations got the flag).
    of_one = summarise(history.store, organisation="org-004")
    assert {entry.answer for entry in of_one.flags} == {"true"}
    result = _report("--store", str(history.store), "--csv", "flags")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {(row["flag"], row["answer"]): int(row["requests"]) for row in rows} == dict(
        history.flag_requests
    )


def test_text_tables_name_every_section(history: UsageHistory) -> None:
    result = _report(
        "--store", str(history.store), "--since", "2026-10-01", "--until", "2030-01-01"
    )
    assert result.returncode == 0, result.stderr
    for title in (
        "Endpoints, most used first",
        "API versions",
        "Organisations on several API versions at once",
        "Authentication methods",
        "Client libraries by organisation",
        "Feature flags: requests, errors and latency by answer",
    ):
        assert title in result.stdout


def test_never_called_endpoints_come_from_the_route_inventory(history: UsageHistory) -> None:
    summary = summarise(history.store)
    assert summary.never_called is not None
    assert [(entry.method, entry.route) for entry in summary.never_called] == (history.never_called)
    # For one organisation: every endpoint it did not call (what it under-uses).
    one = summarise(history.store, organisation="org-004")
    assert one.never_called is not None
    unused = {(entry.method, entry.route) for entry in one.never_called}
    assert unused == set(history.routes) - history.routes_by_org["org-004"]


def test_deprecated_endpoints_list_who_still_calls_them(history: UsageHistory) -> None:
    summary = summarise(history.store)
    found = {(entry.method, entry.route): entry for entry in summary.deprecated}
    assert set(found) == set(history.deprecated)
    for endpoint, expected in history.deprecated_by_caller.items():
        entry = found[endpoint]
        assert entry.requests == sum(expected.values())
        by_caller = {(row.organisation, row.caller): row.requests for row in entry.by_caller}
        assert by_caller == dict(expected)
        assert {row.organisation for row in entry.by_caller} - {None} == {
            org for org, _ in expected if org is not None
        }
        assert all(int(org[4:]) % 3 == 0 for org, _ in expected if org is not None)
        assert all(row.client_libraries for row in entry.by_caller)


def test_a_route_named_on_the_command_line_counts_as_deprecated(history: UsageHistory) -> None:
    route = ("POST", "/signup")
    summary = summarise(history.store, deprecated_routes=["POST /signup"])
    found = {(entry.method, entry.route): entry for entry in summary.deprecated}
    assert found[route].requests == history.by_route[route]
    assert set(found) == {*history.deprecated, route}


def test_without_a_route_inventory_never_called_is_unknown(tmp_path: Path) -> None:
    store = tmp_path / "events.sqlite3"
    generate(store, events=300, organisations=3, routes=8, inventory=False)
    summary = summarise(store)
    assert summary.never_called is None
    assert summary.deprecated == []


def test_the_outreach_list_as_csv(history: UsageHistory) -> None:
    result = _report("--store", str(history.store), "--csv", "deprecated")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert set(rows[0]) == {
        "method",
        "route",
        "organisation",
        "caller",
        "requests",
        "last_seen",
        "client_libraries",
        "requests_after_notice",
    }
    found: dict[tuple[str, str], Counter[tuple[str | None, str | None]]] = defaultdict(Counter)
    for row in rows:
        who = (row["organisation"] or None, row["caller"] or None)
        found[row["method"], row["route"]][who] += int(row["requests"])
        assert row["last_seen"].endswith("Z")
    assert found == history.deprecated_by_caller


def test_bad_deprecated_route_on_the_command_line(history: UsageHistory) -> None:
    result = _report("--store", str(history.store), "--deprecated", "GET signup")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1  # one line
    assert "'GET signup' is not a route" in result.stderr


def _journey_store(path: Path) -> Path:
    """Five callers walking a → b → c (hand-made; expectations in the test below)."""
    from apiusage.events import Event
    from apiusage.sinks.store import LocalStoreSink

    day = DAY
    walks = {
        ("alice", "org-1"): [("a", 0), ("b", 1 * day), ("c", 2 * day)],
        ("bob", "org-1"): [("a", 0), ("c", 1 * day), ("b", 2 * day)],  # c came before b
        ("carol", "org-2"): [("b", 0), ("a", 1 * day), ("b", 2 * day), ("c", 20 * day)],
        ("dave", "org-2"): [("a", 0)],
        ("erin", None): [("b", 0), ("c", 1 * day)],  # never started
    }
    events = [
        Event(
            step,
            caller,
            {"organisation": org},
            START + offset,
            f"{caller}-{index}",
            {"organisation": org} if org else None,
        )
        for (caller, org), steps in walks.items()
        for index, (step, offset) in enumerate(steps)
    ]
    sink = LocalStoreSink(path)
    sink.send(events, [])
    sink.close(1)
    return path


def test_a_journey_funnel_counts_callers_reaching_each_step_in_order(tmp_path: Path) -> None:
    store = _journey_store(tmp_path / "events.sqlite3")
    summary = summarise(store, journeys={"abc": ["a", "b", "c"]}, journey_window_days=14)
    [funnel] = summary.funnels
    assert [(step.event, step.callers) for step in funnel.steps] == [("a", 4), ("b", 3), ("c", 1)]
    assert [step.conversion for step in funnel.steps] == [1.0, 0.75, 0.3333]
    assert [step.conversion_from_start for step in funnel.steps] == [1.0, 0.75, 0.25]
    by_org = {
        entry.organisation: [s.callers for s in entry.steps] for entry in funnel.by_organisation
    }
    assert by_org == {"org-1": [2, 2, 1], "org-2": [2, 1, 0]}
    # A longer window lets carol's late step count.
    [wide] = summarise(store, journeys={"abc": ["a", "b", "c"]}, journey_window_days=30).funnels
    assert [step.callers for step in wide.steps] == [4, 3, 2]
    # One organisation's funnel.
    [one] = summarise(store, journeys={"abc": ["a", "b", "c"]}, organisation="org-2").funnels
    assert [step.callers for step in one.steps] == [2, 1, 0]


def test_an_unknown_journey_step_is_one_clear_line(tmp_path: Path) -> None:
    store = _journey_store(tmp_path / "events.sqlite3")
    result = _report("--store", str(store), "--journey", "a,b,signup")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no event named 'signup'" in result.stderr
    assert "its events: a, b, c" in result.stderr
    result = _report("--store", str(store), "--journey", "a")
    assert result.returncode == 2
    assert "at least two journey events" in result.stderr
    result = _report("--store", str(store), "--journey", "a,b,c", "--json")
    assert result.returncode == 0, result.stderr
    [funnel] = json.loads(result.stdout)["funnels"]
    assert [step["callers"] for step in funnel["steps"]] == [4, 3, 1]


def test_the_generated_sign_up_journey_narrows_at_every_step(history: UsageHistory) -> None:
    from tests.support.usage_data import JOURNEY

    [funnel] = summarise(history.store, journeys={"signup": JOURNEY}).funnels
    counts = [step.callers for step in funnel.steps]
    assert counts[0] > 0
    assert counts == sorted(counts, reverse=True)
    assert sum(entry.steps[0].callers for entry in funnel.by_organisation) == counts[0]


def test_a_file_that_is_not_a_store_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, just notes\n" * 100)
    result = _report("--store", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_store_of_a_newer_apiusage_is_refused_with_the_reason(tmp_path: Path) -> None:
    import sqlite3

    from apiusage.sinks.store import LocalStoreSink

    path = tmp_path / "events.sqlite3"
    LocalStoreSink(path).close(1)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    result = _report("--store", str(path))
    assert result.returncode == 2
    assert "layout version 99, newer than this apiusage knows" in result.stderr
    assert result.stderr.count("\n") == 1


def _requests_store(path: Path, requests: list[tuple[str, str, str, float]]) -> Path:
    """``requests``: (organisation, route, api version, seconds after START), each an
    api_request from the organisation's one caller."""
    from apiusage.events import Event
    from apiusage.sinks.store import LocalStoreSink

    events = [
        Event(
            "api_request",
            f"user-of-{org}",
            {
                "organisation": org,
                "route": route,
                "method": "GET",
                "status_code": 200,
                "api_version": version,
                "duration_ms": 1.0,
                "request_id": f"r{index}",
            },
            START + offset,
            f"r{index}",
            {"organisation": org},
        )
        for index, (org, route, version, offset) in enumerate(requests)
    ]
    sink = LocalStoreSink(path)
    sink.send(events, [])
    sink.close(1)
    return path


def test_version_adoption_per_day_and_per_organisation(tmp_path: Path) -> None:
    store = _requests_store(
        tmp_path / "events.sqlite3",
        [
            ("acme", "/x", "v1", 0.1 * DAY),
            ("acme", "/x", "v1", 0.2 * DAY),
            ("globex", "/x", "v1", 0.3 * DAY),
            ("acme", "/x", "v2", 1.5 * DAY),  # acme moves to v2 on the second day
            ("globex", "/x", "v1", 1.6 * DAY),
        ],
    )
    summary = summarise(store, over_time=True)
    assert summary.adoption_period == "day"
    overall = [(p.period, p.version, p.requests, p.organisations) for p in summary.version_adoption]
    assert overall == [
        ("2026-10-01", "v1", 3, 2),
        ("2026-10-02", "v1", 1, 1),
        ("2026-10-02", "v2", 1, 1),
    ]
    per_org = [
        (p.organisation, p.period, p.version, p.requests)
        for p in summary.version_adoption_by_organisation
    ]
    assert per_org == [
        ("acme", "2026-10-01", "v1", 2),
        ("acme", "2026-10-02", "v2", 1),
        ("globex", "2026-10-01", "v1", 1),
        ("globex", "2026-10-02", "v1", 1),
    ]
    assert summarise(store).version_adoption == []  # only when asked for


def test_version_adoption_over_a_long_window_is_weekly(tmp_path: Path) -> None:
    store = _requests_store(
        tmp_path / "events.sqlite3",
        [("acme", "/x", "v1", day * DAY) for day in (0, 1, 5, 100)],  # 2026-10-01: a Thursday
    )
    summary = summarise(store, over_time=True)
    assert summary.adoption_period == "week"
    assert [(p.period, p.requests) for p in summary.version_adoption] == [
        ("2026-09-28", 2),  # Monday of the week of Oct 1 (Thu) and Oct 2 (Fri)
        ("2026-10-05", 1),  # Oct 6 (Tue)
        ("2027-01-04", 1),  # Jan 9, 2027 (Sat)
    ]


def test_features_an_organisation_underuses(tmp_path: Path) -> None:
    plan = {
        # /search: a fifth of the requests of most organisations
        "acme": {"/items": 8, "/search": 2},
        "globex": {"/items": 8, "/search": 2},
        "initech": {"/items": 7, "/search": 3},
        "umbrella": {"/items": 40, "/search": 1},  # 2.4 %: under a quarter of the median
        "hooli": {"/items": 10},  # never
    }
    requests = [
        (org, route, "v1", 1.0)
        for org, routes in plan.items()
        for route, count in routes.items()
        for _ in range(count)
    ]
    store = _requests_store(tmp_path / "events.sqlite3", requests)
    found = {
        (entry.organisation, entry.feature): entry for entry in summarise(store).underused_features
    }
    assert set(found) == {("hooli", "GET /search"), ("umbrella", "GET /search")}
    assert found["hooli", "GET /search"].requests == 0
    assert found["umbrella", "GET /search"].share == round(1 / 41, 4)
    assert found["umbrella", "GET /search"].median_share == 0.2
    assert found["hooli", "GET /search"].organisations_using == 4


def test_who_kept_calling_after_the_notice(history: UsageHistory) -> None:
    notice = START + 16 * DAY  # 2026-10-17
    summary = summarise(history.store, deprecation_dates={"GET /legacy/reports": "2026-10-17"})
    found = {(entry.method, entry.route): entry for entry in summary.deprecated}
    told = found["GET", "/legacy/reports"]
    assert told.notice_since == notice
    after = [call for call in history.deprecated_calls if call[:2] == ("GET", "/legacy/reports")]
    after = [call for call in after if call[4] >= notice]
    assert told.requests_after_notice == len(after)
    assert 0 < told.requests_after_notice < told.requests
    by_caller = {
        (row.organisation, row.caller): row.requests_after_notice for row in told.by_caller
    }
    expected: Counter[tuple[str | None, str | None]] = Counter((c[2], c[3]) for c in after)
    assert {who: count for who, count in by_caller.items() if count} == dict(expected)
    untold = found["POST", "/legacy/export"]  # no date: nothing counts as after a notice
    assert (untold.notice_since, untold.requests_after_notice) == (None, 0)


def test_long_runs_report_each_step(history: UsageHistory) -> None:
    steps: list[str] = []
    summarise(
        history.store, journeys={"signup": ["user_signup", "user_login"]}, progress=steps.append
    )
    assert steps[0].startswith("counting requests")
    assert "journey funnels" in steps
    assert len(steps) == len(set(steps)) >= 5


def test_versions_per_caller_and_one_callers_report(history: UsageHistory) -> None:
    summary = summarise(history.store)
    several = {entry.caller: set(entry.versions) for entry in summary.multi_version_callers}
    expected = {user: v for user, v in history.versions_by_caller.items() if len(v) > 1}
    assert several == expected
    assert several  # every 5th organisation's callers switch versions
    caller, requests = history.requests_by_caller.most_common(1)[0]
    one = summarise(history.store, caller=caller)
    assert one.total_requests == requests
    assert one.identified_callers == 1
    assert sum(entry.requests for entry in one.endpoints) == requests
    assert all(entry.p50_ms is not None for entry in one.endpoints)
    result = _report("--store", str(history.store), "--caller", "nobody")
    assert result.returncode == 1
    assert "no events of caller 'nobody'" in result.stderr
