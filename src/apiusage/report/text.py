"""The report as terminal tables."""

from __future__ import annotations

import time
from typing import Any

from apiusage.report.answers import DeprecatedCaller, UsageSummary
from apiusage.report.delivery import format_delivery

__all__ = ["format_summary"]


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def _table(title: str, header: list[str], rows: list[list[Any]], width: int) -> list[str]:
    lines = ["", title, "-" * len(title)]
    label, *rest = header
    lines.append(f"{label:<{width}} " + " ".join(f"{name:>9}" for name in rest))
    for first, *others in rows:
        text = str(first)
        text = text if len(text) <= width else text[: width - 1] + "…"
        lines.append(f"{text:<{width}} " + " ".join(f"{value!s:>9}" for value in others))
    return lines


def _rate(count: int, requests: int) -> str:
    """``count`` as a share of ``requests`` (4xx, 5xx, anonymous)."""
    return f"{count / requests:.1%}" if requests else "-"


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_summary(summary: UsageSummary, *, width: int = 44) -> str:
    """The summary as plain text tables."""
    window = f"{_when(summary.since)} to {_when(summary.until)} UTC"
    if summary.since is None and summary.until is None:
        window = f"all events ({_when(summary.first_seen)} to {_when(summary.last_seen)} UTC)"
    lines = [
        "API usage summary",
        "=================",
        f"window: {window}"
        + (f"   organisation: {summary.organisation}" if summary.organisation else "")
        + (f"   caller: {summary.caller}" if summary.caller else ""),
        f"requests: {summary.total_requests}   journey events: {summary.journey_events}   "
        f"identified callers: {summary.identified_callers}   "
        f"organisations: {summary.organisations}",
    ]
    total = summary.total_requests or 1

    def share(count: int) -> str:
        return f"{count / total:.0%}"

    lines += _table(
        "Endpoints, most used first",
        ["", "requests", "share", "callers", "anon", "orgs", "4xx", "5xx", "p50 ms", "p95 ms"],
        [
            [
                f"{entry.method} {entry.route}",
                entry.requests,
                share(entry.requests),
                entry.callers,
                _rate(entry.anonymous, entry.requests),
                entry.organisations,
                _rate(entry.client_errors, entry.requests),
                _rate(entry.server_errors, entry.requests),
                _milliseconds(entry.p50_ms),
                _milliseconds(entry.p95_ms),
            ]
            for entry in summary.endpoints
        ],
        width,
    )
    if any(entry.anonymous for entry in summary.endpoints):
        lines.append("anon: requests that named no caller (401 and 403 not counted)")
    lines += _table(
        "API versions",
        ["", "requests", "share", "callers", "orgs"],
        [
            [
                entry.version,
                entry.requests,
                share(entry.requests),
                entry.callers,
                entry.organisations,
            ]
            for entry in summary.versions
        ],
        width,
    )
    multi = summary.multi_version_organisations
    if multi:
        lines += ["", "Organisations on several API versions at once", "-" * 45]
        for entry in multi:
            counts = ", ".join(
                f"{version} ({entry.requests[version]})" for version in entry.versions
            )
            lines.append(f"{entry.organisation:<{width}} {counts}")
    if summary.multi_version_callers:
        lines += ["", "Callers on several API versions at once", "-" * 39]
        for caller in summary.multi_version_callers[:20]:
            who = f"{caller.organisation or '(no organisation)'} / {caller.caller}"
            lines.append(f"{who[:width]:<{width}} {', '.join(caller.versions)}")
        if len(summary.multi_version_callers) > 20:
            lines.append(f"… and {len(summary.multi_version_callers) - 20} more (--json has all)")
    lines += _table(
        "Authentication methods",
        ["", "requests", "share", "callers", "orgs", "refused"],
        [
            [
                entry.auth_method,
                entry.requests,
                share(entry.requests),
                entry.callers,
                entry.organisations,
                entry.failed,
            ]
            for entry in summary.auth_methods
        ],
        width,
    )
    lines += _table(
        "Client libraries by organisation",
        ["", "requests", "callers", "last seen"],
        [
            [
                f"{entry.organisation or '(anonymous)'}: {entry.client_library} "
                f"{entry.version or ''}".rstrip(),
                entry.requests,
                entry.callers,
                _when(entry.last_seen)[:10],
            ]
            for entry in summary.client_libraries
        ],
        width,
    )
    if summary.journey:
        lines += _table(
            "Journey events",
            ["", "events", "callers"],
            [[entry.event, entry.events, entry.callers] for entry in summary.journey],
            width,
        )
    lines += _adoption(summary, width)
    lines += _funnels(summary, width)
    lines += _never_called(summary, width)
    lines += _underused(summary, width)
    lines += _deprecated(summary, width)
    lines += _flags(summary, width)
    lines += format_delivery(summary.delivery)
    return "\n".join(lines)


def _adoption(summary: UsageSummary, width: int) -> list[str]:
    if not summary.version_adoption:
        return []
    versions = sorted({entry.version for entry in summary.version_adoption})
    by_period: dict[str, dict[str, int]] = {}
    for entry in summary.version_adoption:
        by_period.setdefault(entry.period, {})[entry.version] = entry.requests
    rows = []
    for period, counts in by_period.items():
        total = sum(counts.values())
        rows.append([period, *(f"{counts.get(version, 0) / total:.0%}" for version in versions)])
    title = f"API version adoption, share of requests per {summary.adoption_period}"
    return _table(title, ["", *versions], rows, width)


#: Features listed per organisation in the text report (all of them: --json, --csv).
_SHOWN_FEATURES = 3


def _flags(summary: UsageSummary, width: int) -> list[str]:
    """Each flag's answers side by side: what changed for the callers who got each."""
    if not summary.flags:
        return []

    return _table(
        "Feature flags: requests, errors and latency by answer",
        ["", "requests", "callers", "orgs", "4xx", "5xx", "p50 ms", "p95 ms"],
        [
            [
                f"{entry.flag} = {entry.answer}",
                entry.requests,
                entry.callers,
                entry.organisations,
                _rate(entry.client_errors, entry.requests),
                _rate(entry.server_errors, entry.requests),
                _milliseconds(entry.p50_ms),
                _milliseconds(entry.p95_ms),
            ]
            for entry in summary.flags
        ],
        width,
    )


def _underused(summary: UsageSummary, width: int) -> list[str]:
    if not summary.underused_features:
        return []
    title = "Features an organisation under-uses (most organisations use them)"
    lines = ["", title, "-" * len(title)]
    by_organisation: dict[str, list[str]] = {}
    for entry in summary.underused_features:
        use = "never" if not entry.requests else f"{entry.share:.1%}"
        by_organisation.setdefault(entry.organisation, []).append(
            f"{entry.feature} ({use}; median {entry.median_share:.1%})"
        )
    for organisation, features in by_organisation.items():
        more = f" … +{len(features) - _SHOWN_FEATURES}" if len(features) > _SHOWN_FEATURES else ""
        lines.append(
            f"{organisation[:width]:<{width}} {'; '.join(features[:_SHOWN_FEATURES])}{more}"
        )
    return lines


#: Organisations shown per funnel in the text report, fewest reaching the last step first.
_SHOWN_FUNNEL_ORGANISATIONS = 10


def _funnels(summary: UsageSummary, width: int) -> list[str]:
    lines: list[str] = []
    for funnel in summary.funnels:
        title = f"Journey {funnel.name} (steps within {funnel.conversion_days:g} days)"
        rows = [
            [
                f"{index}. {step.event}",
                step.callers,
                "-" if step.conversion is None else f"{step.conversion:.0%}",
                "-" if step.conversion_from_start is None else f"{step.conversion_from_start:.0%}",
            ]
            for index, step in enumerate(funnel.steps, 1)
        ]
        lines += _table(title, ["", "callers", "from prev", "from start"], rows, width)
        if funnel.by_organisation:
            lines.append(f"{'by organisation (callers per step)':<{width}}")
            ranked = sorted(
                funnel.by_organisation,
                key=lambda entry: (
                    entry.steps[-1].conversion_from_start or 0.0,
                    -entry.steps[0].callers,
                ),
            )
            for entry in ranked[:_SHOWN_FUNNEL_ORGANISATIONS]:
                counts = " → ".join(str(step.callers) for step in entry.steps)
                lines.append(f"  {entry.organisation[: width - 2]:<{width - 2}} {counts}")
            if len(ranked) > _SHOWN_FUNNEL_ORGANISATIONS:
                lines.append(
                    f"  … and {len(ranked) - _SHOWN_FUNNEL_ORGANISATIONS} more (--json has all)"
                )
    return lines


def _never_called(summary: UsageSummary, width: int) -> list[str]:
    title = "Endpoints never called in this window"
    if summary.organisation:
        title = f"Endpoints {summary.organisation} never called in this window"
    lines = ["", title, "-" * len(title)]
    if summary.never_called is None:
        return [*lines, "(unknown: no route inventory in the store yet)"]
    if not summary.never_called:
        return [*lines, "(none)"]
    for entry in summary.never_called:
        mark = "  (deprecated)" if entry.deprecated else ""
        lines.append(f"{entry.method} {entry.route}{mark}")
    return lines


#: Organisations listed per deprecated endpoint in the text report (all of them: --csv).
_SHOWN_ORGANISATIONS = 15


def _deprecated(summary: UsageSummary, width: int) -> list[str]:
    if not summary.deprecated:
        return []
    title = "Deprecated endpoints and who still calls them"
    lines = ["", title, "-" * len(title)]
    for entry in summary.deprecated:
        lines.append(
            f"{entry.method} {entry.route}: {entry.requests} requests, {entry.callers} callers, "
            f"{entry.organisations} organisations, last {_when(entry.last_seen)}"
        )
        if entry.notice_since is not None:
            kept = sum(1 for caller in entry.by_caller if caller.requests_after_notice)
            lines.append(
                f"  since the notice ({_when(entry.notice_since)[:10]}): "
                f"{entry.requests_after_notice} requests from {kept} callers"
            )
        by_organisation: dict[str | None, list[DeprecatedCaller]] = {}
        for caller in entry.by_caller:
            by_organisation.setdefault(caller.organisation, []).append(caller)
        ranked = sorted(by_organisation.items(), key=lambda item: -sum(c.requests for c in item[1]))
        for organisation, callers in ranked[:_SHOWN_ORGANISATIONS]:
            requests = sum(caller.requests for caller in callers)
            last = max(caller.last_seen or 0.0 for caller in callers)
            libraries = sorted({name for caller in callers for name in caller.client_libraries})
            label = organisation or "(no organisation)"
            named = sum(1 for caller in callers if caller.caller is not None)
            lines.append(
                f"  {label[:width]:<{width}} {requests:>9} requests {named:>5} callers  "
                f"last {_when(last)[:10]}  {', '.join(libraries)}"
            )
        if len(ranked) > _SHOWN_ORGANISATIONS:
            lines.append(
                f"  … and {len(ranked) - _SHOWN_ORGANISATIONS} more organisations "
                "(every caller: apiusage report --csv deprecated)"
            )
    return lines
