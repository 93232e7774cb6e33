"""Flags PostHog defines, evaluated in this process from definitions the ``posthog``
client polls (local evaluation): no network call on the request path, ever.

Until the first definitions arrive (or when PostHog cannot be reached at start-up) a flag
has no answer here and the caller's default applies; the ``posthog`` client's own poller
refreshes them while the app serves. A client that has no definitions yet would fetch
them on the request path when asked, so this never asks it before they are loaded.
"""

from __future__ import annotations

import threading
from typing import Any

from apiusage.caller import Identity
from apiusage.feature_flags.local import FlagValue
from apiusage.health import Stats

__all__ = ["PostHogFlags"]


class PostHogFlags:
    """Local evaluation with a ``posthog.Posthog`` client that has a secret key (a feature
    flags secure key ``phs_…`` or a personal API key)."""

    def __init__(self, client: Any, organisation_group: str, stats: Stats, *, owned: bool) -> None:
        self.client = client
        self._group = organisation_group
        self._stats = stats
        #: True when apiusage made the client (it then stops its poller at close).
        self._owned = owned
        self._loading: threading.Thread | None = None

    def start(self) -> None:
        """Fetch the definitions in the background (and start the client's poller)."""
        if self._loading is None:
            self._loading = threading.Thread(
                target=self._load, name="apiusage-flag-definitions", daemon=True
            )
            self._loading.start()

    def _load(self) -> None:
        with self._stats.guard("loading PostHog's flag definitions"):
            self.client.load_feature_flags()

    @property
    def ready(self) -> bool:
        """True once definitions arrived (an empty list counts: there are none)."""
        return self.client.feature_flags is not None

    def keys(self) -> list[str]:
        return [str(flag.get("key")) for flag in self.client.feature_flags or () if flag.get("key")]

    def evaluate(self, keys: list[str] | None, caller: Identity) -> dict[str, FlagValue]:
        """The answers for ``caller`` of ``keys`` (all flags when ``None``) that can be
        evaluated locally; flags PostHog does not define, or that need its servers, are
        left out."""
        if not self.ready:
            return {}
        groups: dict[str, str] = {}
        group_properties: dict[str, dict[str, Any]] = {}
        if caller.organisation is not None:
            groups[self._group] = caller.organisation
            group_properties[self._group] = dict(caller.organisation_properties)
        snapshot = self.client.evaluate_flags(
            caller.distinct_id,
            groups=groups,
            person_properties=dict(caller.person_properties),
            group_properties=group_properties,
            only_evaluate_locally=True,
            disable_geoip=True,
            flag_keys=keys,
        )
        found: dict[str, FlagValue] = {}
        for key in snapshot.keys:
            value = snapshot.get_flag(key, send_feature_flag_events=False)
            if isinstance(value, (bool, str)):
                found[key] = value
        return found

    def close(self) -> None:
        poller = getattr(self.client, "poller", None)
        if self._owned and poller is not None:
            poller.stop()
