"""The "no POSTHOG_API_KEY" notice: logged once per process group (a server's workers
and reloader), and never by a process that records nothing (``flask routes``,
``manage.py migrate``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

NOTICE = "no POSTHOG_API_KEY set"

RECORD = """
import sys
from werkzeug.test import Client
import apiusage

def app(environ, start_response):
    start_response("200 OK", [])
    return [b"."]

wrapped = apiusage.WSGIMiddleware(app, store=sys.argv[1])
if sys.argv[2] == "serve":
    Client(wrapped).get("/v1/items", buffered=True)
wrapped.client.close(5)
"""


def run(store: Path, mode: str, *, new_group: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RECORD, str(store), mode],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_group,
    )


def notices(*processes: subprocess.Popen[str]) -> list[int]:
    counts = []
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        counts.append(stderr.count(NOTICE))
    return counts


def test_the_store_notice_is_logged_once_per_process_group(tmp_path: Path) -> None:
    store = tmp_path / "events.sqlite3"
    # A command that serves no request says nothing, and does not use up the notice.
    assert notices(run(store, "idle")) == [0]
    # Workers of one server (one process group): one of them says it.
    assert sorted(notices(*[run(store, "serve") for _ in range(3)])) == [0, 0, 1]
    # The next start of the server (a new process group) says it again, once.
    assert notices(run(store, "serve", new_group=True)) == [1]
