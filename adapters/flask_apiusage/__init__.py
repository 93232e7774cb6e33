"""Flask extension for apiusage.

Filled in by the adapters work; until then use ``apiusage.WSGIMiddleware``.
"""
