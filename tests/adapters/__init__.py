"""The framework adapters, tested through the example apps in docs/examples/."""
