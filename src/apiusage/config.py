"""Configuration: keyword arguments, then ``APIUSAGE_*`` / ``POSTHOG_*`` environment, then ``.env``.

Validation happens once, when the middleware or client is built, so a bad value stops
start-up with a message that names the setting instead of failing every request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConfigurationError", "Settings", "load_settings"]

VersionSource = Literal["path", "header", "media_type", "query"]

DEFAULT_EXCLUDED_PATHS = ("/ping", "/metrics", "/docs", "/redoc")
#: Last path segments never recorded, under any prefix (``/api/v1/utils/health-check/``).
DEFAULT_EXCLUDED_NAMES = (
    "health",
    "healthz",
    "healthcheck",
    "health-check",
    "health_check",
    "livez",
    "readyz",
    "openapi.json",
    "openapi.yaml",
    "swagger.json",
    "favicon.ico",
)


class ConfigurationError(ValueError):
    """Raised at start-up when apiusage is configured with a value it cannot use."""


class Settings(BaseSettings):
    """Every apiusage setting, with its environment variable ``APIUSAGE_<NAME>``.

    The PostHog credentials also read the ``POSTHOG_API_KEY`` / ``POSTHOG_HOST`` variables
    that PostHog's own SDKs use. Leave ``posthog_api_key`` unset to write events to the
    embedded local store instead.
    """

    model_config = SettingsConfigDict(
        env_prefix="APIUSAGE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # --- where events go -------------------------------------------------------------
    posthog_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "posthog_api_key", "POSTHOG_API_KEY", "APIUSAGE_POSTHOG_API_KEY"
        ),
        description="PostHog project API key. Unset: events go to the local store.",
    )
    posthog_host: str = Field(
        default="https://us.i.posthog.com",
        validation_alias=AliasChoices("posthog_host", "POSTHOG_HOST", "APIUSAGE_POSTHOG_HOST"),
        description="PostHog ingestion host (EU cloud: https://eu.i.posthog.com).",
    )
    posthog_personal_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "posthog_personal_api_key",
            "POSTHOG_PERSONAL_API_KEY",
            "APIUSAGE_POSTHOG_PERSONAL_API_KEY",
        ),
        description="A PostHog personal API key with query read access, for "
        "apiusage report --posthog (never for sending events).",
    )
    posthog_project_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "posthog_project_id", "POSTHOG_PROJECT_ID", "APIUSAGE_POSTHOG_PROJECT_ID"
        ),
        description="The PostHog project whose events apiusage report --posthog reads.",
    )
    posthog_app_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "posthog_app_host", "POSTHOG_APP_HOST", "APIUSAGE_POSTHOG_APP_HOST"
        ),
        description="Where PostHog's query API is: by default the app host of "
        "posthog_host (https://us.posthog.com for https://us.i.posthog.com), or "
        "posthog_host itself when self-hosted.",
    )
    store: Path = Field(
        default=Path(".apiusage/events.sqlite3"),
        description="SQLite file of the embedded local store (used when no PostHog key is set).",
    )
    enabled: bool = Field(
        default=True, description="False: the middleware passes requests through untouched."
    )

    # --- the event ---------------------------------------------------------------------
    event_name: str = Field(default="api_request", min_length=1, max_length=200)
    organisation_group: str = Field(
        default="organisation",
        min_length=1,
        max_length=100,
        description="PostHog group type that organisations are sent as.",
    )
    framework: str | None = Field(
        default=None, description="Framework name recorded on events; adapters set it."
    )

    # --- cost controls -------------------------------------------------------------
    exclude_paths: tuple[str, ...] = Field(
        default=DEFAULT_EXCLUDED_PATHS,
        description="Paths (exact, or prefixes ending in '/') that are never recorded.",
    )
    exclude_path_names: tuple[str, ...] = Field(
        default=DEFAULT_EXCLUDED_NAMES,
        description="Last path segments (health checks, API schemas) never recorded, "
        "under any prefix.",
    )
    exclude_framework_paths: bool = Field(
        default=True,
        description="Also leave out what the framework serves itself: FastAPI's "
        "openapi_url, docs_url and redoc_url, static files (Starlette and FastAPI "
        "StaticFiles mounts, Flask's static_url_path, Django's STATIC_URL and MEDIA_URL).",
    )
    sample_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of requests recorded."
    )
    route_sample_rates: dict[str, float] = Field(
        default_factory=dict,
        description="Per route template sample rates, e.g. {'/v1/events': 0.1}.",
    )
    deprecation_headers: bool = Field(
        default=False,
        description="Answer requests to deprecated routes with the Deprecation (RFC 9745) "
        "and, where a date is set, Sunset (RFC 8594) headers.",
    )
    deprecation_dates: dict[str, str] = Field(
        default_factory=dict,
        description="When each deprecated route was deprecated, for the Deprecation header: "
        "{'GET /v1/reports': '2026-06-30'}; unset, the time apiusage learned it.",
    )
    sunset_dates: dict[str, str] = Field(
        default_factory=dict,
        description="When each deprecated route goes away, for the Sunset header: "
        "{'/v1/reports': '2027-01-31'}.",
    )
    journeys: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description=(
            "Journeys to report as funnels: a name and its steps (journey event names) in "
            "order, e.g. {'onboarding': ['user_signup', 'project_create']}."
        ),
    )
    journey_window_days: float = Field(
        default=14.0,
        gt=0,
        description="A caller's journey steps count when they fall within this many days of "
        "its first step.",
    )
    deprecated_routes: tuple[str, ...] = Field(
        default=(),
        description=(
            "Routes to report as deprecated, besides those the framework marks: "
            "'GET /v1/reports' (one method) or '/v1/reports' (any), in OpenAPI's or the "
            "framework's template syntax."
        ),
    )

    # --- detection -----------------------------------------------------------------
    version_sources: tuple[VersionSource, ...] = ("path", "header", "media_type", "query")
    version_headers: tuple[str, ...] = ("api-version", "x-api-version", "accept-version")
    version_query_params: tuple[str, ...] = ("api-version", "api_version", "version")
    api_key_headers: tuple[str, ...] = ("x-api-key", "api-key", "x-api-token")
    api_key_query_params: tuple[str, ...] = ("api_key", "apikey", "key")
    token_query_params: tuple[str, ...] = ("access_token", "token")
    session_cookies: tuple[str, ...] = ("sessionid", "session", "connect.sid", "_session_id")

    # --- identity ------------------------------------------------------------------
    identity_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Key for the keyed hash that turns API keys into stable identities. Set it in "
            "production; unset, it is derived from the PostHog key, or kept in the local "
            "store's folder."
        ),
    )
    caller_header: str | None = Field(
        default=None, description="Header naming the caller, for the built-in header resolver."
    )
    credential_callers: bool = Field(
        default=True,
        description=(
            "Name a caller the app did not name by a keyed hash of its API key, opaque "
            "bearer token or basic-auth user name. Off: such requests are anonymous."
        ),
    )
    state_attribute: str = Field(
        default="user",
        description="Attribute of request.state / scope['state'] holding the caller.",
    )

    # --- feature flags ---------------------------------------------------------------
    flags: dict[str, Any] = Field(
        default_factory=dict,
        description="Flags defined here (win over flags_file and PostHog's): "
        "{'new-pagination': {'rollout': 20, 'by': 'organisation'}}; see the experiments page.",
    )
    flags_file: Path | None = Field(
        default=None,
        description="A JSON file of flag definitions, read at start-up and again when it changes.",
    )
    posthog_flags_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "posthog_flags_api_key",
            "POSTHOG_FLAGS_API_KEY",
            "APIUSAGE_POSTHOG_FLAGS_API_KEY",
        ),
        description="A PostHog feature flags secure API key (phs_...) or personal API key: "
        "PostHog's flags are then evaluated in this process.",
    )
    flag_poll_interval: float = Field(
        default=30.0, gt=0, description="Seconds between fetches of PostHog's flag definitions."
    )
    flags_header: bool = Field(
        default=False,
        description="Name the flags a request was served with in an X-Feature-Flags "
        "response header (for debugging).",
    )

    # --- delivery --------------------------------------------------------------------
    delivery: Literal["auto", "background", "end_of_request"] = Field(
        default="auto",
        description=(
            "Flush strategy: 'background' batches by size and interval on a worker; "
            "'end_of_request' delivers each request's events before the request ends "
            "(serverless runtimes that freeze between requests); 'auto' picks "
            "end_of_request on a serverless runtime, background elsewhere."
        ),
    )
    request_flush_timeout: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds a request may wait for its events at its end (end_of_request).",
    )
    max_queue_size: int = Field(default=10_000, ge=1, description="Records held in memory at most.")
    max_queue_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes (estimated) that queued records may hold in memory at most.",
    )
    batch_size: int = Field(default=100, ge=1, le=10_000)
    flush_interval: float = Field(
        default=1.0, gt=0, le=3600, description="Seconds between batches."
    )
    spool: str = Field(
        default="auto",
        description=(
            "Where events wait on disk while PostHog cannot be reached: 'auto' (a file in "
            "the user's cache directory, else the temporary directory), 'off', or a path."
        ),
    )
    spool_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes of events the spool holds at most; the oldest go first.",
    )
    catch_signals: bool = Field(
        default=True,
        description=(
            "Deliver what is queued on SIGTERM/SIGINT before handing the signal on "
            "(chained in front of the server's own handlers)."
        ),
    )
    shutdown_timeout: float = Field(
        default=5.0, ge=0, le=300, description="Seconds shutdown may spend flushing."
    )
    posthog_timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds one request to PostHog may take."
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Attempts per batch (with backoff) before its events count as dropped.",
    )

    @field_validator("posthog_host")
    @classmethod
    def _host_is_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL such as https://us.i.posthog.com")
        return value.rstrip("/")

    @field_validator("identity_secret")
    @classmethod
    def _secret_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("exclude_paths")
    @classmethod
    def _paths_start_with_slash(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"every path must start with '/': {path!r}")
        return value

    @field_validator("exclude_path_names")
    @classmethod
    def _names_are_one_segment(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name or "/" in name:
                raise ValueError(f"a name is one path segment, without '/': {name!r}")
        return value

    @field_validator("deprecation_dates", "sunset_dates")
    @classmethod
    def _dates_of_routes(cls, value: dict[str, str]) -> dict[str, str]:
        from apiusage.inventory import parse_route_entry  # imports this module
        from apiusage.notices import parse_date

        for entry, day in value.items():
            parse_route_entry(entry)
            try:
                parse_date(day)
            except ValueError:
                message = f"{day!r} (for {entry!r}) is not an ISO date such as 2027-01-31"
                raise ValueError(message) from None
        return value

    @field_validator("journeys")
    @classmethod
    def _journeys_have_steps(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, steps in value.items():
            if len(steps) < 2 or not all(isinstance(step, str) and step for step in steps):
                raise ValueError(f"journey {name!r} needs at least two event names, in order")
        return value

    @field_validator("deprecated_routes")
    @classmethod
    def _routes_are_templates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from apiusage.inventory import parse_route_entry

        for entry in value:
            parse_route_entry(entry)
        return value

    @field_validator("route_sample_rates")
    @classmethod
    def _rates_are_shares(cls, value: dict[str, float]) -> dict[str, float]:
        for route, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {route!r} must be between 0 and 1, got {rate}")
        return value

    @field_validator(
        "version_headers",
        "api_key_headers",
        "version_query_params",
        "api_key_query_params",
        "token_query_params",
    )
    @classmethod
    def _lower_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip().lower() for name in value if name.strip())

    @field_validator("caller_header")
    @classmethod
    def _lower_header(cls, value: str | None) -> str | None:
        return value.strip().lower() if value else None

    @property
    def uses_posthog(self) -> bool:
        """True when events go to PostHog rather than the local store."""
        return self.posthog_api_key is not None and bool(self.posthog_api_key.get_secret_value())


def _setting_label(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    field = Settings.model_fields.get(name)
    if field is None:
        for candidate, info in Settings.model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, AliasChoices) and name in alias.choices:
                name, field = candidate, info
                break
    env = {"posthog_api_key": "POSTHOG_API_KEY", "posthog_host": "POSTHOG_HOST"}.get(
        name, f"APIUSAGE_{name.upper()}"
    )
    return f"{name} ({env})"


def _accepted_names() -> set[str]:
    names = set(Settings.model_fields)
    for info in Settings.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            names.update(str(choice) for choice in info.validation_alias.choices)
    return names


def load_settings(settings: Settings | None = None, **overrides: Any) -> Settings:
    """Build settings from keyword overrides and the environment, failing with a clear message."""
    if settings is not None:
        if not overrides:
            return settings
        merged = {**settings.model_dump(), **overrides}
        overrides = merged
    unknown = sorted(set(overrides) - _accepted_names())
    if unknown:
        raise ConfigurationError(
            f"unknown apiusage setting(s): {', '.join(unknown)}; see the configuration reference"
        )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_setting_label(error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigurationError(f"invalid apiusage configuration: {problems}") from None
    except ValueError as exc:
        # pydantic-settings' SettingsError (its import path moved between releases): a list
        # or mapping setting from the environment or .env that is not valid JSON.
        match = re.search(r'field "([^"]+)"', str(exc))
        label = _setting_label((match.group(1),)) if match else "a setting"
        raise ConfigurationError(
            f"invalid apiusage configuration: {label}: cannot parse the value ({exc}); "
            'lists and mappings must be JSON, e.g. ["/health", "/metrics"]'
        ) from None
