"""Blocking calls off the event loop: awaited in a thread, under asyncio or trio."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["in_trio", "run_in_thread"]

_T = TypeVar("_T")


def in_trio() -> bool:
    """True in a trio task (where asyncio's loop, futures and executors do not exist)."""
    trio: Any = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False  # trio is imported but this is not a trio task
    return True


async def run_in_thread(function: Callable[[], _T]) -> _T:
    """Run a blocking call in a thread and await it, under asyncio or trio.

    (asgiref's ``sync_to_async`` needs asyncio: under trio it fails.)
    """
    if in_trio():
        trio: Any = sys.modules["trio"]
        result: _T = await trio.to_thread.run_sync(function)
        return result
    return await asyncio.get_running_loop().run_in_executor(None, function)
