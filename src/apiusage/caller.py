"""Who made a request: the :class:`Identity` type.

A leaf module (it imports nothing else from apiusage), so the record, the context and the
builder can name a caller without importing resolvers, detectors or request views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_ID_LENGTH", "REFUSED_STATUSES", "Identity", "as_identity"]

#: Distinct ids and organisation ids longer than this are cut (PostHog keys stay short).
MAX_ID_LENGTH = 200
#: Responses that refused the caller's credential: it names no caller (a wrong password
#: or a random token would otherwise become a phantom one).
REFUSED_STATUSES = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class Identity:
    """A caller: PostHog distinct id, organisation (sent as a PostHog group) and properties."""

    distinct_id: str
    organisation: str | None = None
    person_properties: Mapping[str, Any] = field(default_factory=dict)
    organisation_properties: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.distinct_id, str) or not self.distinct_id:
            raise ValueError("Identity.distinct_id must be a non-empty string")
        if len(self.distinct_id) > MAX_ID_LENGTH:
            object.__setattr__(self, "distinct_id", self.distinct_id[:MAX_ID_LENGTH])
        organisation = self.organisation
        if organisation is not None and len(organisation) > MAX_ID_LENGTH:
            object.__setattr__(self, "organisation", organisation[:MAX_ID_LENGTH])


def as_identity(result: object) -> Identity | None:
    """Accept what resolvers may return: an Identity, a distinct id, or None."""
    if result is None or isinstance(result, Identity):
        return result
    if isinstance(result, (str, int)) and not isinstance(result, bool):
        text = str(result)[:MAX_ID_LENGTH]
        return Identity(text) if text else None
    raise TypeError(
        f"an identity resolver returned {type(result).__name__}; "
        "return an apiusage.Identity, a distinct id string, or None"
    )
