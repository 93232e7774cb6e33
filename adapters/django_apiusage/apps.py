"""The Django app: validates configuration and starts apiusage when Django is ready."""

from __future__ import annotations

import logging

from django.apps import AppConfig

from apiusage import ConfigurationError

logger = logging.getLogger("apiusage")


class ApiUsageConfig(AppConfig):
    name = "django_apiusage"
    verbose_name = "API usage analytics"
    default = True

    def ready(self) -> None:
        from django.core.signals import got_request_exception

        from django_apiusage import checks  # noqa: F401  (registers the system checks)
        from django_apiusage.conf import client
        from django_apiusage.reading import record_exception

        got_request_exception.connect(record_exception, dispatch_uid="django_apiusage")
        try:
            # Kept here, so the project's client lives as long as Django's app registry.
            self.client = client()
        except ConfigurationError as exc:
            # `manage.py check` reports it (django_apiusage.E001); serving fails at start-up
            # when the middleware is loaded.
            logger.error("apiusage is misconfigured: %s", exc)
