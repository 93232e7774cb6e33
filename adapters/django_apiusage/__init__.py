"""Django integration: an app and a middleware, configured from ``settings.APIUSAGE``.

::

    INSTALLED_APPS = [..., "django_apiusage"]
    MIDDLEWARE = ["django_apiusage.middleware.ApiUsageMiddleware", ...]
    APIUSAGE = {"IDENTIFY": "myproject.analytics.caller", "ORGANISATION_GROUP": "company"}

Importing this package does not import Django settings; the work starts in the app's
``ready()`` and in the middleware.
"""
