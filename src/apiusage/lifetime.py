"""How long a client lives: until its last app is dropped, or the process exits.

Nothing the worker thread holds refers back to the client, so a client no app uses any
more becomes garbage; then what it still holds is delivered in a background thread and
its sink is closed. At exit, one hook flushes every live client within its shutdown
timeout and waits for the ones being released; a stop signal flushes them too (see
:mod:`apiusage.stopping`).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from apiusage.delivery import Delivery
from apiusage.health import Stats, logger
from apiusage.sinks.base import Sink
from apiusage.stopping import catch_stop_signals

if TYPE_CHECKING:
    from apiusage.client import UsageClient

__all__ = ["forget", "shut_down", "started", "stop_deadline", "watch"]

#: Clients not closed yet, flushed by one exit hook; held weakly, so an app's client dies
#: with the app.
_live: weakref.WeakSet[UsageClient] = weakref.WeakSet()
#: Threads delivering what released clients still held; joined at exit.
_releasing: set[threading.Thread] = set()
#: When the process's shutdown must be done by (monotonic), once it began.
_stop_deadline: float | None = None


def stop_deadline(timeout: float) -> float:
    """When the app's stop must be done by (monotonic time).

    The first shutdown step (a stop signal, an ASGI lifespan shutdown, the exit hook) sets
    it ``timeout`` seconds ahead; the steps after it (uvicorn runs the lifespan shutdown,
    then re-raises the signal to apiusage's handler, then the exit hook may run) share
    what is left of that one budget, so a stop takes at most ``shutdown_timeout`` however
    many steps run. An app that starts again in the same process (a test client's next
    lifespan) gets a new budget: see :func:`started`.
    """
    global _stop_deadline
    if _stop_deadline is None:
        _stop_deadline = time.monotonic() + timeout
    return _stop_deadline


def started() -> None:
    """An app (re)started in this process (ASGI lifespan startup): no stop is under way."""
    global _stop_deadline
    _stop_deadline = None


def _not_stopping_in_child() -> None:
    global _stop_deadline
    _stop_deadline = None


os.register_at_fork(after_in_child=_not_stopping_in_child)


def watch(
    client: UsageClient,
    delivery: Delivery,
    sink: Sink,
    stats: Stats,
    timeout: float,
    *,
    catch_signals: bool = True,
) -> weakref.finalize[Any, Any]:
    """Release ``client``'s delivery and sink when it becomes garbage; flush it at exit
    (and on a stop signal, with ``catch_signals``: see :mod:`apiusage.stopping`).

    Returns the finalizer: ``detach()`` it when the client is closed by hand.
    """
    release = weakref.finalize(client, _release, delivery, sink, stats, timeout)
    release.atexit = False  # at exit, _close_live_clients closes it in order
    _live.add(client)
    if catch_signals and not catch_stop_signals(_flush_live_clients):
        logger.debug("apiusage: not in the main thread; stop signals are not caught")
    return release


def forget(client: UsageClient) -> None:
    """``client`` was closed: the exit hook has nothing more to do for it."""
    _live.discard(client)


def shut_down(delivery: Delivery, sink: Sink, stats: Stats, timeout: float) -> None:
    """Deliver what is queued within ``timeout``, stop the worker, close the sink."""
    deadline = time.monotonic() + timeout
    with stats.guard("shutting down"):
        shutdown_by = getattr(sink, "shutdown_by", None)
        if shutdown_by is not None:  # no retry backoff may outlast the shutdown
            shutdown_by(deadline)
        delivery.close(timeout)
        sink.close(max(0.0, deadline - time.monotonic()))
    counts = stats.snapshot()
    if counts["dropped"]:
        logger.warning(
            "apiusage: %d events were dropped in this process: %s", counts["dropped"], counts
        )


def _release(delivery: Delivery, sink: Sink, stats: Stats, timeout: float) -> None:
    """A client became garbage: shut it down in a thread, so no caller waits for delivery."""
    if delivery.idle:  # nothing to deliver: stopping is quick
        shut_down(delivery, sink, stats, timeout)
        return
    thread = threading.Thread(
        target=_shut_down_releasing,
        args=(delivery, sink, stats, timeout),
        name="apiusage-release",
        daemon=True,
    )
    _releasing.add(thread)
    thread.start()


def _shut_down_releasing(delivery: Delivery, sink: Sink, stats: Stats, timeout: float) -> None:
    try:
        shut_down(delivery, sink, stats, timeout)
    finally:
        _releasing.discard(threading.current_thread())


def _flush_live_clients() -> None:
    """On a stop signal: deliver what every live client holds, each within its shutdown
    timeout. Never raises: it runs inside a signal handler."""
    for client in list(_live):
        try:
            client.flush_before_exit()
        except Exception as exc:  # flush() counts its own failures; this guards the rest
            client.stats.error("delivering on a stop signal", exc)


def _close_live_clients() -> None:
    """At exit: flush every live client, then wait for the ones being released."""
    for client in list(_live):
        deadline = stop_deadline(client.settings.shutdown_timeout)
        client.close(max(0.0, deadline - time.monotonic()))
    for thread in list(_releasing):
        thread.join()  # each is bounded by its client's shutdown timeout


atexit.register(_close_live_clients)
