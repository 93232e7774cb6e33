"""What a configuration means for delivery: which sink, and which identity secret."""

from __future__ import annotations

import hashlib
import inspect
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from apiusage.config import ConfigurationError, Settings
from apiusage.feature_flags import FlagService
from apiusage.feature_flags.local import FlagsFile, parse_flags
from apiusage.feature_flags.posthog import PostHogFlags
from apiusage.health import Stats, logger
from apiusage.private_paths import owned_privately, private_directory
from apiusage.sinks.base import Sink
from apiusage.sinks.discard import DiscardSink
from apiusage.sinks.posthog import PostHogSink
from apiusage.sinks.store import LocalStoreSink
from apiusage.wire.spool import Spool

__all__ = ["default_sink", "identity_secret", "spool_for"]


def default_sink(settings: Settings, posthog_client: Any, stats: Stats) -> Sink:
    """The sink a configuration means: nothing (disabled), the PostHog client given,
    PostHog (a key is set), else the local store."""
    if not settings.enabled:
        return DiscardSink()
    if posthog_client is not None:
        if (
            getattr(posthog_client, "disabled", False)
            or getattr(posthog_client, "send", True) is False
        ):
            logger.info("apiusage: the posthog_client given is disabled; nothing is sent")
            return DiscardSink()
        try:
            return PostHogSink.from_client(
                posthog_client,
                stats=stats,
                spool=spool_for(settings, getattr(posthog_client, "api_key", "")),
            )
        except ValueError as exc:
            raise ConfigurationError(f"posthog_client: {exc}") from None
    if settings.uses_posthog:
        assert settings.posthog_api_key is not None
        logger.info("apiusage: sending events to PostHog at %s", settings.posthog_host)
        _warn_if_in_clear(settings.posthog_host)
        return PostHogSink(
            settings.posthog_api_key.get_secret_value(),
            settings.posthog_host,
            stats=stats,
            timeout=settings.posthog_timeout,
            max_attempts=settings.max_attempts,
            spool=spool_for(settings, settings.posthog_api_key.get_secret_value()),
        )
    path = settings.store.resolve()
    notice = (
        f"apiusage: no POSTHOG_API_KEY set; events go to the local store at {path} "
        f"(see them with: apiusage report --store {path})"
    )
    try:
        return LocalStoreSink(path, stats=stats, notice=notice)
    except Exception as exc:
        raise ConfigurationError(
            f"store (APIUSAGE_STORE): cannot open the local store at {path}: {exc}"
        ) from exc


def flag_service(settings: Settings, posthog_client: Any, stats: Stats) -> FlagService:
    """The client's flags: its own definitions (the ``flags`` setting over ``flags_file``)
    and, with a flags key or a handed-in client that has one, PostHog's."""
    try:
        local = parse_flags(settings.flags)
    except ValueError as exc:
        raise ConfigurationError(f"flags: {exc}") from None
    file = None if settings.flags_file is None else FlagsFile(settings.flags_file)
    try:
        file_definitions = file.load() if file is not None else None
    except ValueError as exc:
        raise ConfigurationError(f"flags_file (APIUSAGE_FLAGS_FILE): {exc}") from None
    remote = None
    if posthog_client is not None and (
        getattr(posthog_client, "secret_key", None)
        or getattr(posthog_client, "personal_api_key", None)
    ):
        remote = PostHogFlags(posthog_client, settings.organisation_group, stats, owned=False)
    elif settings.posthog_flags_api_key is not None and settings.enabled:
        from posthog import Posthog  # only when PostHog's flags are used

        key = settings.posthog_api_key.get_secret_value() if settings.posthog_api_key else ""
        if not key:
            raise ConfigurationError(
                "posthog_flags_api_key (POSTHOG_FLAGS_API_KEY) is set, but not the project "
                "key: set POSTHOG_API_KEY too"
            )
        secret = settings.posthog_flags_api_key.get_secret_value()
        # posthog >= 7.5x names it secret_key; personal_api_key is the older (deprecated) name.
        takes_secret_key = "secret_key" in inspect.signature(Posthog).parameters
        secret_option: dict[str, Any] = (
            {"secret_key": secret} if takes_secret_key else {"personal_api_key": secret}
        )
        client = Posthog(
            key,
            host=settings.posthog_host,
            poll_interval=settings.flag_poll_interval,
            send=False,  # this client only evaluates flags: apiusage sends the events
            **secret_option,
        )
        remote = PostHogFlags(client, settings.organisation_group, stats, owned=True)
    if remote is not None:
        remote.start()
    return FlagService(local, remote, stats, file=file, file_definitions=file_definitions)


def _warn_if_in_clear(host: str) -> None:
    """``http://`` to another machine sends the project key and every event unencrypted."""
    hostname = urlsplit(host).hostname or ""
    if host.startswith("http://") and hostname not in ("localhost", "127.0.0.1", "::1"):
        logger.warning(
            "apiusage: posthog_host %s is plain http: the project key and every event cross "
            "the network unencrypted. Use https://.",
            host,
        )


def identity_secret(settings: Settings, posthog_client: Any) -> bytes:
    """The key of API-key identities: the setting, else derived from the PostHog key,
    else a random secret kept beside the local store."""
    if not settings.enabled:
        return secrets.token_bytes(32)  # nothing is recorded: keep no secret file either
    if settings.identity_secret is not None:  # validated: at least 16 characters
        return settings.identity_secret.get_secret_value().encode()
    key = getattr(posthog_client, "api_key", None)
    if not isinstance(key, str) and settings.posthog_api_key is not None:
        key = settings.posthog_api_key.get_secret_value()
    if key:
        logger.warning(
            "apiusage: APIUSAGE_IDENTITY_SECRET is not set; API-key identities are keyed "
            "with a hash of the PostHog project key. Set a secret of your own."
        )
        return hashlib.sha256(b"apiusage identity v1\0" + key.encode()).digest()
    return _local_secret(settings.store.resolve().parent / "identity_secret")


def _local_secret(path: Path) -> bytes:
    """A random secret kept beside the local store, created once and shared by all workers."""
    try:
        private_directory(path.parent)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            value = path.read_bytes().strip()
            if len(value) >= 32:
                return value
            time.sleep(0.01)
        raise ConfigurationError(f"identity secret file {path} is empty or too short") from None
    except OSError as exc:
        raise ConfigurationError(
            f"identity_secret (APIUSAGE_IDENTITY_SECRET): not set, and no secret can be kept at "
            f"{path} ({exc}); set APIUSAGE_IDENTITY_SECRET"
        ) from None
    value = secrets.token_hex(32).encode()
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(value)
    return value


def spool_for(settings: Settings, api_key: str) -> Spool | None:
    """The spool a configuration means (see :mod:`apiusage.wire.spool`): one file per PostHog
    project and host, shared by the processes of one user."""
    if settings.spool == "off":
        return None
    if settings.spool != "auto":
        return Spool(Path(settings.spool).expanduser(), max_bytes=settings.spool_max_bytes)
    project = hashlib.sha256(f"{settings.posthog_host}\n{api_key}".encode()).hexdigest()[:16]
    directory = _spool_directory()
    if not owned_privately(directory):
        logger.warning(
            "apiusage: the spool is off: %s belongs to another user or others may write "
            "to it, so events kept there could be read or forged. Set APIUSAGE_SPOOL to a "
            "path of your own.",
            directory,
        )
        return None
    return Spool(directory / f"spool-{project}.sqlite3", max_bytes=settings.spool_max_bytes)


def _spool_directory() -> Path:
    """``$XDG_CACHE_HOME/apiusage`` or ``~/.cache/apiusage`` when writable (a server's
    user), else the temporary directory (read-only homes: containers, AWS Lambda)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = Path(cache) / "apiusage"
    existing = directory
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent  # nothing is created until something is spooled
    if existing.is_dir() and os.access(existing, os.W_OK):
        return directory
    return Path(tempfile.gettempdir()) / f"apiusage-{_user_id()}"


def _user_id() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else "user"
