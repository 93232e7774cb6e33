"""The ``apiusage`` command.

``apiusage report`` prints the usage summary of the local store (and what its writers
lost); ``apiusage health`` says where events go and whether any are waiting on disk,
were refused or were dropped, with an exit status a monitoring check can use.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from apiusage.config import ConfigurationError, Settings, load_settings
from apiusage.inventory import parse_route_entry
from apiusage.notices import parse_date
from apiusage.report import (
    UnknownJourneyStep,
    UsageSummary,
    delivery_health,
    format_delivery,
    format_summary,
    summarise,
)
from apiusage.report.answers import EndpointUsage
from apiusage.report.callers import anonymous_routes, caller_trouble, format_callers
from apiusage.report.hogql import questions
from apiusage.report.html import render_html
from apiusage.report.posthog import PostHogQueryError, app_host, summarise_posthog
from apiusage.report.tables import CSV_TABLES, write_csv
from apiusage.sinks.store import StoreVersionError

__all__ = ["main"]

#: ``apiusage health``'s exit status when events wait, were refused or were dropped.
NOT_HEALTHY = 3


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``apiusage report | head``): no traceback, and nothing
        # more written to the closed pipe when the interpreter flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


class _Parser(argparse.ArgumentParser):
    """Bad input gets one line naming the problem (and where to look), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _main(argv: Sequence[str] | None) -> int:
    parser = _Parser(prog="apiusage", description="How your API is used.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    report = commands.add_parser("report", help="print the usage summary from the local store")
    report.add_argument(
        "--store",
        type=Path,
        help="SQLite store (default: APIUSAGE_STORE or .apiusage/events.sqlite3)",
    )
    report.add_argument(
        "--event-name", help="name of the request event (default: APIUSAGE_EVENT_NAME)"
    )
    report.add_argument(
        "--since",
        type=_moment,
        help="from this time on: an ISO date or time (UTC unless it says), or an age such as "
        "7d, 12h, 30m",
    )
    report.add_argument("--until", type=_moment, help="before this time (same forms as --since)")
    report.add_argument("--org", help="only this organisation's requests")
    report.add_argument("--caller", help="only this caller's requests (its distinct id)")
    report.add_argument(
        "--deprecated",
        action="append",
        default=[],
        type=_route_entry,
        metavar="ROUTE",
        help="report this route as deprecated too: 'GET /v1/reports', or '/v1/reports' for "
        "any method (repeatable; adds to APIUSAGE_DEPRECATED_ROUTES and the route inventory)",
    )
    report.add_argument(
        "--journey",
        action="append",
        default=[],
        metavar="STEPS",
        help="a funnel: journey event names in order, comma-separated "
        "(user_signup,project_create), or the name of a journey in APIUSAGE_JOURNEYS "
        "(repeatable; default: every configured journey)",
    )
    report.add_argument(
        "--posthog",
        action="store_true",
        help="ask PostHog instead of the local store (POSTHOG_PERSONAL_API_KEY, "
        "POSTHOG_PROJECT_ID; the window is --days)",
    )
    report.add_argument(
        "--days", type=int, default=30, help="with --posthog: the last this many days (30)"
    )
    report.add_argument(
        "--over-time",
        action="store_true",
        help="add API version adoption per day (per week over three months); about a "
        "second more for a million events",
    )
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of tables")
    output.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the report as one self-contained HTML page with charts (works offline)",
    )
    output.add_argument(
        "--csv",
        choices=sorted(CSV_TABLES),
        metavar="TABLE",
        help="print one table as CSV: " + ", ".join(sorted(CSV_TABLES)),
    )
    posthog = commands.add_parser(
        "posthog", help="the report's questions for PostHog (HogQL to paste into a SQL insight)"
    )
    posthog_commands = posthog.add_subparsers(dest="posthog_command", required=True)
    queries = posthog_commands.add_parser(
        "queries", help="print each of the report's questions as HogQL"
    )
    queries.add_argument("--days", type=int, default=30, help="the window, in days (default 30)")
    queries.add_argument("--event-name", help="the request event (default: APIUSAGE_EVENT_NAME)")
    queries.add_argument(
        "--journey",
        action="append",
        default=[],
        metavar="STEPS",
        help="a funnel, as for apiusage report (default: every configured journey)",
    )
    queries.add_argument(
        "--deprecated",
        action="append",
        default=[],
        type=_route_entry,
        metavar="ROUTE",
        help="a route to count as deprecated besides those requests mark (repeatable)",
    )
    health = commands.add_parser(
        "health",
        aliases=["doctor"],
        help="where events go, how many wait on disk, were refused or were dropped, and "
        f"whether callers are seen (exit status {NOT_HEALTHY} if not)",
    )
    health.add_argument("--store", type=Path, help="SQLite store (default: APIUSAGE_STORE)")
    health.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    if args.command == "posthog":
        try:
            journeys = _journeys(args.journey, settings)
        except _BadInput as exc:
            print(f"apiusage posthog: {exc}", file=sys.stderr)
            return 2
        for question in questions(
            args.event_name or settings.event_name,
            days=args.days,
            journeys=journeys,
            journey_window_days=settings.journey_window_days,
            deprecated_routes=[*settings.deprecated_routes, *args.deprecated],
        ):
            print(f"-- {question.title} ({question.key})\n{question.hogql};\n")
        return 0
    if args.command in ("health", "doctor"):
        return _health(settings, args.store or settings.store, as_json=args.json)
    if args.posthog:
        return _report_from_posthog(args, settings)
    store = args.store or settings.store
    try:
        summary = summarise(
            store,
            args.event_name or settings.event_name,
            since=args.since,
            until=args.until,
            organisation=args.org,
            caller=args.caller,
            deprecated_routes=[*settings.deprecated_routes, *args.deprecated],
            journeys=_journeys(args.journey, settings),
            journey_window_days=settings.journey_window_days,
            over_time=args.over_time or args.csv == "version-adoption" or bool(args.html),
            deprecation_dates=settings.deprecation_dates,
            progress=_progress(),
        )
        _progress_done()
    except FileNotFoundError:
        print(
            f"apiusage: no local store at {store}; has an instrumented app run here?",
            file=sys.stderr,
        )
        return 1
    except (_BadInput, UnknownJourneyStep) as exc:
        print(f"apiusage report: {exc}", file=sys.stderr)
        return 2
    except StoreVersionError as exc:
        print(f"apiusage report: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"apiusage report: cannot read {store} as an apiusage store: {exc}", file=sys.stderr)
        return 2
    if args.org is not None and not summary.total_requests and not summary.journey_events:
        print(f"apiusage: no events of organisation {args.org!r} in {store}", file=sys.stderr)
        return 1
    if args.caller is not None and not summary.total_requests and not summary.journey_events:
        print(f"apiusage: no events of caller {args.caller!r} in {store}", file=sys.stderr)
        return 1
    return _print_summary(summary, args)


def _print_summary(summary: UsageSummary, args: argparse.Namespace) -> int:
    """The summary in the form asked for; the exit status."""
    if args.json:
        sys.stdout.buffer.write(summary.to_json() + b"\n")
        sys.stdout.flush()
    elif args.csv:
        write_csv(summary, args.csv, sys.stdout)
    elif args.html:
        try:
            args.html.write_text(render_html(summary), encoding="utf-8")
        except OSError as exc:
            print(f"apiusage report: cannot write {args.html}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"report written to {args.html.resolve()}")
    else:
        print(format_summary(summary))
    return 0


def _progress() -> Callable[[str], None] | None:
    """On a terminal, each step of a long report on one line of stderr; else nothing."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(step: str) -> None:
        print(
            f"\r\033[Kapiusage report: {step} … ({time.monotonic() - started:.1f} s)",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return show


def _progress_done() -> None:
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)


def _report_from_posthog(args: argparse.Namespace, settings: Settings) -> int:
    key, project = settings.posthog_personal_api_key, settings.posthog_project_id
    if key is None or not key.get_secret_value() or not project:
        print(
            "apiusage report --posthog: set POSTHOG_PERSONAL_API_KEY (a personal API key with "
            "query read access) and POSTHOG_PROJECT_ID",
            file=sys.stderr,
        )
        return 2
    if args.org or args.caller or args.since or args.until:
        print(
            "apiusage report --posthog: the window is --days; --org, --caller, --since and "
            "--until read the local store only",
            file=sys.stderr,
        )
        return 2
    try:
        summary = summarise_posthog(
            settings.posthog_app_host or app_host(settings.posthog_host),
            project,
            key.get_secret_value(),
            event_name=args.event_name or settings.event_name,
            days=args.days,
            journeys=_journeys(args.journey, settings),
            journey_window_days=settings.journey_window_days,
            deprecated_routes=[*settings.deprecated_routes, *args.deprecated],
        )
    except (PostHogQueryError, _BadInput) as exc:
        print(f"apiusage report --posthog: {exc}", file=sys.stderr)
        return 2
    return _print_summary(summary, args)


def _journeys(asked: list[str], settings: Settings) -> dict[str, list[str]]:
    """``--journey`` values (steps, or a configured journey's name); none: all configured."""
    if not asked:
        return {name: list(steps) for name, steps in settings.journeys.items()}
    journeys: dict[str, list[str]] = {}
    for value in asked:
        if value in settings.journeys:
            journeys[value] = list(settings.journeys[value])
            continue
        steps = [step.strip() for step in value.split(",") if step.strip()]
        if len(steps) < 2:
            raise _BadInput(
                f"--journey {value!r}: name at least two journey events, comma-separated, or "
                f"a journey of APIUSAGE_JOURNEYS ({', '.join(settings.journeys) or 'none set'})"
            )
        journeys[" → ".join(steps)] = steps
    return journeys


class _BadInput(Exception):
    """Input the parser could not check: one line, exit status 2."""


def _route_entry(text: str) -> str:
    try:
        parse_route_entry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_AGE_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "w": 604_800.0}


def _moment(text: str) -> float:
    """``--since`` / ``--until``: an ISO date or time (UTC unless it names an offset), or an
    age back from now (``7d``, ``12h``, ``30m``, ``2w``); seconds since the epoch."""
    value = text.strip()
    unit = _AGE_UNITS.get(value[-1:].lower())
    if unit is not None and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * unit
    try:
        return parse_date(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO date or time (2026-11-01, 2026-11-01T12:00) nor an "
            "age (7d, 12h, 30m)"
        ) from None


def _health(settings: Settings, store: Path, *, as_json: bool) -> int:
    report: dict[str, Any] = {}
    if settings.uses_posthog:
        assert settings.posthog_api_key is not None
        report["destination"] = f"PostHog at {settings.posthog_host}"
        from apiusage.backends import spool_for  # the report does not need it

        spool = spool_for(settings, settings.posthog_api_key.get_secret_value())
        report["spool"] = None if spool is None else {"path": str(spool.path), **spool.status()}
    else:
        report["destination"] = f"local store at {store}"
    report["store"] = None
    health = delivery_health(store) if Path(store).exists() else None
    endpoints: list[EndpointUsage] = []
    if health is not None:
        report["store"] = {"path": str(store), "processes": health.processes, **health.counters}
        endpoints = summarise(store).endpoints
        report["anonymous_by_route"] = [
            {"method": e.method, "route": e.route, "requests": e.requests, "anonymous": e.anonymous}
            for e in anonymous_routes(endpoints)
        ]
    spooled = report.get("spool") or {}
    stored = report["store"] or {}
    delivery_trouble = bool(
        spooled.get("waiting") or spooled.get("rejected") or stored.get("dropped")
    )
    callers_trouble = caller_trouble(stored)
    trouble = delivery_trouble or callers_trouble
    if as_json:
        print(json.dumps({**report, "healthy": not trouble}, indent=2))
        return NOT_HEALTHY if trouble else 0
    print(f"events go to: {report['destination']}")
    if "spool" in report:
        if report["spool"] is None:
            print("spool: off (events PostHog cannot take after every attempt are dropped)")
        else:
            print(f"spool: {spooled['path']}")
            oldest = spooled["oldest_waiting_at"]
            age = f", the oldest for {time.time() - oldest:.0f} s" if oldest else ""
            print(f"  waiting for PostHog: {spooled['waiting']} events{age}")
            print(f"  refused by PostHog (kept aside, not retried): {spooled['rejected']}")
            for reason, count in spooled["rejected_by_reason"].items():
                print(f"    {count}: {reason}")
    if health is not None:
        for line in format_delivery(health):
            print(line)
        for line in format_callers(health.counters, endpoints):
            print(line)
    if not trouble:
        print("healthy")
    else:
        problems = [
            "events wait, were refused or were dropped" if delivery_trouble else "",
            "callers could not be read" if callers_trouble else "",
        ]
        print("NOT HEALTHY: " + "; ".join(problem for problem in problems if problem))
    return NOT_HEALTHY if trouble else 0
