"""Django integration: an app and a middleware, configured from ``settings.APIUSAGE``.

::

    INSTALLED_APPS = [..., "django_apiusage"]
    MIDDLEWARE = ["django_apiusage.middleware.ApiUsageMiddleware", ...]
    APIUSAGE = {"IDENTIFY": "myproject.analytics.caller", "ORGANISATION_GROUP": "company"}

Under an ASGI server, build ``application`` with ``django_apiusage.asgi.get_asgi_application()``
(Django's handler plus the lifespan protocol), so that apiusage flushes when the server stops.

Importing this package does not import Django settings; the work starts in the app's
``ready()`` and in the middleware.
"""
