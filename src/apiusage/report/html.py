"""The report as one self-contained HTML page (``apiusage report --html FILE``).

Charts are SVG drawn here, styles are inline, and there is no script: the page opens
offline, from a file or an e-mail attachment, and asks the network for nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from html import escape

from apiusage import __version__
from apiusage.report.answers import UsageSummary

__all__ = ["render_html"]

_PALETTE = ["#3b6fd4", "#e0803a", "#3aa675", "#c2476a", "#8a63c9", "#a3a039", "#3fa3b8", "#7a7a7a"]
_BAR = 18  # bar height, px
_LABEL = 300  # label column width, px
_PLOT = 380  # bar area width, px
_SHOWN_ENDPOINTS = 30
_SHOWN_ORGANISATIONS = 12

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1000px;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;
border-bottom:1px solid #ddd;padding-bottom:.3rem}h3{font-size:1rem;margin:1.2rem 0 .3rem}
.muted{color:#666}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:8px;padding:.6rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.4rem}table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}svg{display:block;margin:.4rem 0}
svg text{font:12px system-ui,sans-serif;fill:#1d1d1f}.legend span{display:inline-block;
margin-right:1rem}.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;
vertical-align:-1px}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));
gap:1rem}
"""


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _hbars(rows: Sequence[tuple[str, float, str]], *, color: str = _PALETTE[0]) -> str:
    """Horizontal bars: (label, value, text shown after the bar)."""
    if not rows:
        return '<p class="muted">(none)</p>'
    largest = max(value for _, value, _ in rows) or 1
    height = len(rows) * (_BAR + 6) + 6
    parts = [
        f'<svg role="img" width="{_LABEL + _PLOT + 260}" height="{height}" '
        f'viewBox="0 0 {_LABEL + _PLOT + 260} {height}">'
    ]
    for index, (label, value, note) in enumerate(rows):
        y = 6 + index * (_BAR + 6)
        width = max(1.0, value / largest * _PLOT) if value else 0
        shown = label if len(label) <= 48 else label[:47] + "…"
        parts.append(
            f'<text x="{_LABEL - 8}" y="{y + 13}" text-anchor="end">{escape(shown)}'
            f"<title>{escape(label)}</title></text>"
            f'<rect class="bar" x="{_LABEL}" y="{y}" width="{width:.1f}" height="{_BAR}" '
            f'fill="{color}"/>'
            f'<text x="{_LABEL + width + 6:.1f}" y="{y + 13}">{escape(note)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: Sequence[str], colors: dict[str, str]) -> str:
    items = "".join(
        f'<span><i style="background:{colors[name]}"></i>{escape(name)}</span>' for name in names
    )
    return f'<div class="legend">{items}</div>'


def _stacked(
    periods: Sequence[str],
    series: dict[str, dict[str, int]],
    width: int,
    colors: dict[str, str],
) -> str:
    """Stacked columns of each period's requests by version (shares of the period);
    ``colors`` by version, the same in every chart."""
    versions = sorted(series)
    if not periods:
        return '<p class="muted">(no requests)</p>'
    height, top, bottom = 160, 8, 22
    column = max(2.0, (width - 40) / len(periods))
    parts = [
        f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="0" y="{top + 8}">100%</text><text x="0" y="{height - bottom}">0%</text>',
    ]
    plot = height - top - bottom
    for index, period in enumerate(periods):
        total = sum(series[version].get(period, 0) for version in versions) or 1
        y = float(top + plot)
        for version in versions:
            share = series[version].get(period, 0) / total
            if not share:
                continue
            block = share * plot
            y -= block
            parts.append(
                f'<rect class="bar" x="{36 + index * column:.1f}" y="{y:.1f}" '
                f'width="{max(1.0, column - 1):.1f}" height="{block:.1f}" '
                f'fill="{colors[version]}"><title>{escape(period)} {escape(version)}: '
                f"{share:.0%}</title></rect>"
            )
    parts.append(
        f'<text x="36" y="{height - 4}">{escape(periods[0])}</text>'
        f'<text x="{width - 4}" y="{height - 4}" text-anchor="end">{escape(periods[-1])}</text>'
        "</svg>"
    )
    return _legend(versions, colors) + "".join(parts)


def _adoption(summary: UsageSummary) -> str:
    if not summary.version_adoption:
        return '<p class="muted">(no requests in the window)</p>'
    periods = sorted({entry.period for entry in summary.version_adoption})
    overall: dict[str, dict[str, int]] = defaultdict(dict)
    for entry in summary.version_adoption:
        overall[entry.version][entry.period] = entry.requests
    colors = {name: _PALETTE[index % len(_PALETTE)] for index, name in enumerate(sorted(overall))}
    html = [
        f"<h3>All organisations, per {summary.adoption_period}</h3>",
        _stacked(periods, overall, 860, colors),
    ]
    by_organisation: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    totals: dict[str, int] = defaultdict(int)
    for entry in summary.version_adoption_by_organisation:
        assert entry.organisation is not None
        by_organisation[entry.organisation][entry.version][entry.period] = entry.requests
        totals[entry.organisation] += entry.requests
    several = {entry.organisation for entry in summary.multi_version_organisations}
    chosen = sorted(totals, key=lambda org: (org not in several, -totals[org]))
    shown = chosen[:_SHOWN_ORGANISATIONS]
    if shown:
        html.append(
            '<h3>By organisation</h3><p class="muted">Organisations on several versions '
            f"first, then the busiest; {len(shown)} of {len(chosen)} shown.</p>"
            '<div class="grid">'
        )
        for organisation in shown:
            mark = " (several versions)" if organisation in several else ""
            html.append(
                f"<div><b>{escape(organisation)}</b>{mark}"
                f"{_stacked(periods, by_organisation[organisation], 300, colors)}</div>"
            )
        html.append("</div>")
    return "".join(html)


def _endpoints(summary: UsageSummary) -> str:
    total = summary.total_requests or 1
    rows = [
        (
            f"{entry.method} {entry.route}",
            float(entry.requests),
            f"{entry.requests} ({entry.requests / total:.0%}), p95 {entry.p95_ms or 0:.0f} ms",
        )
        for entry in summary.endpoints[:_SHOWN_ENDPOINTS]
    ]
    more = len(summary.endpoints) - len(rows)
    note = f'<p class="muted">… and {more} more endpoints (see --json).</p>' if more > 0 else ""
    if summary.never_called is None:
        never = (
            '<p class="muted">Which endpoints are never called is unknown: no route '
            "inventory in the store.</p>"
        )
    elif not summary.never_called:
        never = "<p>Every endpoint of the route inventory was called.</p>"
    else:
        items = "".join(
            f"<li><code>{escape(entry.method)} {escape(entry.route)}</code>"
            f"{' (deprecated)' if entry.deprecated else ''}</li>"
            for entry in summary.never_called
        )
        never = f"<h3>Never called in this window</h3><ul>{items}</ul>"
    return _hbars(rows) + note + never


def _auth(summary: UsageSummary) -> str:
    total = summary.total_requests or 1
    rows = [
        (
            entry.auth_method,
            float(entry.requests),
            f"{entry.requests / total:.0%} · {entry.callers} callers · {entry.organisations} orgs",
        )
        for entry in summary.auth_methods
    ]
    return _hbars(rows, color=_PALETTE[2])


def _funnels(summary: UsageSummary) -> str:
    if not summary.funnels:
        return (
            '<p class="muted">No journey asked for (set APIUSAGE_JOURNEYS, or use --journey).</p>'
        )
    html = []
    for funnel in summary.funnels:
        rows = [
            (
                f"{index}. {step.event}",
                float(step.callers),
                f"{step.callers} callers"
                + (
                    f" · {step.conversion:.0%} of the step before"
                    if index > 1 and step.conversion is not None
                    else ""
                ),
            )
            for index, step in enumerate(funnel.steps, 1)
        ]
        html.append(
            f'<h3>{escape(funnel.name)}</h3><p class="muted">Steps in order, within '
            f"{funnel.conversion_days:g} days of the first.</p>{_hbars(rows, color=_PALETTE[4])}"
        )
    return "".join(html)


def _deprecated(summary: UsageSummary) -> str:
    if not summary.deprecated:
        return '<p class="muted">No deprecated endpoint.</p>'
    html = []
    for entry in summary.deprecated:
        by_organisation: dict[str, int] = defaultdict(int)
        for caller in entry.by_caller:
            by_organisation[caller.organisation or "(no organisation)"] += caller.requests
        rows = [
            (organisation, float(count), str(count))
            for organisation, count in sorted(by_organisation.items(), key=lambda item: -item[1])
        ][:20]
        html.append(
            f"<h3><code>{escape(entry.method)} {escape(entry.route)}</code></h3>"
            f'<p class="muted">{entry.requests} requests from {entry.callers} callers in '
            f"{entry.organisations} organisations; last {_when(entry.last_seen)}.</p>"
            f"{_hbars(rows, color=_PALETTE[3])}"
        )
    return "".join(html)


def _flags(summary: UsageSummary) -> str:
    """Each flag's answers: requests (bars), error shares and p95 side by side."""
    if not summary.flags:
        return '<p class="muted">No request was served with a feature flag.</p>'
    html = []
    for flag in dict.fromkeys(entry.flag for entry in summary.flags):
        rows = [
            (
                entry.answer,
                float(entry.requests),
                f"{entry.requests} · 5xx {entry.server_errors / entry.requests:.1%} · "
                f"4xx {entry.client_errors / entry.requests:.1%} · "
                f"p95 {entry.p95_ms or 0:.1f} ms",
            )
            for entry in summary.flags
            if entry.flag == flag and entry.requests
        ]
        html.append(f"<h3><code>{escape(flag)}</code></h3>{_hbars(rows, color=_PALETTE[1])}")
    return "".join(html)


def render_html(summary: UsageSummary, *, title: str = "API usage report") -> str:
    """The whole page."""
    if summary.since is None and summary.until is None:
        window = f"all events, {_when(summary.first_seen)} to {_when(summary.last_seen)}"
    else:
        window = f"{_when(summary.since)} to {_when(summary.until)}"
    scope = f" · organisation {escape(summary.organisation)}" if summary.organisation else ""
    cards = "".join(
        f'<div class="card"><b>{value}</b>{escape(label)}</div>'
        for label, value in (
            ("requests", summary.total_requests),
            ("identified callers", summary.identified_callers),
            ("organisations", summary.organisations),
            ("journey events", summary.journey_events),
            ("endpoints called", len(summary.endpoints)),
        )
    )
    sections = [
        ("Endpoint usage", _endpoints(summary)),
        ("API version adoption", _adoption(summary)),
        ("Authentication methods", _auth(summary)),
        ("Journey funnels", _funnels(summary)),
        ("Deprecated endpoints by organisation", _deprecated(summary)),
        ("Feature flags", _flags(summary)),
    ]
    body = "".join(
        f"<section><h2>{escape(name)}</h2>{content}</section>" for name, content in sections
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<h1>{escape(title)}</h1><p class="muted">{escape(window)}{scope} · apiusage '
        f'{escape(__version__)}</p><div class="cards">{cards}</div>{body}</body></html>\n'
    )
