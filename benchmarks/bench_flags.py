"""The cost of ``apiusage.flag()`` on the request path, side by side with the ``posthog``
client's own local evaluation, in one run.

PostHog's definitions (a stand-in of its definitions endpoint, real HTTP; 20 flags: rollouts
by person and by organisation, multivariate, person-property conditions) are loaded into
a ``posthog`` client and into apiusage (its own client, the same definitions). Then, per
call, median of several rounds:

- ``posthog evaluate_flags(flag_keys=[key])``: the client's local evaluation of one flag,
  as a handler would call it for each flag it needs (``only_evaluate_locally=True``);
- ``posthog evaluate_flags(all)``: one snapshot of every flag, as PostHog recommends per
  request, then ``get_flag``;
- ``apiusage.flag(key)``, first call in a request: the caller read from the request (the
  user the app attached), the flag evaluated, the answer kept for the event;
- ``apiusage.flag(key)`` again in the same request;
- ``apiusage.flag(key)`` with apiusage's own definitions (no PostHog), first call;
- a flag with a person-property condition, which apiusage hands to the client's
  evaluator (plain rollouts it evaluates itself), both ways.

Targets: the first call no slower than the client's scoped local evaluation, and a
repeated call at least 10x cheaper than it.

    python benchmarks/bench_flags.py            # about 20 s
    python benchmarks/bench_flags.py --calls 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posthog import Posthog
from tests.support.capture_server import CaptureServer

import apiusage
from apiusage.attached import WatchedState
from apiusage.record import RequestRecord
from apiusage.recording import current
from apiusage.testing import MemorySink

FLAG_COUNT = 20
KEY = "flag-1"  # a rollout by organisation
#: A flag with a person-property condition: apiusage hands it to the client's evaluator.
CONDITIONAL = "flag-3"


def definitions() -> dict[str, Any]:
    """Twenty flags of the kinds an API team runs."""
    flags = []
    for number in range(FLAG_COUNT):
        filters: dict[str, Any] = {"groups": [{"properties": [], "rollout_percentage": 30}]}
        if number % 4 == 1:  # by organisation
            filters["aggregation_group_type_index"] = 0
        if number % 4 == 2:  # multivariate
            filters["multivariate"] = {
                "variants": [
                    {"key": "control", "rollout_percentage": 50},
                    {"key": "test", "rollout_percentage": 50},
                ]
            }
        if number % 4 == 3:  # a person-property condition
            filters["groups"] = [
                {
                    "properties": [
                        {"key": "plan", "value": ["pro"], "operator": "exact", "type": "person"}
                    ],
                    "rollout_percentage": 100,
                }
            ]
        flags.append(
            {"id": number + 1, "key": f"flag-{number}", "active": True, "filters": filters}
        )
    return {"flags": flags, "group_type_mapping": {"0": "organisation"}, "cohorts": {}}


Variant = tuple[Callable[[Any], object], int, Callable[[int], Any]]


def interleaved(variants: dict[str, Variant], rounds: int) -> dict[str, float]:
    """ns per call of each variant: the median of ``rounds`` rounds, the variants taking
    turns within each round, so that the machine's swings hit them alike. A variant is
    ``(action, calls, setup)``: ``action(setup(calls))`` makes ``calls`` calls and only
    it is timed (``setup`` makes what it needs, such as each request's record)."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (action, calls, setup) in variants.items():
            prepared = setup(calls)
            gc.collect()
            started = time.perf_counter_ns()
            action(prepared)
            results[name].append((time.perf_counter_ns() - started) / calls)
    return {name: statistics.median(times) for name, times in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with CaptureServer() as server:
        server.flags_key = "phs_bench"
        server.flag_definitions = definitions()
        posthog = Posthog("phc_bench", host=server.url, secret_key="phs_bench", send=False)
        posthog.load_feature_flags()
        usage = apiusage.UsageClient(
            posthog_api_key="phc_bench",
            posthog_host=server.url,
            posthog_flags_api_key="phs_bench",
            identity_secret="bench-flags-identity-secret",
            spool="off",
            catch_signals=False,
        )
        own = apiusage.UsageClient(
            sink=MemorySink(),
            identity_secret="bench-flags-identity-secret",
            flags={KEY: {"rollout": 30}},
            catch_signals=False,
        )
        remote = usage.flags.remote
        assert remote is not None
        deadline = time.monotonic() + 10
        while not remote.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert remote.ready, "the definitions did not arrive"

        # The caller as a resolver or identify() names it, with the person property the
        # conditional flag reads.
        user = apiusage.Identity("usr_42", organisation="org_7", person_properties={"plan": "pro"})

        def records(client: apiusage.UsageClient, count: int) -> list[RequestRecord]:
            made = []
            for _ in range(count):
                # What the ASGI middleware gives the app as scope["state"]: the user read
                # as the app attached it.
                state = WatchedState((), client.watched_attributes)
                state["user"] = user
                record = RequestRecord(
                    "asgi", "GET", "/v1/items", b"", [], {"type": "http", "state": state}
                )
                record.client = client
                made.append(record)
            return made

        def posthog_scoped(calls: int) -> None:
            for _ in range(calls):
                posthog.evaluate_flags(
                    "usr_42",
                    groups={"organisation": "org_7"},
                    only_evaluate_locally=True,
                    flag_keys=[KEY],
                ).get_flag(KEY, send_feature_flag_events=False)

        def posthog_snapshot(calls: int) -> None:
            for _ in range(calls):
                posthog.evaluate_flags(
                    "usr_42",
                    groups={"organisation": "org_7"},
                    only_evaluate_locally=True,
                ).get_flag(KEY, send_feature_flag_events=False)

        def first_call(prepared: list[RequestRecord], key: str = KEY) -> None:
            for record in prepared:
                token = current.set(record)
                apiusage.flag(key)
                current.reset(token)

        def posthog_conditional(calls: int) -> None:
            for _ in range(calls):
                posthog.evaluate_flags(
                    "usr_42",
                    groups={"organisation": "org_7"},
                    person_properties={"plan": "pro"},
                    only_evaluate_locally=True,
                    flag_keys=[CONDITIONAL],
                ).get_flag(CONDITIONAL, send_feature_flag_events=False)

        def repeated(calls: int) -> None:
            (record,) = records(usage, 1)
            token = current.set(record)
            apiusage.flag(KEY)
            try:
                for _ in range(calls):
                    apiusage.flag(KEY)
            finally:
                current.reset(token)

        calls = args.calls
        measured = interleaved(
            {
                "posthog evaluate_flags(flag_keys=[key])": (posthog_scoped, calls, int),
                "posthog evaluate_flags(all) + get_flag": (posthog_snapshot, calls // 5, int),
                "apiusage.flag(), first call in a request": (
                    first_call,
                    calls,
                    lambda count: records(usage, count),
                ),
                "apiusage.flag(), again in the request": (repeated, calls, int),
                "apiusage.flag(), own definitions, first call": (
                    first_call,
                    calls,
                    lambda count: records(own, count),
                ),
                "posthog evaluate_flags, property-condition flag": (
                    posthog_conditional,
                    calls,
                    int,
                ),
                "apiusage.flag(), property-condition flag, first": (
                    lambda prepared: first_call(prepared, CONDITIONAL),
                    calls,
                    lambda count: records(usage, count),
                ),
            },
            args.rounds,
        )
        posthog.shutdown()
        usage.close(5)
        own.close(5)

    print(f"{FLAG_COUNT} flags; {args.calls} calls per round, median of {args.rounds} rounds")
    print("(apiusage's first calls: each in a request of its own, its record made untimed)\n")
    print(f"{'variant':<48} {'µs per call':>12}")
    for name, nanoseconds in measured.items():
        print(f"{name:<48} {nanoseconds / 1000:>12.2f}")
    conditional = measured["apiusage.flag(), property-condition flag, first"]
    their_conditional = measured["posthog evaluate_flags, property-condition flag"]
    scoped = measured["posthog evaluate_flags(flag_keys=[key])"]
    first = measured["apiusage.flag(), first call in a request"]
    again = measured["apiusage.flag(), again in the request"]
    print("\nTargets:")
    print(
        f"{'PASS' if first <= scoped else 'MISS'}  first call {first / 1000:.2f} µs <= the "
        f"posthog client's local evaluation {scoped / 1000:.2f} µs ({first / scoped:.2f}x)"
    )
    print(
        f"{'PASS' if conditional <= their_conditional else 'MISS'}  first call of a "
        f"property-condition flag {conditional / 1000:.2f} µs <= the client's "
        f"{their_conditional / 1000:.2f} µs ({conditional / their_conditional:.2f}x)"
    )
    print(
        f"{'PASS' if again * 10 <= scoped else 'MISS'}  a repeated call {again / 1000:.3f} µs "
        f"is {scoped / again:.0f}x cheaper than the client's local evaluation (>= 10x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
