"""Starlette adapter for apiusage.

Filled in by the adapters work; until then use ``apiusage.ASGIMiddleware``.
"""
