"""Developer tasks. `nox -s tests` is the test command; `nox -s demo` runs the demo.

Without nox installed, `python3 noxfile.py -s tests` works too, on any Python 3.11+: it
first puts nox and uv in a virtual environment of their own (`.nox/_tools`), which
a distribution's Python that refuses `pip install` (PEP 668: Debian 12, Ubuntu 24.04)
allows, and even one without `ensurepip` (`python3-venv` not installed): the venv is
then made without pip and the system's pip installs into it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def _run_with_nox() -> None:
    """Run this file again with a Python that has nox (and uv): this one, or a virtual
    environment made for them. Returns only when this Python has both."""
    try:
        import nox  # noqa: F401
        import uv  # noqa: F401
    except ImportError:
        pass
    else:
        return
    tools = Path(__file__).resolve().parent / ".nox" / "_tools"
    python = tools / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        print(f"noxfile.py: installing nox and uv into {tools}", file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(tools)], check=False)
        if made.returncode == 0:
            install = [str(python), "-m", "pip", "install"]
        else:  # no ensurepip here: a venv without pip, filled by this Python's pip
            shutil.rmtree(tools, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tools)], check=True)
            install = [sys.executable, "-m", "pip", "--python", str(python), "install"]
        installed = subprocess.run([*install, "--quiet", "nox", "uv"], check=False)
        if installed.returncode != 0:
            shutil.rmtree(tools, ignore_errors=True)
            raise SystemExit(
                "noxfile.py: could not install nox and uv (above). Install them yourself "
                "(pip install nox uv, or pipx install nox) and run: nox -s tests"
            )
    os.execv(python, [str(python), __file__, *sys.argv[1:]])


if __name__ == "__main__":
    _run_with_nox()

import nox  # noqa: E402

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


def _chromium(session: nox.Session) -> None:
    """Debian's Chromium, for the HTML report's browser test: installed with apt-get when
    it is missing and this runs as root (CI, containers); otherwise that test is skipped
    and this says why (CI sets APIUSAGE_REQUIRE_BROWSER, which makes it fail instead)."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        session.log("chromium is not installed: the HTML report's browser test is skipped")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    try:
        session.run(*command, env=env, external=True)
    except Exception:  # stale package lists on a fresh image: refresh them once
        session.run("apt-get", "update", env=env, external=True)
        session.run(*command, env=env, external=True)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite against the newest framework releases (editable install)."""
    _chromium(session)
    session.install("-e", ".", "--group", "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON, venv_backend="uv")
def tests_oldest(session: nox.Session) -> None:
    """The test suite against the oldest versions we declare supported (lowest-direct)."""
    session.install(
        "--resolution",
        "lowest-direct",
        "-e",
        ".[fastapi,starlette,flask,django]",
        "--group",
        "test",
    )
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def tests_wheel(session: nox.Session) -> None:
    """The test suite against the built wheel, installed like a user would."""
    _chromium(session)
    dist = tempfile.mkdtemp(prefix="apiusage-dist-")
    session.run("uv", "build", "--wheel", "--out-dir", dist, external=True)
    wheel = glob.glob(os.path.join(dist, "*.whl"))[0]
    session.install("--reinstall-package", "apiusage", wheel, "--group", "test")
    session.run("pytest", *session.posargs, env={"APIUSAGE_TEST_INSTALLED_WHEEL": "1"})
    shutil.rmtree(dist, ignore_errors=True)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict over the package and adapters."""
    session.install("-e", ".", "--group", "typing")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation strictly (any warning fails)."""
    session.install("-e", ".", "--group", "docs")
    site = os.path.join(session.create_tmp(), "site")
    session.run("mkdocs", "build", "--strict", "--site-dir", site)


# What the frameworks' own test suites need (their pyproject.toml test groups), less the
# tools that only lint, type-check, measure coverage or benchmark.
TRANSPARENCY_DEPS = [
    # Flask 3.1.3's suite imports _pytest.monkeypatch.notset, gone in pytest 9.1; FastAPI's
    # wants pytest >= 9.0, < 9.2.
    "pytest>=9.0,<9.1",
    # Starlette: its `full` extra (httpx < 0.29, httpx2, multipart, jinja2 ...) and its dev group.
    "starlette[full]",
    "httpx2[zstd]",
    "blockbuster",
    "trio",
    "opentelemetry-sdk",
    "importlib-metadata",
    # Flask.
    "asgiref",
    "greenlet",
    "python-dotenv",
    # FastAPI.
    "anyio[trio]",
    "a2wsgi>=1.9,<=2.0",
    "coverage[toml]",
    "dirty-equals",
    "email-validator",
    "fastapi-cli",
    "inline-snapshot",
    "logfire",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-fastapi",
    "orjson",
    "pwdlib[argon2]",
    "pydantic-extra-types",
    "pydantic-settings",
    "pyjwt",
    "pytest-timeout",
    "pytest-xdist",
    "python-slugify",
    "pyyaml",
    "sentry-sdk",
    "sqlmodel",
    "strawberry-graphql<1",
    "typer",
    "ujson",
    "uvicorn",
    # run.py downloads the suites' source distributions with pip.
    "pip",
]


@nox.session(python=PYTHON)
def transparency(session: nox.Session) -> None:
    """The released test suites of Starlette, Flask and FastAPI, bare and with every app
    wrapped by apiusage: a test that passes bare must pass wrapped (docs/transparency.md).
    `nox -s transparency -- flask` runs one suite."""
    session.install("-e", ".[starlette,fastapi,flask]", *TRANSPARENCY_DEPS)
    # Not inside the venv (.nox/transparency): Flask's instance-path tests take a module
    # under sys.prefix for an installed one.
    work = os.path.join(".nox", "transparency-work")
    session.run("python", "tests/transparency/run.py", "--work", work, *session.posargs)


BENCHMARKS = {
    "overhead": "benchmarks/bench_overhead.py",  # the request path, in-process
    "total": "benchmarks/bench_total.py",  # total CPU per request, delivery included
    "server": "benchmarks/bench_server.py",  # real servers under load (needs wrk)
    "memory": "benchmarks/bench_memory.py",  # bytes per queued record
    "faults": "benchmarks/bench_faults.py",  # loss and cost per flush strategy under faults
    "report": "benchmarks/bench_report.py",  # store size and report time at 1M events
    "flags": "benchmarks/bench_flags.py",  # apiusage.flag() against the posthog client
    "instructions": "benchmarks/instructions.py",  # request path under callgrind
    "total_instructions": "benchmarks/total_instructions.py",  # whole process, callgrind
}


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: `nox -s bench` runs overhead, total, server and memory (about 20 min);
    `nox -s bench -- total --quick` runs one, with its own options."""
    session.install("-e", ".", "--group", "test")
    if session.posargs and session.posargs[0] in BENCHMARKS:
        names, options = [session.posargs[0]], list(session.posargs[1:])
    else:
        names, options = ["overhead", "total", "server", "memory"], list(session.posargs)
    for name in names:
        session.run("python", BENCHMARKS[name], *options)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """A sample API instrumented with apiusage, traffic from a few callers, and the report."""
    session.install("-e", ".", "--group", "test")
    session.run("python", "docs/examples/demo.py", *session.posargs)


if __name__ == "__main__":
    nox.main()
