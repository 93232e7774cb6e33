"""pytest plugin: run a framework's own test suite with every app it builds wrapped by apiusage.

Loaded by ``run.py`` with ``-p transparency_plugin`` into the released test suites of
Starlette, FastAPI and Flask (never into apiusage's own test run: its name does not match
``test_*.py`` and no conftest imports it).

``--apiusage-report=PATH`` (bare and wrapped runs)
    Writes ``PATH.outcomes.json`` (one outcome per test id, with the failure's message)
    and ``PATH.stats.<process>.json`` (apiusage's counters; one file per xdist worker).

``--apiusage-wrap=middleware`` (a wrapped run)
    Every app handed to Starlette's ``TestClient`` (which FastAPI's is) and to httpx's
    ``ASGITransport`` is wrapped in ``apiusage.ASGIMiddleware(app, client=<shared>)``: raw
    ASGI callables, ASGI 2 apps, endpoints and routers as well as whole applications.

``--apiusage-wrap=adapter`` (a wrapped run)
    Every ``Starlette`` (and so every ``FastAPI``) app gets the framework's adapter,
    ``starlette_apiusage.ApiUsage(app, client=<shared>)`` or
    ``fastapi_apiusage.ApiUsage(...)``, at the end of its ``__init__``, the way an
    application installs it: inside the app, around its whole middleware stack.

``--apiusage-wrap=extension`` (a wrapped run)
    Only Flask apps are wrapped, as in every mode: every ``flask.Flask`` gets the Flask
    extension, ``flask_apiusage.ApiUsage(app)``, at the end of its ``__init__`` (one client
    per app, as in an application).

    Every client delivers to one :class:`~apiusage.sinks.memory.MemorySink` and has an
    ``identity_secret``, so nothing touches the network or the disk. At the end of the run
    the clients are flushed and their counters summed: ``run.py`` fails the session when
    apiusage counted an internal or resolver error, or recorded no request at all.

Both runs close, at the end of each test, the werkzeug test responses the test left open.
A WSGI server closes every response; werkzeug's test client closes only buffered ones, and
apiusage's WSGI middleware records a request when its response is closed. Without this,
most Flask requests of the wrapped run would never reach the end of apiusage's request
path. The bare run does the same, so the two runs differ only by apiusage.

``--apiusage-deselect-subprocess``
    Deselects tests that run their body in a fresh interpreter (FastAPI's telemetry tests
    decorated with ``run_in_subprocess``): the plugin is not loaded there, so the wrapped
    run would repeat the bare one, at about 3.5 s a test.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

SECRET = "apiusage-transparency-harness-secret"

_state: dict[str, Any] = {
    "clients": [],  # every distinct UsageClient: apps with one configuration share one
    "sink": None,
    "shared": None,  # the UsageClient shared by every wrapped ASGI app
    "errors": [],  # the internal errors apiusage counted, with the test that was running
    "current": None,  # the test id being run
    "wrapped_asgi": 0,
    "wrapped_flask": 0,
}
_lock = threading.Lock()
_MAX_ERRORS_KEPT = 200


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("apiusage-transparency")
    group.addoption(
        "--apiusage-wrap",
        choices=("middleware", "adapter", "extension"),
        default=None,
        help="wrap every app in apiusage: at the test client, with the adapters, or Flask only",
    )
    group.addoption("--apiusage-report", default=None, help="where to write outcomes and stats")
    group.addoption(
        "--apiusage-deselect-subprocess",
        action="store_true",
        help="deselect tests whose body runs in a subprocess (not wrapped there)",
    )


# ----------------------------------------------------------------------------- wrapping
def _sink() -> Any:
    if _state["sink"] is None:
        from apiusage.sinks.memory import MemorySink

        _state["sink"] = MemorySink()
    return _state["sink"]


def _shared_client() -> Any:
    if _state["shared"] is None:
        from apiusage import UsageClient

        client = UsageClient(sink=_sink(), identity_secret=SECRET)
        _state["shared"] = client
        _state["clients"].append(client)
    return _state["shared"]


def _wrap_asgi(app: Any) -> Any:
    from apiusage import ASGIMiddleware

    with _lock:
        _state["wrapped_asgi"] += 1
    return ASGIMiddleware(app, client=_shared_client())


def _patch_asgi_test_client(cls: Any) -> None:
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, app: Any, *args: Any, **kwargs: Any) -> None:
        original(self, _wrap_asgi(app), *args, **kwargs)

    cls.__init__ = __init__


def _patch_asgi_transport(cls: Any) -> None:
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "app" in kwargs:
            kwargs["app"] = _wrap_asgi(kwargs["app"])
        elif args:
            args = (_wrap_asgi(args[0]), *args[1:])
        original(self, *args, **kwargs)

    cls.__init__ = __init__


def _patch_flask(flask_cls: Any) -> None:
    from flask_apiusage import ApiUsage

    original = flask_cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if "apiusage" in getattr(self, "extensions", {}):
            return
        ApiUsage(self, sink=_sink(), identity_secret=SECRET)
        client = ApiUsage.client_for(self)
        with _lock:
            if not any(known is client for known in _state["clients"]):  # apps share one
                _state["clients"].append(client)
            _state["wrapped_flask"] += 1

    flask_cls.__init__ = __init__


def _patch_starlette_apps(app_cls: Any) -> None:
    """Install the Starlette or FastAPI adapter at the end of every app's ``__init__``.

    Patched on ``Starlette`` and on ``FastAPI``, whose ``__init__`` does not call
    Starlette's.
    """
    import starlette_apiusage

    try:
        from fastapi import FastAPI

        import fastapi_apiusage
    except ImportError:
        FastAPI = None

    original = app_cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if getattr(self, "_apiusage", None) is not None:
            return
        adapter = (
            fastapi_apiusage.ApiUsage
            if FastAPI is not None and isinstance(self, FastAPI)
            else starlette_apiusage.ApiUsage
        )
        adapter(self, client=_shared_client())
        with _lock:
            _state["wrapped_asgi"] += 1

    app_cls.__init__ = __init__


def _patch_stats_error() -> None:
    """Keep each internal error apiusage counts, with the test that was running."""
    from apiusage.health import Stats

    original = Stats.error

    @functools.wraps(original)
    def error(self: Any, where: str, exc: BaseException, **kwargs: Any) -> None:
        with _lock:
            if len(_state["errors"]) < _MAX_ERRORS_KEPT:
                _state["errors"].append(
                    {
                        "test": _state["current"],
                        "where": where,
                        "counter": kwargs.get("counter", "internal_errors"),
                        "exception": f"{type(exc).__name__}: {exc}",
                        "traceback": "".join(
                            traceback.format_exception(type(exc), exc, exc.__traceback__)
                        )[-3000:],
                    }
                )
        original(self, where, exc, **kwargs)

    Stats.error = error  # type: ignore[method-assign]


def _install_wrapping(mode: str) -> None:
    _patch_stats_error()
    if mode == "extension":
        pass  # Flask apps only
    elif mode == "adapter":
        for module_name, class_name in (
            ("starlette.applications", "Starlette"),
            ("fastapi.applications", "FastAPI"),
        ):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            _patch_starlette_apps(getattr(module, class_name))
    else:
        _install_asgi_middleware()
    try:
        from flask import Flask
    except ImportError:
        pass
    else:
        _patch_flask(Flask)


def _install_asgi_middleware() -> None:
    try:
        from starlette.testclient import TestClient
    except ImportError:
        pass
    else:
        _patch_asgi_test_client(TestClient)
    for module_name in ("httpx", "httpx2"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        transport = getattr(module, "ASGITransport", None)
        if transport is not None and not getattr(transport, "_apiusage_patched", False):
            _patch_asgi_transport(transport)
            transport._apiusage_patched = True


_open_responses: list[Any] = []


def _patch_test_responses() -> None:
    """Keep the werkzeug test responses made during a test, to close those left open."""
    try:
        from werkzeug.test import TestResponse
    except ImportError:
        return
    original_init = TestResponse.__init__
    original_close = TestResponse.close

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _open_responses.append(self)

    @functools.wraps(original_close)
    def close(self: Any) -> None:
        self._transparency_closed = True
        original_close(self)

    TestResponse.__init__ = __init__  # type: ignore[method-assign]
    TestResponse.close = close  # type: ignore[method-assign]


def _close_open_responses() -> None:
    responses = list(_open_responses)
    _open_responses.clear()
    for response in responses:
        if not getattr(response, "_transparency_closed", False):
            response.close()


def pytest_configure(config: pytest.Config) -> None:
    _patch_test_responses()
    mode = config.getoption("--apiusage-wrap")
    if mode is not None:
        _install_wrapping(mode)


# ------------------------------------------------------------------------ selection
def _runs_in_subprocess(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    code = getattr(function, "__code__", None)
    return code is not None and Path(code.co_filename).name == "_subprocess.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--apiusage-deselect-subprocess"):
        return
    deselected = [item for item in items if _runs_in_subprocess(item)]
    if deselected:
        items[:] = [item for item in items if not _runs_in_subprocess(item)]
        config.hook.pytest_deselected(items=deselected)


# ------------------------------------------------------------------------- outcomes
_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 2, "failed": 3, "error": 3}
_outcomes: dict[str, dict[str, str]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    error: Exception | None = None
    try:
        _close_open_responses()  # as the server would have, after the test's requests
    except Exception as exc:  # reported as the test's teardown error, after the fixtures
        error = exc
    result = yield
    if error is not None:
        raise error
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    _state["current"] = item.nodeid
    try:
        return (yield)
    finally:
        _state["current"] = None


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)[:500]
    return str(report.longrepr)[-500:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        outcome = "failed" if report.when == "call" else "error"
    elif report.skipped:
        outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    elif report.when == "call":
        outcome = "xpassed" if hasattr(report, "wasxfail") else "passed"
    else:
        return
    previous = _outcomes.get(report.nodeid)
    if previous is None or _RANK[outcome] > _RANK[previous["outcome"]]:
        entry = {"outcome": outcome, "when": report.when}
        if outcome in ("failed", "error"):
            entry["message"] = _message(report)
        _outcomes[report.nodeid] = entry


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:  # a module that cannot be imported: its tests are missing
        _outcomes[report.nodeid] = {
            "outcome": "error",
            "when": "collect",
            "message": _message(report),
        }


def _flushed_stats() -> dict[str, Any]:
    totals: dict[str, int] = {}
    flush_failures = 0
    for client in _state["clients"]:
        try:
            if not client.flush(10.0):
                flush_failures += 1
        except Exception as exc:  # flush() must not raise: run.py fails the session
            flush_failures += 1
            _state["errors"].append(
                {"test": None, "where": "flush() at the end of the run", "exception": repr(exc)}
            )
        for name, value in client.stats.snapshot().items():
            totals[name] = totals.get(name, 0) + value
    sink = _state["sink"]
    return {
        "clients": len(_state["clients"]),
        "wrapped_asgi_apps": _state["wrapped_asgi"],
        "wrapped_flask_apps": _state["wrapped_flask"],
        "events": len(sink.events) if sink is not None else 0,
        "counters": totals,
        "flush_failures": flush_failures,
        "errors": _state["errors"],
        "threads": threading.active_count(),
        "open_fds": _open_fds(),
    }


def _open_fds() -> int:
    """File descriptors open at the end of the run (-1 where /proc is not there)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    report = config.getoption("--apiusage-report")
    wrapped = config.getoption("--apiusage-wrap") is not None
    worker = getattr(config, "workerinput", None)
    stats = _flushed_stats()  # in the bare run: no clients, but the threads and fds
    if report:
        base = Path(report)
        base.parent.mkdir(parents=True, exist_ok=True)
        if worker is None:
            base.with_name(base.name + ".outcomes.json").write_text(
                json.dumps(_outcomes, indent=1, sort_keys=True)
            )
        name = worker["workerid"] if worker is not None else "main"
        base.with_name(f"{base.name}.stats.{name}.json").write_text(
            json.dumps(stats, indent=1, sort_keys=True)
        )
    if wrapped and worker is None:
        counters = stats["counters"]
        print(
            f"\napiusage transparency (this process): {stats['clients']} clients, "
            f"{counters.get('requests_recorded', 0)} requests recorded, "
            f"{stats['events']} events, internal_errors={counters.get('internal_errors', 0)}, "
            f"resolver_errors={counters.get('resolver_errors', 0)}"
        )
