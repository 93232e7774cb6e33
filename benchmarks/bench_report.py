"""The report at scale: store size per event and ``apiusage report`` time over a million events.

Writes a generated history (``tests/support/usage_data.py``: 300 organisations, 80 routes,
30 days, journeys, four auth methods, two API versions) through apiusage's real builder
into a local store, then times the report: the whole window, a window of ten days, one
organisation, the sign-up funnel, and the ``apiusage report --json --journey …`` command
end to end (a fresh process, start-up included).

    python benchmarks/bench_report.py                      # 1,000,000 events, about 2 minutes
    python benchmarks/bench_report.py --events 100000      # quicker
    python benchmarks/bench_report.py --store PATH         # keep the store there, reuse it
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.usage_data import DAY, JOURNEY, START, generate, store_size

from apiusage.report import summarise

#: Target: the whole report over a million events in under this many seconds.
TARGET_SECONDS = 3.0


def _timed(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` runs, seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--store", type=Path, help="time this store; written first when it does not exist"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as workdir:
        store = args.store or Path(workdir) / "events.sqlite3"
        if not store.exists():
            started = time.perf_counter()
            history = generate(store, events=args.events, organisations=300, routes=80)
            print(
                f"wrote {args.events:,} events ({history.requests:,} requests) in "
                f"{time.perf_counter() - started:.0f} s"
            )
        with sqlite3.connect(store) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (events,) = db.execute("SELECT COUNT(*) FROM event_rows").fetchone()
            (shapes,) = db.execute("SELECT COUNT(*) FROM event_shapes").fetchone()
        size = store_size(store)
        print(
            f"store: {size / 1e6:.1f} MB, {size / events:.0f} bytes per event "
            f"({events:,} events, {shapes:,} shapes)"
        )
        rows = [
            ("whole store", lambda: summarise(store)),
            ("ten days", lambda: summarise(store, since=START + 10 * DAY, until=START + 20 * DAY)),
            ("one organisation", lambda: summarise(store, organisation="org-005")),
        ]
        journey = ",".join(JOURNEY)
        rows.append(("the sign-up funnel", lambda: summarise(store, journeys={"signup": JOURNEY})))
        command = [
            *(sys.executable, "-m", "apiusage", "report", "--json", "--store", str(store)),
            *("--journey", journey),
        ]
        rows.append(
            (
                "apiusage report --json (a process)",
                lambda: subprocess.run(command, check=True, capture_output=True),
            )
        )
        results = {label: _timed(action, args.repeats) for label, action in rows}
        for label, seconds in results.items():
            print(f"  {label:<36} {seconds:6.2f} s (median of {args.repeats})")
        whole = results[rows[-1][0]]
        verdict = "PASS" if whole < TARGET_SECONDS or events < 1_000_000 else "MISS"
        print(
            f"{verdict}  the report over {events:,} events in {whole:.2f} s "
            f"(target < {TARGET_SECONDS:.0f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
