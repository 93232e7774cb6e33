"""Features an organisation under-uses, compared with the other organisations.

A feature is an endpoint or a journey event. For each organisation, a feature is
reported when most organisations use it (at least half of the others, and at least
three) and this one uses it much less: never, or for under a quarter of the share of its
requests that the median organisation gives it. The product question behind it: which
customers have not discovered something the rest rely on.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping

from apiusage.report.answers import UnderusedFeature

__all__ = ["underused_features"]

#: A feature counts as widely used when at least this share of the other organisations use it.
WIDELY_USED = 0.5
MIN_ORGANISATIONS = 3
#: Under this share of the median organisation's share is under-use.
UNDER_USE = 0.25


def underused_features(
    usage: Mapping[tuple[str, str, str], int], totals: Mapping[str, int]
) -> list[UnderusedFeature]:
    """``usage``: requests (or events) by (organisation, kind, feature); ``totals``: each
    organisation's requests and journey events. Sorted by organisation, then by how much
    the others use the feature."""
    shares: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for (organisation, kind, feature), count in usage.items():
        total = totals.get(organisation)
        if total:
            shares[kind, feature][organisation] = count / total
    organisations = sorted(totals)
    found: list[UnderusedFeature] = []
    for (kind, feature), by_organisation in shares.items():
        using = len(by_organisation)
        if using < MIN_ORGANISATIONS:
            continue
        median = statistics.median(by_organisation.values())
        for organisation in organisations:
            share = by_organisation.get(organisation, 0.0)
            others_using = using - (1 if organisation in by_organisation else 0)
            others = len(organisations) - 1
            if others <= 0 or others_using / others < WIDELY_USED:
                continue
            if share < UNDER_USE * median:
                found.append(
                    UnderusedFeature(
                        organisation,
                        kind,
                        feature,
                        round(share * totals[organisation]),
                        round(share, 4),
                        round(median, 4),
                        others_using,
                    )
                )
    return sorted(found, key=lambda entry: (entry.organisation, -entry.median_share, entry.feature))
