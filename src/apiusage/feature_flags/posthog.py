"""Flags PostHog defines, evaluated in this process from definitions the ``posthog``
client polls (local evaluation): no network call on the request path, ever.

Most API flags are plain rollouts: a share of callers or of organisations, perhaps split
into variants, with no property conditions. Those are evaluated with apiusage's own
evaluator (PostHog's hash, see :mod:`apiusage.feature_flags.local`: the same answers,
about four times faster than the client's general evaluator); every other flag (property
conditions, cohorts, holdouts, experience continuity …) by the client's ``evaluate_flags``.

Until the first definitions arrive (or when PostHog cannot be reached at start-up) a flag
has no answer here and the caller's default applies; the ``posthog`` client's own poller
refreshes them while the app serves. A client that has no definitions yet would fetch
them on the request path when asked, so this never asks it before they are loaded.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from apiusage.caller import Identity
from apiusage.feature_flags.local import FlagValue, LocalFlag
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
        #: The plain rollouts of the definitions last seen (re-read when they change).
        self._plain: dict[str, LocalFlag] = {}
        self._plain_of: object = None
        #: Whether the client's snapshots can be read without sending events (posthog
        #: 7.91 and later); found out at the first evaluation.
        self._reads_quietly: bool | None = None

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
        definitions = self.client.feature_flags
        if definitions is None:
            return {}
        if definitions is not self._plain_of:  # new definitions arrived
            self._plain = self._plain_rollouts(definitions)
            self._plain_of = definitions
        plain = self._plain
        found: dict[str, FlagValue] = {}
        rest: list[str] | None = []
        for key in keys if keys is not None else plain:
            flag = plain.get(key)
            if flag is not None:
                found[key] = flag.evaluate(caller)
            elif rest is not None:
                rest.append(key)
        if keys is None:
            rest = None  # every flag: ask the client for all the others
        elif not rest:
            return found
        organisation = caller.organisation
        groups = None if organisation is None else {self._group: organisation}
        person_properties = dict(caller.person_properties) or None
        group_properties = (
            {self._group: dict(caller.organisation_properties)}
            if organisation is not None and caller.organisation_properties
            else None
        )
        if self._reads_quietly is None:
            self._reads_quietly = _snapshots_read_quietly()
        if self._reads_quietly:
            snapshot = self.client.evaluate_flags(
                caller.distinct_id,
                groups=groups,
                person_properties=person_properties,
                group_properties=group_properties,
                only_evaluate_locally=True,
                flag_keys=rest,
            )
            answers = {
                key: snapshot.get_flag(key, send_feature_flag_events=False)
                for key in (snapshot.keys if rest is None else rest)
            }
        else:  # an older posthog, whose snapshots send an event per read: no snapshot
            answers = (
                self.client.get_all_flags(
                    caller.distinct_id,
                    groups=groups,
                    person_properties=person_properties,
                    group_properties=group_properties,
                    only_evaluate_locally=True,
                )
                or {}
            )
            if rest is not None:
                answers = {key: answers.get(key) for key in rest}
        for key, value in answers.items():
            if key not in found and isinstance(value, (bool, str)):
                found[key] = value
        return found

    def _plain_rollouts(self, definitions: list[dict[str, Any]]) -> dict[str, LocalFlag]:
        mapping = self.client.group_type_mapping or {}
        plain = {}
        for definition in definitions:
            flag = plain_rollout(definition, mapping, self._group)
            if flag is not None:
                plain[flag.key] = flag
        return plain

    def close(self) -> None:
        poller = getattr(self.client, "poller", None)
        if self._owned and poller is not None:
            poller.stop()


#: What a plain rollout's ``filters`` may hold.
_PLAIN_FILTERS = frozenset({"groups", "multivariate", "aggregation_group_type_index", "payloads"})


def plain_rollout(
    definition: dict[str, Any], group_types: dict[str, str], organisation_group: str
) -> LocalFlag | None:
    """A PostHog flag definition as a :class:`LocalFlag`, when it is a plain rollout (one
    condition with no properties, by person or by the organisation group, variants that
    add up to 100); else ``None``: the client evaluates it."""
    key = definition.get("key")
    if not isinstance(key, str) or not key:
        return None
    if definition.get("deleted") or not definition.get("active", True):
        return LocalFlag(key, fixed=False)
    filters = definition.get("filters") or {}
    if definition.get("ensure_experience_continuity") or not set(filters) <= _PLAIN_FILTERS:
        return None
    conditions = filters.get("groups") or []
    if len(conditions) != 1 or not set(conditions[0]) <= {"properties", "rollout_percentage"}:
        return None
    condition = conditions[0]
    rollout = condition.get("rollout_percentage")
    if condition.get("properties") or not (rollout is None or isinstance(rollout, (int, float))):
        return None
    by = "caller"
    index = filters.get("aggregation_group_type_index")
    if index is not None:
        if group_types.get(str(index)) != organisation_group:
            return None  # another group type: the client knows what to bucket by
        by = "organisation"
    variants = tuple(
        (variant.get("key"), variant.get("rollout_percentage"))
        for variant in (filters.get("multivariate") or {}).get("variants") or ()
    )
    if variants and (
        not all(
            isinstance(name, str) and isinstance(share, (int, float)) for name, share in variants
        )
        or abs(sum(share for _, share in variants) - 100) > 1e-9
    ):
        return None
    return LocalFlag(
        key,
        rollout=100.0 if rollout is None else float(rollout),
        by=by,  # type: ignore[arg-type]
        variants=tuple((str(name), float(share)) for name, share in variants),
    )


def _snapshots_read_quietly() -> bool:
    """Whether ``FeatureFlagEvaluations.get_flag`` takes ``send_feature_flag_events``:
    older ``posthog`` versions send ``$feature_flag_called`` on every read, and apiusage
    sends its own (once per caller, flag and answer)."""
    try:
        from posthog.feature_flag_evaluations import FeatureFlagEvaluations
    except ImportError:
        return False
    parameters = inspect.signature(FeatureFlagEvaluations.get_flag).parameters
    return "send_feature_flag_events" in parameters
