"""Django app for apiusage (filled in by the adapters work)."""
