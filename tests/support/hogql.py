"""PostHog's own HogQL parser (``hogql-parser`` on PyPI), for checking generated queries.

The parser is a C extension built for PostHog's app, whose ``posthog.hogql`` package it
imports when loaded (for its AST classes and errors). Its JSON entry points need none of
them, so empty stand-ins for those modules let it load beside the posthog SDK, which has
a ``posthog`` package but no ``hogql``.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from typing import Any

__all__ = ["HogQLSyntaxError", "parse_select"]


class HogQLSyntaxError(ValueError):
    """PostHog's parser refused the query."""


class _AnyName(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (Exception,), {"__module__": self.__name__})
        setattr(self, name, value)
        return value


def _parser() -> Any:
    import posthog  # the SDK: the parent package the parser's imports expect

    for name in (
        "posthog.hogql",
        "posthog.hogql.errors",
        "posthog.hogql.ast",
        "posthog.hogql.base",
    ):
        if name not in sys.modules:
            sys.modules[name] = _AnyName(name)
            setattr(
                sys.modules[name.rpartition(".")[0]], name.rpartition(".")[2], sys.modules[name]
            )
    assert posthog is not None
    return importlib.import_module("hogql_parser")


def parse_select(query: str) -> dict[str, Any]:
    """The query's AST as JSON; :class:`HogQLSyntaxError` with PostHog's message if it
    is not valid HogQL."""
    try:
        text = _parser().parse_select_json(query)
    except Exception as exc:  # older parsers raise PostHog's errors (the stand-ins above)
        if type(exc).__module__.startswith("posthog.hogql"):
            raise HogQLSyntaxError(f"{exc}: {query}") from None
        raise
    tree: dict[str, Any] = json.loads(text)
    if tree.get("error"):
        raise HogQLSyntaxError(f"{tree.get('message')} at {tree.get('start')}: {query}")
    return tree
