"""Getting encoded batches to PostHog: gzip, one keep-alive connection, retries.

:class:`HttpTransport` is one urllib3 connection pool of size one (the proxy from
``HTTPS_PROXY`` / ``NO_PROXY`` when the environment names one, certifi's CA bundle when it
is installed, as ``requests`` does). urllib3 is what ``requests`` (and so the posthog
SDK) is built on; used directly it costs a third of the CPU per POST.

:class:`BatchSender` decides what a response means, as PostHog's SDKs do: only a 200 is
success; connection errors, timeouts, 408, 429 and 5xx are retried with exponential
backoff and jitter (``Retry-After`` honoured); 413 splits the batch in halves; any other
answer (400, 401, 403 …) is final and the batch is counted as rejected, not retried.
"""

from __future__ import annotations

import random
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3

from apiusage import __version__
from apiusage.health import Stats
from apiusage.wire.encoding import BatchEncoder, EncodedEvent

__all__ = [
    "BATCH_PATH",
    "BatchSender",
    "HttpTransport",
    "SendOutcome",
    "TransportError",
    "gzip_body",
]

BATCH_PATH = "/batch/"
USER_AGENT = f"apiusage-python/{__version__}"
_GZIP_FRAMING = 31  # zlib wbits for a gzip header and trailer


def gzip_body(body: bytes) -> bytes:
    """``body`` gzipped at the fastest level, in one call (each call lets go of the GIL, and
    every hand-over costs CPU).

    With ISA-L (the ``isal`` package, installed with apiusage where it has wheels) this is
    about 8 times faster than zlib on batch bodies, and a little smaller; zlib otherwise.
    """
    if _isal_zlib is not None:
        return bytes(_isal_zlib.compress(body, 1, wbits=_GZIP_FRAMING))
    if sys.version_info >= (3, 11):
        return zlib.compress(body, 1, wbits=_GZIP_FRAMING)
    compressor = zlib.compressobj(1, zlib.DEFLATED, _GZIP_FRAMING)
    return compressor.compress(body) + compressor.flush()


def _load_isal() -> Any:
    try:
        from isal import isal_zlib
    except ImportError:  # no wheel for this platform: zlib does the same, slower
        return None
    return isal_zlib


_isal_zlib = _load_isal()
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_BATCH_HEADERS = {
    "Content-Type": "application/json",
    "Content-Encoding": "gzip",
    "User-Agent": USER_AGENT,
}


class TransportError(Exception):
    """The request did not get an HTTP answer (connection refused or reset, timeout …)."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpTransport:
    """POSTs bodies to one host over a kept-alive connection. One thread at a time."""

    def __init__(self, host: str, *, timeout: float = 10.0) -> None:
        self.host = host.rstrip("/")
        self.timeout = timeout
        self._manager, self._pool = self._connect()
        self._timeouts: dict[float, urllib3.Timeout] = {}

    def _connect(self) -> tuple[urllib3.PoolManager, urllib3.HTTPConnectionPool | None]:
        options: dict[str, Any] = {"num_pools": 2, "maxsize": 1, "retries": False}
        try:
            import certifi

            options["ca_certs"] = certifi.where()
        except ImportError:  # urllib3 then uses the system's CA store
            pass
        split = urlsplit(self.host)
        proxy = urllib.request.getproxies().get(split.scheme)
        if proxy and not urllib.request.proxy_bypass(split.hostname or ""):
            # Through a proxy: the manager builds absolute-form requests or CONNECT tunnels.
            return urllib3.ProxyManager(proxy, **options), None
        manager = urllib3.PoolManager(**options)
        # Direct: keep the host's pool, so a POST skips URL parsing and pool look-up.
        return manager, manager.connection_from_url(self.host)

    def _timeout(self, seconds: float) -> urllib3.Timeout:
        key = round(seconds, 1)
        timeout = self._timeouts.get(key)
        if timeout is None:
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            timeout = self._timeouts[key] = urllib3.Timeout(connect=min(key, 5.0), read=key)
        return timeout

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str], timeout: float | None = None
    ) -> HttpAnswer:
        seconds = self.timeout if timeout is None else max(0.1, min(timeout, self.timeout))
        options: dict[str, Any] = {
            "body": body,
            "headers": headers,
            "timeout": self._timeout(seconds),
            "retries": False,
            "redirect": False,
            "preload_content": True,
        }
        try:
            if self._pool is not None:
                response = self._pool.urlopen("POST", path, **options)
            else:
                response = self._manager.urlopen("POST", self.host + path, **options)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return HttpAnswer(response.status, response.headers, response.data or b"")

    def after_fork(self) -> None:
        """The parent's sockets must not be shared: the child opens its own."""
        self._manager, self._pool = self._connect()

    def close(self) -> None:
        self._manager.clear()


@dataclass(slots=True)
class SendOutcome:
    """What happened to the events handed to :meth:`BatchSender.send`."""

    delivered: int = 0
    #: Refused by PostHog (400, 401, 403, or one event too large): sending again cannot help.
    rejected: list[EncodedEvent] = field(default_factory=list)
    #: Still undelivered after every retry (PostHog unreachable, 5xx, 429 …).
    failed: list[EncodedEvent] = field(default_factory=list)
    #: What PostHog said when it last refused a batch.
    rejected_because: str = ""
    #: Attempts each body gets.
    attempts: int = 1


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class BatchSender:
    """Sends encoded events in request bodies of bounded size, with retries. One thread."""

    def __init__(
        self,
        transport: HttpTransport,
        encoder: BatchEncoder,
        stats: Stats,
        *,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 60.0,
        max_body_bytes: int = 5 * 1024 * 1024,
        max_event_bytes: int = 1024 * 1024,
    ) -> None:
        self.transport = transport
        self.encoder = encoder
        self.stats = stats
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self._interrupt = threading.Event()
        self._stopped = False
        #: When set (shutdown), no wait or request goes beyond this monotonic time.
        self.deadline: float | None = None

    def stop(self) -> None:
        """Give up waiting between retries (shutdown); a request in flight still finishes."""
        self._stopped = True
        self._interrupt.set()

    def finish_by(self, deadline: float) -> None:
        """Shutdown has begun: a retry wait that would end after ``deadline`` ends now."""
        self.deadline = deadline
        self._interrupt.set()

    def after_fork(self) -> None:
        self._interrupt = threading.Event()
        self._stopped = False
        self.deadline = None
        self.transport.after_fork()

    # ----------------------------------------------------------------- sending
    def send(self, events: Sequence[EncodedEvent], *, attempts: int | None = None) -> SendOutcome:
        """Send ``events`` in bodies under the size limit, each tried up to ``attempts``
        times (default ``max_attempts``)."""
        outcome = SendOutcome(attempts=attempts or self.max_attempts)
        chunk: list[EncodedEvent] = []
        size = 0
        for event in events:
            length = len(event.data)
            if length > self.max_event_bytes:
                outcome.rejected.append(event)
                outcome.rejected_because = f"event of {length} bytes over the limit"
                self.stats.warn(
                    "event too large",
                    "apiusage: a %r event of %d bytes is over PostHog's limit of %d and was "
                    "dropped (counted); keep track() properties small",
                    event.name,
                    length,
                    self.max_event_bytes,
                )
                continue
            if chunk and size + length + 1 > self.max_body_bytes:
                self._send_chunk(chunk, outcome)
                chunk, size = [], 0
            chunk.append(event)
            size += length + 1
        if chunk:
            self._send_chunk(chunk, outcome)
        return outcome

    def _send_chunk(self, chunk: list[EncodedEvent], outcome: SendOutcome) -> None:
        attempt = 0
        while True:
            attempt += 1
            body = gzip_body(self.encoder.body(chunk))
            try:
                answer = self.transport.post(
                    BATCH_PATH, body, _BATCH_HEADERS, timeout=self._remaining()
                )
            except TransportError as exc:
                status, wait_hint, problem = None, None, str(exc)
            else:
                if answer.status == 200:
                    outcome.delivered += len(chunk)
                    return
                status = answer.status
                wait_hint = retry_after_seconds(answer.headers.get("Retry-After"))
                problem = f"HTTP {status}: {answer.body[:200].decode('utf-8', 'replace')}"
            if status == 413 and len(chunk) > 1:
                half = len(chunk) // 2
                self._send_chunk(chunk[:half], outcome)
                self._send_chunk(chunk[half:], outcome)
                return
            if status is not None and status not in _RETRYABLE_STATUSES:
                outcome.rejected.extend(chunk)
                outcome.rejected_because = problem
                self.stats.warn(
                    f"batch rejected {status}",
                    "apiusage: PostHog refused a batch of %d events (%s); they are dropped "
                    "and counted, not retried. Check POSTHOG_API_KEY and POSTHOG_HOST.",
                    len(chunk),
                    problem,
                )
                return
            delay = self._delay(attempt, wait_hint)
            if attempt >= outcome.attempts or not self._wait(delay):
                outcome.failed.extend(chunk)
                self.stats.warn(
                    "batch failed",
                    "apiusage: could not deliver a batch of %d events to PostHog after %d "
                    "attempts (%s)",
                    len(chunk),
                    attempt,
                    problem,
                )
                return

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        exponential = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return exponential * random.uniform(0.5, 1.5)  # jitter: workers do not retry in step

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _wait(self, delay: float) -> bool:
        """Sleep before a retry; False when stopped, or when the deadline would pass first."""
        end = time.monotonic() + delay
        while True:
            if self._stopped or (self.deadline is not None and self.deadline < end):
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            self._interrupt.wait(left)
            self._interrupt.clear()
