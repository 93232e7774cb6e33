"""Flask extension for apiusage (filled in by the adapters work; use apiusage.WSGIMiddleware now)."""
