"""The package under test is the one the session meant to test."""

from __future__ import annotations

import os

import apiusage


def test_installed_from_wheel_when_asked() -> None:
    """In the wheel session, the package under test must be the installed wheel."""
    if os.environ.get("APIUSAGE_TEST_INSTALLED_WHEEL"):
        assert "site-packages" in apiusage.__file__, apiusage.__file__
    assert apiusage.__version__
