"""The report's HogQL: every query valid by PostHog's own parser, and the command that
prints them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from apiusage.report.hogql import questions
from tests.support.hogql import HogQLSyntaxError, parse_select

JOURNEYS = {"onboarding": ["user_signup", "user_login", "project_create", "widget_create"]}


@pytest.mark.parametrize(
    "question",
    questions(
        "api_call",
        days=90,
        journeys=JOURNEYS,
        deprecated_routes=["GET /v1/old", "/v1/gone/<int:id>"],
    ),
    ids=lambda question: question.key,
)
def test_every_question_is_valid_hogql(question) -> None:  # type: ignore[no-untyped-def]
    tree = parse_select(question.hogql)
    assert tree["node"] in ("SelectQuery", "SelectSetQuery")
    assert "'api_call'" in question.hogql or question.key.startswith("funnel")
    assert "INTERVAL 90 DAY" in question.hogql


def test_the_parser_refuses_what_is_not_hogql() -> None:
    with pytest.raises(HogQLSyntaxError):
        parse_select("SELECT count( FROM events")


def test_names_are_quoted_so_no_input_breaks_a_query() -> None:
    [*_, funnel] = questions("it's", journeys={"j": ["a'b", "c\\'d"]})
    parse_select(funnel.hogql)
    assert "'a\\'b'" in funnel.hogql


def test_the_command_prints_every_query_for_the_configured_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "apiusage", "posthog", "queries", "--days", "7"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "APIUSAGE_EVENT_NAME": "api_call",
            "APIUSAGE_JOURNEYS": '{"onboarding": ["user_signup", "project_create"]}',
        },
    )
    assert result.returncode == 0, result.stderr
    blocks = [block for block in result.stdout.split("\n-- ") if block.strip()]
    assert len(blocks) == len(questions(journeys={"onboarding": ["a", "b"]}))
    assert "INTERVAL 7 DAY" in result.stdout
    assert "event = 'api_call'" in result.stdout
    assert "minIf(timestamp, event = 'project_create')" in result.stdout
