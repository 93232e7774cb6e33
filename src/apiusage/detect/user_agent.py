"""The caller's client library from its User-Agent.

``python-requests/2.32.3`` becomes ``("python-requests", "2.32")``.

Only the library name and its major.minor version are kept: low cardinality, and no
free-form text from the caller reaches the event.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["parse_client_library"]

_PRODUCT = re.compile(r"([A-Za-z][A-Za-z0-9._+-]{0,63})/v?(\d{1,9})(?:\.(\d{1,9}))?")
# Tokens that name a runtime or platform rather than the library that made the call.
_PLATFORM_TOKENS = frozenset({"python", "cpython", "pypy", "mozilla", "node", "linux", "darwin"})
_BROWSER_MARKERS = ("Gecko/", "AppleWebKit/", "Trident/", "Chrome/", "Safari/")
_ALIASES = {
    "python-urllib": "python-urllib",
    "java-http-client": "java-http-client",
    "go-http-client": "go-http-client",
    "postmanruntime": "postman",
}


@lru_cache(maxsize=1024)
def parse_client_library(user_agent: str | None) -> tuple[str | None, str | None]:
    """Return ``(library, major.minor)``; ``(None, None)`` without a User-Agent."""
    if not user_agent:
        return None, None
    text = user_agent.strip()[:512]
    if text.startswith("Mozilla/") and any(marker in text for marker in _BROWSER_MARKERS):
        return "browser", None
    products = _PRODUCT.findall(text)
    if not products:
        bare = text.split(None, 1)[0].lower() if text else ""
        return (
            ("other", None) if not re.fullmatch(r"[a-z][a-z0-9._-]{0,63}", bare) else (bare, None)
        )
    chosen = next(
        (product for product in products if product[0].lower() not in _PLATFORM_TOKENS),
        products[0],
    )
    name, major, minor = chosen
    library = name.lower()
    library = _ALIASES.get(library, library)
    version = f"{major}.{minor}" if minor else major
    return library, version
