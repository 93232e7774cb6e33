"""Whether apiusage sees the app's callers: for ``apiusage health`` (``apiusage doctor``).

Two signs that the app's caller is not reaching apiusage, visible on the first day:
requests to which the app attached something that named no caller, or whose resolver
failed (counters the writing processes saved), and routes whose requests are anonymous
(401 and 403 responses, anonymous by design, are not counted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from apiusage.report.answers import EndpointUsage

__all__ = ["anonymous_routes", "caller_trouble", "format_callers"]

#: Routes listed, most anonymous first.
_SHOWN = 10


def anonymous_routes(endpoints: Sequence[EndpointUsage]) -> list[EndpointUsage]:
    """Endpoints with anonymous requests, the largest share first (then the most)."""
    found = [entry for entry in endpoints if entry.anonymous]
    return sorted(found, key=lambda e: (-e.anonymous / e.requests, -e.anonymous, e.route))


def caller_trouble(counters: Mapping[str, int]) -> bool:
    """True when a caller the app attached could not be read, or a resolver failed."""
    return bool(counters.get("callers_unresolved") or counters.get("resolver_errors"))


def format_callers(counters: Mapping[str, int], endpoints: Sequence[EndpointUsage]) -> list[str]:
    """Lines saying whether callers are seen, and what to do when they are not."""
    unresolved = counters.get("callers_unresolved", 0)
    errors = counters.get("resolver_errors", 0)
    lines = ["", "Callers", "-------"]
    lines.append(f"attached but named no caller: {unresolved}   identity resolver errors: {errors}")
    if unresolved:
        lines.append(
            "  the app attached users apiusage could not read an id from: the warning logged "
            "says which type, and how to fix it (docs: identity.md)"
        )
    if errors:
        lines.append(
            "  a resolver failed: the error logged says where; read the caller as the app "
            "authenticates it (docs: identity.md)"
        )
    anonymous = anonymous_routes(endpoints)
    if not anonymous:
        lines.append("every request named its caller (refused ones aside)")
        return lines
    lines.append("requests that named no caller, by route (401/403 not counted):")
    width = min(60, max(len(f"{e.method} {e.route}") for e in anonymous[:_SHOWN]))
    for entry in anonymous[:_SHOWN]:
        label = f"{entry.method} {entry.route}"[:width]
        share = entry.anonymous / entry.requests
        lines.append(f"  {label:<{width}}  {entry.anonymous:>8} of {entry.requests:<8} {share:.0%}")
    if len(anonymous) > _SHOWN:
        lines.append(f"  … and {len(anonymous) - _SHOWN} more routes")
    lines.append(
        "  public routes (sign-up, log-in) are anonymous; a route whose callers sign in "
        "should not be here: see docs/identity.md"
    )
    return lines
