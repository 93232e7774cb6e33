"""Events → the JSON of PostHog's ``/batch/`` endpoint, encoded with orjson.

Each event is encoded to bytes once, on the delivery worker; a request body is those
bytes joined under a small header, so splitting an oversized batch, retrying it and
(later) spooling it never encode an event again. What is the same for every event of the
process (``$lib``, runtime and OS) is encoded once, when the encoder is made.

The result matches what ``posthog.capture()`` / ``group_identify()`` send: ``event``,
``distinct_id`` (a string), ``uuid``, an ISO-8601 UTC ``timestamp``, and ``properties``
with ``$lib``, ``$lib_version``, ``$geoip_disable``, ``$groups``, ``$set`` and
``$process_person_profile`` where they apply; the body carries ``api_key``, ``sent_at``
and ``historical_migration``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from apiusage import __version__
from apiusage.events import Event, GroupUpdate, SharedProperties

__all__ = ["LIBRARY_NAME", "BatchEncoder", "EncodedEvent", "process_properties"]

#: ``$lib`` of every event apiusage sends (``posthog.capture()`` would say posthog-python).
LIBRARY_NAME = "apiusage-python"

_OPTIONS = orjson.OPT_NON_STR_KEYS
#: Where a :class:`SharedProperties` keeps its encoding for PostHog (see ``_shared_fragment``).
_MEMO_KEY = "posthog-json"


class EncodedEvent(NamedTuple):
    """One event of a batch, as the bytes of its JSON object."""

    uuid: str
    name: str
    data: bytes


def _os_properties() -> dict[str, str]:
    """``$os``, ``$os_version`` and (Linux) ``$os_distro``, named as the posthog SDK names
    them ("Mac OS X", the distribution's version id), so that events of both group together.

    Computed here rather than with ``posthog.utils``: importing the posthog package (its
    client, ``requests``, ``httpx`` …) would add about 18,000 objects to the host's heap,
    for every full garbage collection of the app to walk.
    """
    name, version, distro = sys.platform, platform.release(), ""
    if sys.platform.startswith("win"):
        name, version = "Windows", platform.win32_ver()[0]
    elif sys.platform == "darwin":
        name, version = "Mac OS X", platform.mac_ver()[0]
    elif sys.platform.startswith("linux"):
        name, version = "Linux", ""
        try:
            release = platform.freedesktop_os_release()
        except OSError:  # no /etc/os-release (some minimal containers)
            release = {}
        version, distro = release.get("VERSION_ID", ""), release.get("NAME", "")
    elif sys.platform.startswith("freebsd"):
        name = "FreeBSD"
    info = {"$os": name, "$os_version": version}
    if distro:
        info["$os_distro"] = distro
    return info


def process_properties() -> dict[str, Any]:
    """Properties that every event of this process carries, as ``capture()`` adds them."""
    return {
        "$lib": LIBRARY_NAME,
        "$lib_version": __version__,
        # Server-side events: PostHog must not geolocate our server's address as the caller,
        # nor take the server's OS for the person's device.
        "$geoip_disable": True,
        "$is_server": True,
        "$python_runtime": platform.python_implementation(),
        "$python_version": "{}.{}.{}".format(*sys.version_info[:3]),
        **_os_properties(),
    }


def _json_fallback(value: Any) -> str:
    return str(value)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_fallback, option=_OPTIONS)


def _dumps_stdlib(value: Any) -> bytes:
    """For what orjson refuses (integers beyond 64 bits): slower, but the event is kept."""
    return json.dumps(value, default=_json_fallback, separators=(",", ":")).encode()


class _IsoClock:
    """Formats epoch seconds as ISO-8601 UTC with microseconds; the date part once a second."""

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (-1, "")

    def __call__(self, timestamp: float) -> str:
        second = int(timestamp)
        micros = round((timestamp - second) * 1_000_000)  # as datetime.fromtimestamp rounds
        if micros >= 1_000_000:
            second += 1
            micros -= 1_000_000
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, prefix)
        return f"{prefix}.{micros:06d}+00:00"


class BatchEncoder:
    """Encodes events and request bodies for one PostHog project key. One thread at a time."""

    def __init__(self, api_key: str, *, clock: Callable[[], float] = time.time) -> None:
        constant = process_properties()
        self._constant = _dumps(constant)[1:-1]  # '"$lib":"apiusage-python",…' without braces
        # Keys we own: a user property of the same name would be sent twice in one object.
        self._reserved = frozenset(constant) | {"$groups", "$set", "$process_person_profile"}
        self._body_head = b'{"api_key":' + _dumps(api_key) + b',"historical_migration":false'
        self._iso = _IsoClock()
        self._clock = clock

    def iso(self, timestamp: float) -> str:
        return self._iso(timestamp)

    # ------------------------------------------------------------------ events
    def encode_event(self, event: Event) -> EncodedEvent:
        try:
            data = self._encode_event(event, _dumps)
        except (TypeError, orjson.JSONEncodeError):
            data = self._encode_event(event, _dumps_stdlib)
        return EncodedEvent(event.uuid, event.name, data)

    def _encode_event(self, event: Event, dumps: Callable[[Any], bytes]) -> bytes:
        properties: Mapping[str, Any] = event.own_properties
        if not self._reserved.isdisjoint(properties):
            properties = {k: v for k, v in properties.items() if k not in self._reserved}
        shared = event.shared
        extra = self._constant if shared is None else self._shared_fragment(shared, dumps)
        if event.groups:
            extra += b',"$groups":' + dumps(event.groups)
        if event.person_properties:
            extra += b',"$set":' + dumps(event.person_properties)
        if event.personless:
            extra += b',"$process_person_profile":false'
        return self._message(
            event.name, event.distinct_id, event.uuid, event.timestamp, properties, extra, dumps
        )

    def _shared_fragment(self, shared: SharedProperties, dumps: Callable[[Any], bytes]) -> bytes:
        """The shared properties and the process's, encoded once per :class:`SharedProperties`."""
        fragment: bytes | None = shared.memo.get(_MEMO_KEY)
        if fragment is None:
            properties = {k: v for k, v in shared.properties.items() if k not in self._reserved}
            encoded = dumps(properties)[1:-1]
            fragment = encoded + b"," + self._constant if encoded else self._constant
            if dumps is _dumps:  # what the fallback encoder made is not kept: it is rare
                shared.memo[_MEMO_KEY] = fragment
        return fragment

    def encode_group(self, group: GroupUpdate) -> EncodedEvent:
        """A ``$groupidentify`` event, as ``posthog.group_identify()`` builds it."""
        properties = {
            "$group_type": group.group_type,
            "$group_key": group.group_key,
            "$group_set": dict(group.properties),
        }
        # Without a caller, PostHog's SDK names the group itself as the (personful) sender.
        distinct_id = group.distinct_id or f"${group.group_type}_{group.group_key}"
        message = (distinct_id, group.uuid, group.timestamp, properties, self._constant)
        try:
            data = self._message("$groupidentify", *message, _dumps)
        except (TypeError, orjson.JSONEncodeError):
            data = self._message("$groupidentify", *message, _dumps_stdlib)
        return EncodedEvent(group.uuid, "$groupidentify", data)

    def _message(
        self,
        name: str,
        distinct_id: str,
        event_uuid: str,
        timestamp: float,
        properties: Mapping[str, Any],
        extra: bytes,
        dumps: Callable[[Any], bytes],
    ) -> bytes:
        encoded = dumps(
            {
                "event": name,
                "distinct_id": distinct_id,
                "uuid": event_uuid,
                "timestamp": self._iso(timestamp),
                "properties": properties,
            }
        )
        # The encoding ends with the properties' "}" and the event's "}": ``extra`` goes
        # in between (it is never empty: it holds at least the process's properties).
        return encoded[:-2] + (b"," if properties else b"") + extra + b"}}"

    # ------------------------------------------------------------------ bodies
    def body(self, events: Sequence[EncodedEvent]) -> bytes:
        """The request body for these events, with ``sent_at`` set to now."""
        sent_at = self._iso(self._clock())
        return b"".join(
            (
                self._body_head,
                b',"sent_at":"',
                sent_at.encode(),
                b'","batch":[',
                b",".join(event.data for event in events),
                b"]}",
            )
        )
