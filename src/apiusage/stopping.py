"""Stop signals: deliver what was recorded before the process goes, whatever the server does.

``atexit`` alone is not enough. uvicorn catches SIGTERM, shuts down, then raises the
signal again with the default handler, which ends the process without running ``atexit``;
so does any process that gets SIGTERM with no handler of its own (``manage.py`` commands,
plain scripts). apiusage therefore chains a handler in front of whatever handles SIGTERM
and SIGINT when the first client is made in the main thread (signals can only be caught
there). On a stop signal it:

1. marks the process as stopping: from then on each request waits for its own events to
   be delivered before it ends (a server waits for its requests before it exits), without
   blocking an event loop (the ASGI middleware awaits a future the worker resolves);
2. delivers what is queued, within the one ``shutdown_timeout`` the whole stop shares
   (see :func:`apiusage.lifetime.stop_deadline`), and keeps on disk what it could not;
3. hands the signal on: to the handler it replaced (uvicorn's, gunicorn's, Django's), or,
   where there was none, by ending the process as the signal would have. It never
   swallows a signal, and a second one goes straight on (a second Ctrl-C still stops).

A signal that was ignored (``SIG_IGN``) stays ignored; Python's own SIGINT handler
(``KeyboardInterrupt``) is chained without delivering, since ``atexit`` then runs.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["catch_stop_signals", "is_stopping"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_stopping = False
_installed = False
_install_lock = threading.Lock()


def is_stopping() -> bool:
    """True once a stop signal reached this process."""
    return _stopping


def catch_stop_signals(deliver: Callable[[], None]) -> bool:
    """Chain the stop-signal handler in front of the current ones, once per process.

    ``deliver`` is called on the first stop signal (not for a plain ``KeyboardInterrupt``)
    and must bound its own time. Returns False when this is not the main thread, where
    Python allows no signal handler to be set.
    """
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return False
    with _install_lock:
        if _installed:
            return True
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is None or previous == signal.SIG_IGN:
                continue  # set outside Python, or ignored on purpose: leave it as it is
            signal.signal(signum, _handler(signum, previous, deliver))
        _installed = True
    return True


def _handler(
    signum: int, previous: Any, deliver: Callable[[], None]
) -> Callable[[int, FrameType | None], Any]:
    def on_stop_signal(received: int, frame: FrameType | None) -> Any:
        global _stopping
        first = not _stopping
        if previous is not signal.default_int_handler:  # KeyboardInterrupt: atexit delivers
            _stopping = True
            if first:
                deliver()
        if callable(previous):
            return previous(received, frame)
        # SIG_DFL: end the process the way the signal would have without us.
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return None

    on_stop_signal.__qualname__ = f"apiusage_{signal.Signals(signum).name.lower()}_handler"
    return on_stop_signal


def _forget_in_child() -> None:
    # A forked worker starts serving: a stop signal the parent got is not the child's.
    global _stopping
    _stopping = False


os.register_at_fork(after_in_child=_forget_in_child)
