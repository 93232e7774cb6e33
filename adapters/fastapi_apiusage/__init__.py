"""FastAPI adapter for apiusage (filled in by the adapters work; use apiusage.ASGIMiddleware now)."""
