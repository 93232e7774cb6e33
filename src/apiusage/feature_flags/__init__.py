"""Feature flags and experiments on API behaviour: ``apiusage.flag("new-pagination")``.

A flag is evaluated for the current request's caller and organisation (with the person
and organisation properties the resolvers supplied), once per request: the answer is kept
on the request, so a handler that asks again gets the same answer at the cost of a dict
lookup, and it is recorded on the request's ``api_request`` event as PostHog expects for
experiments (``$feature/<key>``, ``$active_feature_flags``; one ``$feature_flag_called``
per caller, flag and answer). Answers come from, in order:

1. values forced by a test (:func:`apiusage.testing.force_flags`);
2. apiusage's own definitions (the ``flags`` setting or ``flags_file``; see
   :mod:`apiusage.feature_flags.local`);
3. PostHog's definitions, evaluated in this process (see :mod:`apiusage.feature_flags.posthog`);
4. the ``default`` the call gives (``False`` unless said otherwise).

Nothing here makes a network call on the request path, and nothing raises into a handler:
an unknown flag answers the default, with a rate-limited warning naming it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from apiusage.caller import MAX_ID_LENGTH, Identity
from apiusage.feature_flags.local import FlagsFile, FlagValue, LocalFlag
from apiusage.recording import IGNORED_REQUEST, current

if TYPE_CHECKING:
    from apiusage.client import UsageClient
    from apiusage.feature_flags.posthog import PostHogFlags
    from apiusage.health import Stats

__all__ = ["FLAGS_HEADER", "FlagService", "FlagValue", "flag", "flags", "flags_header_value"]

#: The response header naming the flags a request was served with (``flags_header``).
FLAGS_HEADER = "X-Feature-Flags"


def flags_header_value(answers: Mapping[str, FlagValue]) -> str:
    """``new-pagination=true, widgets-v3=v3``: the answers, for a response header."""
    return ", ".join(
        f"{key}={('true' if value else 'false') if isinstance(value, bool) else value}"
        for key, value in sorted(answers.items())
    )


#: How often a flag without an answer is said to have none (seconds).
_SAY_EVERY = 60.0
#: How often ``flags_file`` is checked for changes (seconds).
FILE_CHECK_EVERY = 2.0

#: Values forced by tests, by flag key (see :func:`apiusage.testing.force_flags`).
_forced: dict[str, FlagValue] = {}
_forced_lock = threading.Lock()


def force(values: Mapping[str, FlagValue]) -> dict[str, FlagValue]:
    """Force answers (tests); returns what was forced before, to restore."""
    with _forced_lock:
        before = dict(_forced)
        _forced.update(values)
        return before


def restore(before: Mapping[str, FlagValue]) -> None:
    with _forced_lock:
        _forced.clear()
        _forced.update(before)


class FlagService:
    """One client's flags: its own definitions, then PostHog's."""

    def __init__(
        self,
        definitions: Mapping[str, LocalFlag],
        remote: PostHogFlags | None,
        stats: Stats,
        *,
        file: FlagsFile | None = None,
        file_definitions: Mapping[str, LocalFlag] | None = None,
    ) -> None:
        #: The ``flags`` setting's definitions: they win over the file's.
        self._configured = dict(definitions)
        self._file = file
        self._file_checked = time.monotonic()
        self.definitions = {**(file_definitions or {}), **self._configured}
        self.remote = remote
        self._stats = stats
        #: Made once: ``flag()`` runs on the request path.
        self.guard = stats.guard("evaluating a feature flag")
        #: When each flag without an answer was last said to have none.
        self._said: dict[str, float] = {}

    def evaluate(self, keys: list[str] | None, caller: Identity | None) -> dict[str, FlagValue]:
        """The answers for ``caller`` of ``keys`` (every known flag when ``None``); a flag
        no one defines, or that has no answer yet, is left out."""
        if self._file is not None:
            self._reread_file()
        remote = self.remote
        if not _forced and not self.definitions:  # PostHog's flags only: the common case
            return {} if remote is None or caller is None else remote.evaluate(keys, caller)
        found: dict[str, FlagValue] = {}
        wanted = keys
        if _forced:
            with _forced_lock:
                forced = dict(_forced)
            for key in wanted if wanted is not None else forced:
                if key in forced:
                    found[key] = forced[key]
        definitions = self.definitions
        for key in definitions if wanted is None else wanted:
            definition = definitions.get(key)
            if definition is not None and key not in found:
                found[key] = definition.evaluate(caller)
        if remote is not None and caller is not None:
            missing = None if wanted is None else [key for key in wanted if key not in found]
            if missing is None or missing:
                for key, value in remote.evaluate(missing, caller).items():
                    found.setdefault(key, value)
        return found

    def _reread_file(self) -> None:
        """``flags_file`` again, when it changed (checked every few seconds). A file that
        became invalid is said, and its flags keep their last good definitions."""
        now = time.monotonic()
        if now - self._file_checked < FILE_CHECK_EVERY:
            return
        self._file_checked = now
        file = self._file
        assert file is not None
        if not file.changed():
            return
        try:
            flags = file.load()
        except ValueError as exc:
            self._stats.warn(
                "flags file",
                "apiusage: flags_file changed but cannot be used (%s); its flags keep their "
                "last good definitions.",
                exc,
            )
            return
        self.definitions = {**flags, **self._configured}

    def not_found(self, key: str, default: FlagValue) -> None:
        """Say (rate-limited) that ``key`` has no answer, and which default applies."""
        now = time.monotonic()
        if now - self._said.get(key, -_SAY_EVERY) < _SAY_EVERY:
            return  # said lately: a flag asked for on every request costs nothing more
        if len(self._said) > 1000:
            self._said.clear()
        self._said[key] = now
        remote = self.remote
        if remote is not None and not remote.ready:
            why = "PostHog's flag definitions have not arrived yet"
        elif remote is not None:
            why = "neither apiusage's flags setting nor PostHog defines it (or PostHog "
            why += "cannot evaluate it locally)"
        else:
            why = "the flags setting does not define it, and no PostHog flags key is set"
        self._stats.warn(
            f"flag {key}",
            "apiusage: flag %r has no answer (%s); the default %r applies. Further calls "
            "are logged at most once a minute.",
            key,
            why,
            default,
        )

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()


def _client_of(record: Any) -> UsageClient | None:
    client = getattr(record, "client", None)
    if client is not None:
        return client  # type: ignore[no-any-return]
    from apiusage.registry import default_client

    return default_client()


def flag(
    key: str,
    default: FlagValue = False,
    *,
    distinct_id: str | int | None = None,
    organisation: str | int | None = None,
) -> FlagValue:
    """The answer of flag ``key`` for the current request's caller: ``True``/``False``, or
    the name of a variant; ``default`` when the flag has no answer.

    Inside a request it is evaluated once (later calls get the same answer) and recorded
    on the request's event. Outside a request, name the caller with ``distinct_id`` (and
    ``organisation``). Never raises.
    """
    record = current.get()
    in_request = record is not None and record is not IGNORED_REQUEST and distinct_id is None
    if in_request:
        assert record is not None
        known = record.flags
        if known is not None and key in known:
            return known[key]
        unanswered = record.unanswered
        if unanswered is not None and key in unanswered:
            return default
    client = _client_of(record if in_request else None)
    if client is None:
        return default
    with client.flags.guard:
        if in_request:
            assert record is not None
            answers = client.flags.evaluate([key], client.caller_now(record))
            if key in answers:
                if record.flags is None:
                    record.flags = {}
                record.flags[key] = answers[key]
                return answers[key]
            if record.unanswered is None:
                record.unanswered = set()
            record.unanswered.add(key)
        else:
            caller = _explicit_caller(distinct_id, organisation)
            answers = client.flags.evaluate([key], caller)
            if key in answers:
                return answers[key]
        client.flags.not_found(key, default)
    return default


def flags(
    *, distinct_id: str | int | None = None, organisation: str | int | None = None
) -> dict[str, FlagValue]:
    """Every flag's answer for the current request's caller (or the one named), recorded
    on the request's event like :func:`flag`'s. Never raises."""
    record = current.get()
    in_request = record is not None and record is not IGNORED_REQUEST and distinct_id is None
    client = _client_of(record if in_request else None)
    if client is None:
        return {}
    with client.flags.guard:
        if not in_request:
            return client.flags.evaluate(None, _explicit_caller(distinct_id, organisation))
        assert record is not None
        answers = client.flags.evaluate(None, client.caller_now(record))
        if record.flags is None:
            record.flags = {}
        for key, value in answers.items():
            record.flags.setdefault(key, value)  # an answer already given stands
        return dict(record.flags)
    return {}


def _explicit_caller(
    distinct_id: str | int | None, organisation: str | int | None
) -> Identity | None:
    if distinct_id is None or distinct_id == "" or isinstance(distinct_id, bool):
        return None
    return Identity(
        str(distinct_id)[:MAX_ID_LENGTH],
        organisation=str(organisation)[:MAX_ID_LENGTH] if organisation is not None else None,
    )
