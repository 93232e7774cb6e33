"""Getting records off the request path: a bounded queue drained by one background thread.

The request path only appends to a deque (no I/O; one uncontended lock keeps positions in
the queue's order, for callers that wait for their own items). A daemon thread wakes as
soon as a batch is full and sends full batches only, or every ``flush_interval`` seconds
and sends everything queued; when a wait ran its course it gives the sink a moment for
its own work (replaying spooled events). Sending only full batches under load matters: a
worker that also sent the few records that arrived during its last request would post
a handful of events at a time, and pay a request's CPU for each handful.

A request that must see its events delivered before it ends waits for the worker:
blocking (``deliver_through``) or, on an event loop, for a callback (``when_delivered``).
Shutdown drains what is queued within a time bound; what is left then is kept on disk
when the sink can (``spill``), else counted as dropped, never lost silently.

:class:`Delivery` is the seam for other strategies; :class:`BackgroundDelivery` is the
default.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from apiusage.health import Stats

__all__ = ["DEFAULT_ITEM_BYTES", "BackgroundDelivery", "Delivery"]

#: Estimated size of a queued item when the caller does not say (a ``track()`` call …).
DEFAULT_ITEM_BYTES = 1024
#: At close, once the deadline passed: how long a batch still in the worker's hands may
#: take to be settled before it counts as lost.
_SETTLE_SECONDS = 0.25


class Delivery(Protocol):
    """How queued work reaches the sink."""

    def submit(self, item: Any) -> bool:
        """Accept one item without blocking; False if it was dropped.

        An item's estimated size in memory is its ``queued_bytes`` attribute when it has
        one (request records do), else :data:`DEFAULT_ITEM_BYTES`; once the queue holds
        more than two batches, an item's ``measured_bytes()`` is used when it has one.
        """

    def flush(self, timeout: float) -> bool:
        """Deliver everything submitted so far; True if done within ``timeout`` seconds.

        Blocks: never call it on an event loop thread.
        """

    @property
    def submitted(self) -> int:
        """How many items were accepted so far (a position in the queue)."""

    def deliver_through(self, position: int, timeout: float) -> bool:
        """Deliver the items accepted up to ``position`` (a :attr:`submitted` value) now, not
        at the next batch; True once they are delivered, False after ``timeout`` seconds.

        Items accepted later do not hold the caller up. Blocks: never call it on an event
        loop thread.
        """

    def when_delivered(self, position: int, callback: Callable[[], None]) -> bool:
        """:meth:`deliver_through` for callers that must not block (an event loop): the
        items accepted up to ``position`` are delivered now, and ``callback`` is called
        (from another thread, once) when they are, or when delivery stops. False, and no
        call, when they already are. The caller bounds its own wait.
        """

    def spill_queued(self) -> None:
        """The process is about to end and delivery ran out of time: what is still queued
        is kept on disk for the next process when the sink can (else counted as
        ``dropped_at_shutdown``), rather than vanishing with the process."""

    def close(self, timeout: float) -> None:
        """Flush within ``timeout`` and stop; later submissions are dropped and counted."""

    @property
    def pending(self) -> int:
        """Items accepted and not yet handed to the worker."""

    @property
    def behind(self) -> bool:
        """True while the worker is not keeping up with what is submitted."""

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being delivered: closing would not wait."""


Process = Callable[[list[Any]], None]


class BackgroundDelivery:
    """A bounded in-memory queue and one worker thread per process (restarted after fork)."""

    def __init__(
        self,
        process: Process,
        stats: Stats,
        *,
        max_queue_size: int,
        batch_size: int,
        max_queue_bytes: int = 64 * 1024 * 1024,
        flush_interval: float,
        after_fork: Callable[[], None] | None = None,
        when_idle: Callable[[], None] | None = None,
        spill: Callable[[list[Any]], int] | None = None,
    ) -> None:
        self._process = process
        #: Called on the worker after each ``flush_interval`` that no full batch cut short
        #: (the sink replays spooled events then).
        self._when_idle = when_idle
        self._idle_guard = stats.guard("idle work of the delivery worker")
        #: At close, what is still queued when time ran out goes here (the PostHog sink
        #: keeps it on disk for the next process); returns how many items it kept.
        self._spill = spill
        self._spill_guard = stats.guard("keeping what shutdown could not deliver")
        self._stats = stats
        self._batch_guard = stats.guard("delivering a batch")
        self._max_queue_size = max_queue_size
        self._max_queue_bytes = max_queue_bytes
        # More than two batches waiting: the worker is falling behind (see ``behind``).
        self._behind_above = 2 * batch_size
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._after_fork_hook = after_fork
        self._queue: deque[Any] = deque()
        # Estimated bytes queued: ever added (request path) minus ever taken (worker only).
        # A lost update between request threads can only make the bound looser, never drop
        # an event that fits: no lock on the request path for an estimate.
        self._bytes_in = 0
        self._bytes_out = 0
        self._wakeup = threading.Event()
        #: Set (before ``_wakeup``) by whoever needs everything queued sent now, not only
        #: full batches: a flush, a waiter, shutdown.
        self._send_all = False
        self._progress = threading.Condition()
        self._start_lock = threading.Lock()
        self._order = threading.Lock()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._in_flight = 0
        # Items ever accepted, and ever taken out of the queue and processed (worker only):
        # a caller waits for its own items with deliver_through().
        self._accepted = 0
        self._processed = 0
        self._stopping = False
        self._closed = False
        self._flush_waiters = 0
        #: (position, callback) of when_delivered() callers, under ``_progress``.
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        self._forget_on_fork()

    def _forget_on_fork(self) -> None:
        reference = weakref.ref(self)

        def reset_in_child() -> None:
            delivery = reference()
            if delivery is not None:
                delivery._reset_after_fork()

        os.register_at_fork(after_in_child=reset_in_child)

    def _reset_after_fork(self) -> None:
        # The parent's thread does not exist in the child, and its locks may be held.
        # Records queued in the parent stay the parent's to deliver.
        self._queue = deque()
        self._bytes_in = self._bytes_out = 0
        self._wakeup = threading.Event()
        self._send_all = False
        self._progress = threading.Condition()
        self._start_lock = threading.Lock()
        self._order = threading.Lock()
        self._thread = None
        self._busy = False
        self._accepted = self._processed = 0
        self._flush_waiters = 0
        self._waiters = []
        if self._after_fork_hook is not None:
            self._after_fork_hook()

    # ------------------------------------------------------------------ request path
    def submit(self, item: Any) -> bool:
        if self._closed:
            self._stats.add("dropped_at_shutdown")
            return False
        queue = self._queue
        size = getattr(item, "queued_bytes", DEFAULT_ITEM_BYTES)
        if len(queue) > self._behind_above:
            # The worker is behind, so the byte bound may bite: measure instead of estimate.
            measure = getattr(item, "measured_bytes", None)
            if measure is not None:
                size = item.queued_bytes = measure()
        queued_bytes = self._bytes_in - self._bytes_out
        if len(queue) >= self._max_queue_size or queued_bytes + size > self._max_queue_bytes:
            self._stats.add("dropped_queue_full")
            self._stats.warn(
                "queue full",
                "apiusage: the event queue is full (%d records, about %d bytes); events are "
                "being dropped and counted. Raise APIUSAGE_MAX_QUEUE_SIZE / "
                "APIUSAGE_MAX_QUEUE_BYTES or check that delivery keeps up.",
                len(queue),
                queued_bytes,
            )
            return False
        self._bytes_in += size
        with self._order:  # positions must follow the queue's order (deliver_through)
            self._accepted += 1
            queue.append(item)
        if self._thread is None:
            self._start()
        elif len(queue) == self._batch_size:  # wake the worker once per full batch
            self._wakeup.set()
        return True

    # --------------------------------------------------------------------- worker
    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="apiusage-delivery", daemon=True)
            self._thread = thread
            thread.start()

    def _run(self) -> None:
        while True:
            woken = self._wakeup.wait(self._flush_interval)
            self._wakeup.clear()
            # Woken by a full batch: full batches only; the rest waits for the next
            # batch or the interval. Anything else (the interval, a flush) sends it all.
            self._drain(everything=not woken)
            if self._stopping:
                return
            if not woken and self._when_idle is not None:
                with self._idle_guard:
                    self._when_idle()

    def _send_everything(self) -> None:
        """Have the worker send everything queued now, not only full batches."""
        self._send_all = True
        self._wakeup.set()

    def _drain(self, everything: bool = True) -> None:
        queue = self._queue
        batch_size = self._batch_size
        while queue:
            if self._send_all or self._stopping:
                self._send_all = False
                everything = True
            if not everything and len(queue) < batch_size:
                break
            batch: list[Any] = []
            taken = 0
            try:
                while len(batch) < batch_size:
                    item = queue.popleft()
                    batch.append(item)
                    taken += getattr(item, "queued_bytes", DEFAULT_ITEM_BYTES)
            except IndexError:
                pass
            self._bytes_out += taken
            with self._progress:
                self._busy = True
                self._in_flight = len(batch)
            try:
                with self._batch_guard:  # the processor counts its own failures: a bug guard
                    self._process(batch)
            finally:
                with self._progress:
                    self._busy = False
                    self._processed += len(batch)
                    self._progress.notify_all()
                    ready = self._ready_waiters()
                self._call(ready)
        with self._progress:
            self._progress.notify_all()

    def _ready_waiters(self, everyone: bool = False) -> list[Callable[[], None]]:
        """Callbacks of the waiters whose items are processed (all of them when stopping);
        call under ``_progress``."""
        if not self._waiters:
            return []
        processed = self._processed
        ready = [c for p, c in self._waiters if everyone or p <= processed]
        if ready:
            self._waiters = [(p, c) for p, c in self._waiters if not everyone and p > processed]
        return ready

    def _call(self, callbacks: list[Callable[[], None]]) -> None:
        for callback in callbacks:
            with self._batch_guard:
                callback()

    # ------------------------------------------------------------------- shutdown
    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        thread = self._thread
        if thread is None or not thread.is_alive():
            # No worker (nothing submitted yet, or already stopped): drain right here.
            if self._queue and not self._busy:
                self._drain()
            return not self._queue
        return self._wait_until(lambda: not self._queue and not self._busy, deadline)

    def _wait_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wake the worker and wait until ``done()``; False if the deadline passed first."""
        self._send_everything()
        with self._progress:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._send_everything()
                self._progress.wait(min(remaining, 0.05))
        return True

    @property
    def submitted(self) -> int:
        return self._accepted

    def deliver_through(self, position: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self.flush(timeout)
        return self._wait_until(lambda: self._processed >= position, deadline)

    def when_delivered(self, position: int, callback: Callable[[], None]) -> bool:
        with self._progress:
            if self._processed >= position:
                return False
            self._waiters.append((position, callback))
        if self._thread is None:
            self._start()
        self._send_everything()
        return True

    def spill_queued(self) -> None:
        queue = self._queue
        if not queue:
            return
        items: list[Any] = []
        with contextlib.suppress(IndexError):  # the worker may take the last ones first
            while True:
                items.append(queue.popleft())
        self._bytes_out = self._bytes_in
        kept = 0
        if self._spill is not None and items:
            with self._spill_guard:
                kept = self._spill(items)
        if len(items) - kept:
            self._stats.add("dropped_at_shutdown", len(items) - kept)
        with self._progress:
            self._processed += len(items)  # settled: kept on disk, or counted as lost
            self._progress.notify_all()
            ready = self._ready_waiters()
        self._call(ready)

    def close(self, timeout: float) -> None:
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        self._closed = True
        self._stopping = True
        self._send_everything()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
            if self._busy:
                # The sink bounds its requests by the same deadline: a batch in hand now
                # is being settled (spooled, say) and needs moments, not seconds.
                thread.join(_SETTLE_SECONDS)
        self.spill_queued()
        if self._busy:
            # The sink is still holding a batch past the deadline: the process is about to
            # exit, so count it as lost rather than let it vanish uncounted.
            self._stats.add("dropped_at_shutdown", self._in_flight)
        with self._progress:  # no one waits for what will not come
            waiting = self._ready_waiters(everyone=True)
        self._call(waiting)

    @property
    def pending(self) -> int:
        """Records waiting for the worker."""
        return len(self._queue)

    @property
    def behind(self) -> bool:
        """More than two batches wait: the worker is not keeping up right now.

        Then the queue measures what it takes in (its byte bound may bite) and the worker
        stops pausing for the event loop (see :mod:`apiusage.pipeline`).
        """
        return len(self._queue) > self._behind_above

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in the worker's hands."""
        return not self._queue and not self._busy

    @property
    def pending_bytes(self) -> int:
        """Estimated bytes held by the records waiting for the worker."""
        return max(0, self._bytes_in - self._bytes_out)
