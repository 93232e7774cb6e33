"""The ``apiusage`` command: ``apiusage report`` prints the usage summary of the local store."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from apiusage.config import ConfigurationError, load_settings
from apiusage.report import format_summary, summarise

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apiusage", description="How your API is used.")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="print the usage summary from the local store")
    report.add_argument(
        "--store",
        type=Path,
        help="SQLite store (default: APIUSAGE_STORE or .apiusage/events.sqlite3)",
    )
    report.add_argument(
        "--event-name", help="name of the request event (default: APIUSAGE_EVENT_NAME)"
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    store = args.store or settings.store
    try:
        summary = summarise(store, args.event_name or settings.event_name)
    except FileNotFoundError:
        print(
            f"apiusage: no local store at {store}; has an instrumented app run here?",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(summary), indent=2))
    else:
        print(format_summary(summary))
    return 0
