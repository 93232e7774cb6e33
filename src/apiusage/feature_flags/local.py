"""Feature flags defined in apiusage's own configuration: development, tests, the demo and
apps without PostHog.

A definition is a fixed answer (``True``, ``False``, a variant name), or a rollout::

    {
        "new-pagination": {"rollout": 20, "by": "organisation"},
        "widgets-v3": {"variants": {"control": 50, "v3": 50}, "by": "organisation",
                       "organisations": {"acme": "v3"}},
        "strict-limits": {"callers": ["usr_1"]},
        "kill-switch": False,
    }

Who is in a percentage rollout is decided by a stable hash of the flag key and the caller
(or organisation), computed as PostHog computes it (SHA-1 of ``"<key>.<id>"``, the first
15 hex digits over ``0xFFFFFFFFFFFFFFF``; variants with the salt ``"variant"``), so every
process, restart and PostHog itself agree on who gets what.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from apiusage.caller import Identity

__all__ = [
    "FlagValue",
    "FlagsFile",
    "LocalFlag",
    "parse_flags",
    "read_flags_file",
    "rollout_hash",
]

#: What a flag answers: on or off, or the name of a variant.
FlagValue = bool | str

_LONG_SCALE = float(0xFFFFFFFFFFFFFFF)


def rollout_hash(key: str, bucket: str, salt: str = "") -> float:
    """Where ``bucket`` (a caller or organisation id) falls for flag ``key``, in [0, 1]:
    PostHog's own hash, so a rollout here matches one there."""
    digest = hashlib.sha1(f"{key}.{bucket}{salt}".encode()).hexdigest()  # a bucket, not a secret
    return int(digest[:15], 16) / _LONG_SCALE


@dataclass(frozen=True, slots=True)
class LocalFlag:
    """One flag of the configuration, validated."""

    key: str
    #: A fixed answer for everyone (``None``: decided by the rollout below).
    fixed: FlagValue | None = None
    #: Share (0 to 100) of callers or organisations the flag is on for.
    rollout: float = 100.0
    by: Literal["caller", "organisation"] = "caller"
    #: Variant name → share (summing to 100); empty for an on/off flag.
    variants: tuple[tuple[str, float], ...] = ()
    #: Answers for named organisations and callers, before any rollout.
    organisations: Mapping[str, FlagValue] | None = None
    callers: Mapping[str, FlagValue] | None = None

    def evaluate(self, caller: Identity | None) -> FlagValue:
        """The answer for ``caller`` (``None``: an anonymous request)."""
        if self.fixed is not None:
            return self.fixed
        distinct_id = caller.distinct_id if caller is not None else None
        organisation = caller.organisation if caller is not None else None
        if self.callers and distinct_id is not None and distinct_id in self.callers:
            return self.callers[distinct_id]
        if self.organisations and organisation is not None and organisation in self.organisations:
            return self.organisations[organisation]
        bucket = organisation if self.by == "organisation" else distinct_id
        if bucket is None or rollout_hash(self.key, bucket) > self.rollout / 100:
            return False
        if not self.variants:
            return True
        point = rollout_hash(self.key, bucket, "variant")
        start = 0.0
        for name, share in self.variants:
            end = start + share / 100
            if start <= point < end:
                return name
            start = end
        return self.variants[-1][0]  # the hash is 1.0 exactly


def _answer(key: str, where: str, value: Any, variants: tuple[tuple[str, float], ...]) -> FlagValue:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value and (not variants or value in dict(variants)):
        return value
    names = ", ".join(name for name, _ in variants)
    expected = f"true, false or one of its variants ({names})" if variants else "true or false"
    raise ValueError(f"flag {key!r}: {where} answers {value!r}; expected {expected}")


def _named(
    key: str, field: str, value: Any, variants: tuple[tuple[str, float], ...]
) -> dict[str, FlagValue]:
    """``organisations`` / ``callers``: a list (on, or the first variant) or a mapping."""
    if isinstance(value, (list, tuple)):
        on: FlagValue = variants[0][0] if variants else True
        return {str(name): on for name in value}
    if isinstance(value, Mapping):
        return {
            str(name): _answer(key, f"{field}[{name!r}]", answer, variants)
            for name, answer in value.items()
        }
    raise ValueError(f"flag {key!r}: {field} must be a list of ids or a mapping of id to answer")


_FIELDS = {"rollout", "by", "variants", "organisations", "callers", "enabled"}


def parse_flag(key: str, spec: Any) -> LocalFlag:
    """One definition of the configuration; raises ``ValueError`` naming the flag."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a flag key must be a non-empty string, not {key!r}")
    if isinstance(spec, (bool, str)):
        return LocalFlag(key, fixed=_answer(key, "its value", spec, ()))
    if not isinstance(spec, Mapping):
        raise ValueError(f"flag {key!r}: a definition is true, false, a variant name or a mapping")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ValueError(
            f"flag {key!r}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_FIELDS))}"
        )
    if spec.get("enabled", True) is False:
        return LocalFlag(key, fixed=False)
    variants_spec = spec.get("variants") or {}
    if not isinstance(variants_spec, Mapping):
        raise ValueError(f"flag {key!r}: variants must map each variant name to its share")
    try:
        variants = tuple((str(name), float(share)) for name, share in variants_spec.items())
    except (TypeError, ValueError):
        raise ValueError(f"flag {key!r}: each variant's share is a number") from None
    total = sum(share for _, share in variants)
    if variants and (any(share < 0 for _, share in variants) or abs(total - 100) > 1e-6):
        raise ValueError(f"flag {key!r}: the variants' shares must add up to 100, not {total:g}")
    named = "organisations" in spec or "callers" in spec
    rollout = spec.get("rollout", 0 if named else 100)
    if (
        isinstance(rollout, bool)
        or not isinstance(rollout, (int, float))
        or not 0 <= rollout <= 100
    ):
        raise ValueError(f"flag {key!r}: rollout is a share from 0 to 100, not {rollout!r}")
    by = spec.get("by", "caller")
    if by not in ("caller", "organisation"):
        raise ValueError(f"flag {key!r}: by is 'caller' or 'organisation', not {by!r}")
    return LocalFlag(
        key,
        rollout=float(rollout),
        by=by,
        variants=variants,
        organisations=_named(key, "organisations", spec["organisations"], variants)
        if "organisations" in spec
        else None,
        callers=_named(key, "callers", spec["callers"], variants) if "callers" in spec else None,
    )


def parse_flags(definitions: Mapping[str, Any]) -> dict[str, LocalFlag]:
    """Every definition of a mapping, validated (``ValueError`` names the first bad one)."""
    return {key: parse_flag(key, spec) for key, spec in definitions.items()}


def read_flags_file(path: Path) -> dict[str, Any]:
    """The definitions of a JSON file (an object of flag key → definition)."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a JSON object of flag key to definition")
    return loaded


class FlagsFile:
    """A JSON file of definitions (``flags_file``), read again when it changes: ops can
    roll a flag out or back by editing it, without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None

    def _stat(self) -> tuple[int, int]:
        info = os.stat(self.path)
        return info.st_mtime_ns, info.st_size

    def load(self) -> dict[str, LocalFlag]:
        """The file's definitions, validated; ``ValueError`` says what is wrong."""
        try:
            stamp = self._stat()
        except OSError as exc:
            raise ValueError(f"cannot read {self.path}: {exc}") from None
        flags = parse_flags(read_flags_file(self.path))
        self._stamp = stamp
        return flags

    def changed(self) -> bool:
        """Whether the file was written since it was last loaded (a file that went
        missing has not changed: its last definitions stand)."""
        try:
            return self._stat() != self._stamp
        except OSError:
            return False
