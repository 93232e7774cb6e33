"""Run the frameworks' own released test suites bare and wrapped by apiusage; compare.

``nox -s transparency`` runs this inside a venv holding apiusage, the frameworks and their
suites' test dependencies. For each framework it:

1. reads the installed version and takes that version's source distribution from PyPI
   (``pip download --no-binary :all: --no-deps``; kept in ``--work/sdists`` afterwards);
2. extracts the suite (``tests/`` and what it reads, never the framework's own package
   source, so the installed framework is the one tested);
3. runs it bare, then once per wrapping mode with ``-p transparency_plugin``;
4. compares the outcomes per test id: a test that passes bare and does not pass wrapped
   is a new failure.

It exits non-zero when there is a new failure not listed in ``KNOWN_FAILURES``, when a
listed one passes again (so the list only shrinks), when apiusage counted an internal or
resolver error in a wrapped run, or when a wrapped run recorded no request (no wrapping
happened). ``python run.py --help`` lists the options.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Suite:
    name: str  # the distribution on PyPI
    modes: tuple[str, ...]  # the plugin's --apiusage-wrap modes to run
    extract: tuple[str, ...] = ("tests/", "pyproject.toml")  # members of the sdist to keep
    pythonpath: tuple[str, ...] = ()  # relative to the suite's directory
    args: tuple[str, ...] = ()  # extra pytest arguments, the same for every run
    # test-id prefix -> why it is not run (the same for bare and wrapped runs)
    deselect: dict[str, str] = field(default_factory=dict)
    # test module -> why it is not even collected
    ignore: dict[str, str] = field(default_factory=dict)


SUITES = {
    "starlette": Suite("starlette", modes=("middleware", "adapter")),
    "flask": Suite("flask", modes=("extension",)),
    "fastapi": Suite(
        "fastapi",
        modes=("middleware", "adapter"),
        # The tutorial tests import docs_src; two read docs/en/docs/img/favicon.png.
        extract=("tests/", "docs_src/", "docs/en/docs/img/", "pyproject.toml"),
        pythonpath=("docs_src",),  # as FastAPI's scripts/test.sh
        # FastAPI's suite is written for xdist (scripts/test.sh: -n auto --dist loadgroup).
        args=("-n", "2", "--dist", "loadgroup", "--apiusage-deselect-subprocess"),
        deselect={
            "tests/test_fastapi_cli.py::test_fastapi_cli": (
                "runs `coverage run -m fastapi dev` in a subprocess, where nothing is wrapped"
            ),
        },
        ignore={
            "tests/test_translate.py": "FastAPI's translation scripts (scripts/, git); no app",
            "tests/test_prepare_release.py": "FastAPI's release script (scripts/); no app",
        },
    ),
}

# (framework, test id) -> the apiusage bug that makes it fail wrapped. The session reports
# these as known and does not fail on them; an entry whose test passes again fails the
# session until it is removed. The goal is an empty list.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}

# Settings from the developer's environment must not change how apiusage behaves here.
_STRIPPED_ENV_PREFIXES = ("APIUSAGE_", "POSTHOG_")


def log(message: str = "") -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------ the suites
def sdist(name: str, release: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    for candidate in cache.glob("*.tar.gz"):
        stem = candidate.name[: -len(".tar.gz")]
        base, _, found = stem.rpartition("-")
        if found == release and base.replace("_", "-").lower() == name:
            return candidate
    log(f"downloading the {name} {release} source distribution")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--dest",
            str(cache),
            f"{name}=={release}",
        ],
        check=True,
    )
    return sdist(name, release, cache)


def extract(archive: Path, suite: Suite, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            _, _, inner = member.name.partition("/")
            wanted = any(
                inner == keep.rstrip("/") or (keep.endswith("/") and inner.startswith(keep))
                for keep in suite.extract
            )
            if wanted:
                member.name = inner
                members.append(member)
        tar.extractall(target, members=members, filter="data")
    if not (target / "tests").is_dir():
        raise SystemExit(f"{archive.name} has no tests/ directory")


Outcomes = dict[str, dict[str, str]]  # test id -> {"outcome": ..., "message": ...}


def run_pytest(suite: Suite, directory: Path, report: Path, mode: str | None) -> Outcomes:
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_STRIPPED_ENV_PREFIXES)
    }
    paths = [str(HERE), *(str(directory / path) for path in suite.pythonpath)]
    environ["PYTHONPATH"] = os.pathsep.join(paths)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "transparency_plugin",
        f"--apiusage-report={report}",
        *suite.args,
        *(f"--deselect={prefix}" for prefix in suite.deselect),
        *(f"--ignore={path}" for path in suite.ignore),
    ]
    if mode is not None:
        command.append(f"--apiusage-wrap={mode}")
    command.append("tests")
    for old in report.parent.glob(report.name + ".*"):
        old.unlink()
    log_file = report.with_name(report.name + ".log")
    started = time.monotonic()
    with log_file.open("w") as output:
        result = subprocess.run(
            command, cwd=directory, env=environ, stdout=output, stderr=subprocess.STDOUT
        )
    took = time.monotonic() - started
    lines = [line for line in log_file.read_text().splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    log(f"  {mode or 'bare':<10} {took:6.1f} s  exit {result.returncode}  {summary}")
    if result.returncode not in (0, 1):  # 1: some tests failed; anything else: no result
        raise SystemExit(f"pytest did not run the {suite.name} suite properly; see {log_file}")
    outcomes: Outcomes = json.loads(report.with_name(report.name + ".outcomes.json").read_text())
    return outcomes


def wrapped_stats(report: Path) -> dict[str, object]:
    """The plugin's counters, summed over the processes (xdist workers) of one run."""
    total: dict[str, object] = {
        "clients": 0,
        "wrapped_asgi_apps": 0,
        "wrapped_flask_apps": 0,
        "events": 0,
        "flush_failures": 0,
        "threads": 0,  # the most in one process, at the end of the run
        "open_fds": 0,
        "counters": {},
        "errors": [],
    }
    for path in sorted(report.parent.glob(report.name + ".stats.*.json")):
        stats = json.loads(path.read_text())
        for key in (
            "clients",
            "wrapped_asgi_apps",
            "wrapped_flask_apps",
            "events",
            "flush_failures",
        ):
            total[key] += stats[key]  # type: ignore[operator]
        for key in ("threads", "open_fds"):
            total[key] = max(total[key], stats[key])  # type: ignore[call-overload]
        counters: dict[str, int] = total["counters"]  # type: ignore[assignment]
        for name, value in stats["counters"].items():
            counters[name] = counters.get(name, 0) + value
        total["errors"] += stats["errors"]  # type: ignore[operator]
    return total


# ---------------------------------------------------------------------- comparison
def outcome(outcomes: Outcomes, test: str) -> str:
    return outcomes.get(test, {}).get("outcome", "not run")


def message(outcomes: Outcomes, test: str) -> str:
    return outcomes.get(test, {}).get("message", "")


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


def passed(outcomes: Outcomes) -> set[str]:
    return {test for test in outcomes if outcome(outcomes, test) == "passed"}


def check_suite(name: str, suite: Suite, work: Path, problems: list[str]) -> dict[str, object]:
    release = version(name)
    log(f"\n== {name} {release}")
    archive = sdist(name, release, work / "sdists")
    directory = work / "suites" / f"{name}-{release}"
    extract(archive, suite, directory)
    reports = work / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    for prefix, reason in {**suite.deselect, **suite.ignore}.items():
        log(f"  not run: {prefix}: {reason}")

    bare = run_pytest(suite, directory, reports / f"{name}-bare", None)
    bare_stats = wrapped_stats(reports / f"{name}-bare")
    bare_passed = passed(bare)
    bare_not_passed = sorted(
        test for test in bare if outcome(bare, test) in ("failed", "error", "xpassed")
    )
    result: dict[str, object] = {
        "version": release,
        "tests": len(bare),
        "passed_bare": len(bare_passed),
        "failed_bare": {test: message(bare, test) for test in bare_not_passed},
        "modes": {},
    }
    for test in bare_not_passed:
        log(f"  fails bare (not compared): {test}: {first_line(message(bare, test))}")

    for mode in suite.modes:
        report = reports / f"{name}-{mode}"
        wrapped = run_pytest(suite, directory, report, mode)
        stats = wrapped_stats(report)
        counters: dict[str, int] = stats["counters"]  # type: ignore[assignment]
        new_failures = sorted(test for test in bare_passed if outcome(wrapped, test) != "passed")
        known = [test for test in new_failures if (name, test) in KNOWN_FAILURES]
        unknown = [test for test in new_failures if (name, test) not in KNOWN_FAILURES]
        fixed = sorted(
            test
            for (framework, test) in KNOWN_FAILURES
            if framework == name and outcome(wrapped, test) == "passed"
        )
        errors = counters.get("internal_errors", 0) + counters.get("resolver_errors", 0)
        log(
            f"  {mode}: passed bare {len(bare_passed)}, passed wrapped {len(passed(wrapped))}, "
            f"new failures {len(new_failures)} ({len(known)} known); "
            f"{stats['wrapped_asgi_apps']} ASGI and {stats['wrapped_flask_apps']} Flask apps "
            f"wrapped, {stats['clients']} clients, "
            f"{counters.get('requests_recorded', 0)} requests recorded, "
            f"{stats['events']} events in the sink, internal_errors "
            f"{counters.get('internal_errors', 0)}, resolver_errors "
            f"{counters.get('resolver_errors', 0)}, dropped {counters.get('dropped', 0)}; "
            f"threads and open fds at the end: {stats['threads']} and {stats['open_fds']} "
            f"(bare: {bare_stats['threads']} and {bare_stats['open_fds']})"
        )
        for test in unknown:
            log(
                f"    NEW FAILURE {test} [{outcome(wrapped, test)}]: "
                f"{first_line(message(wrapped, test))}"
            )
            problems.append(f"{name} ({mode}): new failure {test}")
        for test in known:
            log(f"    known failure {test}: {KNOWN_FAILURES[(name, test)]}")
        for test in fixed:
            log(f"    FIXED: {test} passes wrapped; remove it from KNOWN_FAILURES")
            problems.append(f"{name} ({mode}): {test} passes: remove it from KNOWN_FAILURES")
        for error in stats["errors"]:  # type: ignore[attr-defined]
            log(
                f"    apiusage {error.get('counter', 'internal_errors')} in "
                f"{error['where']!r} during {error['test']}: {error['exception']}"
            )
            log("      " + error.get("traceback", "").strip().replace("\n", "\n      "))
        if errors:
            problems.append(f"{name} ({mode}): apiusage counted {errors} internal errors")
        if stats["flush_failures"]:
            problems.append(f"{name} ({mode}): {stats['flush_failures']} clients failed to flush")
        if not counters.get("requests_recorded") or not stats["events"]:
            problems.append(f"{name} ({mode}): apiusage recorded nothing: nothing was wrapped")
        result["modes"][mode] = {  # type: ignore[index]
            "passed_wrapped": len(passed(wrapped)),
            "new_failures": {test: message(wrapped, test) for test in new_failures},
            "known": known,
            "stats": {key: value for key, value in stats.items() if key != "errors"},
            "errors": stats["errors"],
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "frameworks", nargs="*", help=f"the suites to run, of {', '.join(SUITES)} (default: all)"
    )
    parser.add_argument(
        "--work", type=Path, required=True, help="directory for sdists, suites, reports"
    )
    options = parser.parse_args()
    names = options.frameworks or list(SUITES)
    unknown = sorted(set(names) - set(SUITES))
    if unknown:
        parser.error(f"no suite for {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    started = time.monotonic()
    problems: list[str] = []
    results = {
        name: check_suite(name, SUITES[name], options.work.resolve(), problems) for name in names
    }
    took = time.monotonic() - started
    (options.work / "summary.json").write_text(json.dumps(results, indent=1, sort_keys=True))

    log(f"\n== summary ({took:.0f} s)")
    for name, result in results.items():
        for mode, outcome in result["modes"].items():  # type: ignore[attr-defined]
            new = outcome["new_failures"]
            log(
                f"{name} {result['version']} [{mode}]: passed bare {result['passed_bare']}, "
                f"passed wrapped {outcome['passed_wrapped']}, new failures {len(new)}"
                + (f" ({len(outcome['known'])} known)" if outcome["known"] else "")
            )
            for test in new:
                log(f"    {test}")
    if problems:
        log("\nFAILED:")
        for problem in problems:
            log(f"  {problem}")
        return 1
    log("\nOK: every test that passes bare passes wrapped (known failures aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
