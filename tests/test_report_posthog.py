"""``apiusage report --posthog``: the report's questions asked of PostHog's query API.

A local stand-in of ``POST /api/projects/{id}/query/`` checks the request as PostHog
would (bearer personal key, project, a ``HogQLQuery`` whose text is one of the report's
questions, valid by PostHog's parser) and answers with rows for that question.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from apiusage.report.hogql import questions
from apiusage.report.posthog import PostHogQueryError, app_host, summarise_posthog
from tests.support.hogql import parse_select

KEY = "phx_personal_test_key"
PROJECT = "4242"
JOURNEYS = {"onboarding": ["user_signup", "project_create", "widget_create"]}

#: What the stand-in answers, by question.
ROWS: dict[str, list[list[Any]]] = {
    "totals": [[120, 7, 3, "2026-11-01T00:00:00Z", "2026-11-30T12:00:00Z"]],
    "versions": [["v2", 80, 6, 3], ["v1", 40, 2, 1]],
    "endpoints": [
        ["GET", "/v1/items/{item_id}", 90, 6, 3, 0.1, 0.02, 12.5, 40.0, "2026-11-30T12:00:00Z"],
        ["POST", "/v1/legacy/export", 30, 2, 1, 0.0, 0.0, 30.0, 90.0, "2026-11-29T08:00:00Z"],
    ],
    "never_called": [["DELETE", "/v1/items/{item_id}", False]],
    "versions_by_organisation": [
        ["acme", "v1", 40, "2026-11-29T08:00:00Z"],
        ["acme", "v2", 30, "2026-11-30T12:00:00Z"],
        ["globex", "v2", 50, "2026-11-30T11:00:00Z"],
    ],
    "version_adoption": [["2026-11-01 00:00:00", "v2", 4, 2]],
    "auth_methods": [["api_key", 100, 6, 3, 4], ["none", 20, 0, 0, 0]],
    "client_libraries": [["acme", "acme-python", "1.4", 40, 2, "2026-11-29T08:00:00Z"]],
    "deprecated": [
        ["POST", "/v1/legacy/export", "acme", "user-1", 25, "2026-11-29T08:00:00Z", ["curl 8.5"]],
        ["POST", "/v1/legacy/export", None, None, 5, "2026-11-20T08:00:00Z", [" "]],
    ],
    "funnel:onboarding": [[10, 6, 3]],
}


class StandIn(BaseHTTPRequestHandler):
    asked: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._answer(401, {"detail": "Invalid personal API key."})
            return
        if self.path != f"/api/projects/{PROJECT}/query/":
            self._answer(404, {"detail": "Not found."})
            return
        query = body["query"]
        assert query["kind"] == "HogQLQuery"
        parse_select(query["query"])  # PostHog would refuse what its parser refuses
        known = {q.hogql: q for q in questions(days=7, journeys=JOURNEYS)}
        question = known[query["query"]]
        self.asked.append(question.key)
        self._answer(200, {"results": ROWS[question.key], "columns": list(question.columns)})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def posthog_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandIn.asked = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_answers_come_from_posthogs_query_api(posthog_app: str) -> None:
    summary = summarise_posthog(posthog_app, PROJECT, KEY, days=7, journeys=JOURNEYS)
    assert sorted(StandIn.asked) == sorted(q.key for q in questions(journeys=JOURNEYS))
    assert (summary.total_requests, summary.identified_callers, summary.organisations) == (
        120,
        7,
        3,
    )
    first = summary.endpoints[0]
    assert (first.route, first.requests, first.client_errors, first.server_errors) == (
        "/v1/items/{item_id}",
        90,
        9,
        2,
    )
    assert (first.p50_ms, first.p95_ms) == (12.5, 40.0)
    assert [entry.organisation for entry in summary.multi_version_organisations] == ["acme"]
    assert [(e.method, e.route) for e in summary.never_called or []] == [
        ("DELETE", "/v1/items/{item_id}")
    ]
    [deprecated] = summary.deprecated
    assert (deprecated.requests, deprecated.callers, deprecated.organisations) == (30, 1, 1)
    assert deprecated.by_caller[0].client_libraries == ["curl 8.5"]
    [funnel] = summary.funnels
    assert [step.callers for step in funnel.steps] == [10, 6, 3]
    assert [step.conversion for step in funnel.steps] == [1.0, 0.6, 0.5]


def test_posthogs_refusals_are_one_clear_message(posthog_app: str) -> None:
    with pytest.raises(PostHogQueryError, match="POSTHOG_PERSONAL_API_KEY"):
        summarise_posthog(posthog_app, PROJECT, "phx_wrong", days=7)
    with pytest.raises(PostHogQueryError, match="POSTHOG_PROJECT_ID"):
        summarise_posthog(posthog_app, "999", KEY, days=7)
    with pytest.raises(PostHogQueryError, match="cannot reach PostHog"):
        summarise_posthog("http://127.0.0.1:9", PROJECT, KEY, days=7, timeout=2)


def _command(posthog_app: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("APIUSAGE")},
        "POSTHOG_APP_HOST": posthog_app,
        "POSTHOG_PERSONAL_API_KEY": key,
        "POSTHOG_PROJECT_ID": PROJECT,
        "APIUSAGE_JOURNEYS": json.dumps(JOURNEYS),
    }
    return subprocess.run(
        [sys.executable, "-m", "apiusage", "report", "--posthog", "--days", "7", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_the_command_prints_the_same_tables_from_posthog(posthog_app: str) -> None:
    result = _command(posthog_app)
    assert result.returncode == 0, result.stderr
    assert "GET /v1/items/{item_id}" in result.stdout
    assert "Deprecated endpoints and who still calls them" in result.stdout
    assert "Journey onboarding" in result.stdout
    result = _command(posthog_app, "--csv", "deprecated")
    assert result.stdout.splitlines()[1].startswith("POST,/v1/legacy/export,acme,user-1,25,")
    refused = _command(posthog_app, key="phx_wrong")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "refused the personal API key" in refused.stderr


def test_the_query_api_is_on_posthog_clouds_app_host() -> None:
    assert app_host("https://us.i.posthog.com") == "https://us.posthog.com"
    assert app_host("https://eu.i.posthog.com/") == "https://eu.posthog.com"
    assert app_host("https://posthog.example.com") == "https://posthog.example.com"
