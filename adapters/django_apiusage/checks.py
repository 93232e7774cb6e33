"""System checks: ``manage.py check`` reports apiusage misconfiguration with an id and a hint."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from apiusage import ConfigurationError
from django_apiusage.conf import read_config

MIDDLEWARE_PATH = "django_apiusage.middleware.ApiUsageMiddleware"


@register(Tags.compatibility)
def check_apiusage(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    try:
        read_config()
    except ConfigurationError as exc:
        messages.append(
            Error(
                str(exc),
                hint="Fix the value in settings.APIUSAGE (or the APIUSAGE_* environment "
                "variable); see the apiusage configuration reference.",
                id="django_apiusage.E001",
            )
        )
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware:
        messages.append(
            Warning(
                "django_apiusage is installed but its middleware is not in MIDDLEWARE, "
                "so no requests are recorded.",
                hint=f"Add {MIDDLEWARE_PATH!r} at the top of MIDDLEWARE.",
                id="django_apiusage.W001",
            )
        )
    elif middleware.index(MIDDLEWARE_PATH) != 0:
        messages.append(
            Warning(
                "ApiUsageMiddleware is not the first middleware: requests answered by the "
                "middleware above it (redirects, CORS preflights, security rejections) are "
                "not recorded, and their time is not counted.",
                hint=f"Move {MIDDLEWARE_PATH!r} to the top of MIDDLEWARE.",
                id="django_apiusage.W002",
            )
        )
    return messages
