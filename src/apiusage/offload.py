"""Blocking calls off the event loop: awaited in a thread, under asyncio or trio."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["run_in_thread"]

_T = TypeVar("_T")


async def run_in_thread(function: Callable[[], _T]) -> _T:
    """Run a blocking call in a thread and await it, under asyncio or trio.

    (asgiref's ``sync_to_async`` needs asyncio: under trio it fails.)
    """
    trio: Any = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass  # trio is imported but this is not a trio task
        else:
            result: _T = await trio.to_thread.run_sync(function)
            return result
    return await asyncio.get_running_loop().run_in_executor(None, function)
