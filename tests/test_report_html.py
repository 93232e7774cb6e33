"""The HTML report, opened in a real headless Chromium (Debian's, driven by Playwright).

Checks that every chart is drawn, that the page logs no console error and asks the
network for nothing (it must work offline), and keeps a screenshot in
``build/report-html.png`` (out of git) for a person to look at.

Chromium comes from Debian's ``chromium`` package (``nox -s tests`` installs it where it
can); without it the test is skipped, unless ``APIUSAGE_REQUIRE_BROWSER`` is set, as CI
does, and then it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.usage_data import JOURNEY, UsageHistory, generate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "build"

if CHROMIUM is None and os.environ.get("APIUSAGE_REQUIRE_BROWSER"):
    pytest.fail("APIUSAGE_REQUIRE_BROWSER is set but no chromium is installed", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

#: Chromium's own background traffic (updates, sync …) would look like the page's.
_QUIET = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, UsageHistory]:
    folder = tmp_path_factory.mktemp("html")
    history = generate(folder / "events.sqlite3", events=4_000, organisations=12, routes=12)
    page = folder / "report.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "apiusage",
            "report",
            "--store",
            str(history.store),
            "--journey",
            ",".join(JOURNEY),
            "--html",
            str(page),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert str(page) in result.stdout
    return page, history


def test_the_page_draws_every_chart_offline_without_errors(
    page_file: tuple[Path, UsageHistory],
) -> None:
    from playwright.sync_api import sync_playwright

    page_path, history = page_file
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=_QUIET)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            sections = page.locator("section h2").all_inner_texts()
            charts = {
                title: page.locator(f"section:has(h2:text-is('{title}')) svg rect.bar").count()
                for title in sections
            }
            text = page.inner_text("body")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report-html.png"), full_page=True)
        finally:
            browser.close()

    assert errors == []
    assert requests == [page_path.as_uri()]  # the page itself, and nothing else
    assert sections == [
        "Endpoint usage",
        "API version adoption",
        "Authentication methods",
        "Journey funnels",
        "Deprecated endpoints by organisation",
        "Feature flags",
    ]
    assert all(count > 0 for count in charts.values()), charts
    # One bar per endpoint called, per auth method, per funnel step.
    assert charts["Endpoint usage"] == len(history.by_route)
    assert charts["Journey funnels"] == len(JOURNEY)
    for method, route in history.never_called:
        assert f"{method} {route}" in text
    for method, route in history.deprecated:
        assert f"{method} {route}" in text
    assert (ARTIFACTS / "report-html.png").stat().st_size > 10_000
