"""The usage client: settings, identity resolution, event building and delivery in one place.

Every middleware and adapter holds one :class:`UsageClient`, shared by configuration
(:mod:`apiusage.registry`). Nothing the worker thread holds refers back to the client, so
a client no app uses any more is released; at exit, live clients are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from asgiref.sync import async_to_sync

from apiusage import lifetime
from apiusage.attached import CallerNotRead
from apiusage.backends import default_sink, flag_service, identity_secret
from apiusage.builder import EventBuilder
from apiusage.config import ConfigurationError, Settings, load_settings
from apiusage.delivery import BackgroundDelivery, Delivery
from apiusage.detect.auth import AuthDetector
from apiusage.detect.routes import asgi_route_template
from apiusage.detect.versions import VersionDetector
from apiusage.health import Stats, logger
from apiusage.identity import (
    Identity,
    KeyedHasher,
    Resolver,
    ResolverChain,
    StateResolver,
    from_api_key,
    from_header,
    from_state,
    identity_from_state,
)
from apiusage.inventory import InventoryRequest, RouteSource
from apiusage.notices import DeprecationNotices
from apiusage.offload import in_trio, run_in_thread
from apiusage.pipeline import EventPipeline
from apiusage.record import (
    AVERAGE_HEADER_BYTES,
    JOURNEY_EVENT_BYTES,
    PROPERTY_BYTES,
    RECORD_BYTES,
    IdentifyCall,
    JourneyEvent,
    RequestRecord,
)
from apiusage.recording import IGNORED_REQUEST, NotMeasured, Recording, current, current_record
from apiusage.request_view import RequestView, state_of
from apiusage.runtime import ephemeral_runtime
from apiusage.sinks.base import Sink
from apiusage.stopping import is_stopping

#: Said with every resolver error: why a resolver that works in the handler can fail here.
_RESOLVER_HINT = (
    "Resolvers run once the response is sent, when objects tied to the request's database "
    "session may no longer be readable: attach the caller's id or user object as the app "
    "authenticates (request.state.user = user), or call apiusage.identify(...) there "
    "(docs: identity.md)"
)

__all__ = ["UsageClient"]


def _as_resolvers(identify: Resolver | Sequence[Resolver] | None) -> list[Resolver]:
    if identify is None:
        return []
    if callable(identify):
        return [identify]
    resolvers = list(identify)
    for resolver in resolvers:
        if not callable(resolver):
            raise ConfigurationError(f"identify= must be callables; got {resolver!r}")
    return resolvers


class UsageClient:
    """Records requests and journey events and delivers them in the background.

    Args:
        settings: a :class:`~apiusage.Settings`; by default read from the environment.
        identify: a resolver, or a list of resolvers, tried before the built-in ones.
        sink: where events go; by default PostHog when a key is set, else the local store.
        posthog_client: an existing ``posthog.Posthog`` client to deliver through.
        **overrides: any setting by name, e.g. ``event_name="api_call"``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        identify: Resolver | Sequence[Resolver] | None = None,
        sink: Sink | None = None,
        posthog_client: Any = None,
        **overrides: Any,
    ) -> None:
        self.settings = load_settings(settings, **overrides)
        self.stats = Stats()
        #: Feature flags for this client's requests (see :mod:`apiusage.feature_flags`).
        self.flags = flag_service(self.settings, posthog_client, self.stats)
        self.sink: Sink = (
            sink if sink is not None else default_sink(self.settings, posthog_client, self.stats)
        )
        settings = self.settings
        self.auth_detector = AuthDetector(
            api_key_headers=settings.api_key_headers,
            api_key_query_params=settings.api_key_query_params,
            token_query_params=settings.token_query_params,
            session_cookies=settings.session_cookies,
        )
        # Resolvers that need the live request run on the request path after the response;
        # the header-only built-ins run later, in the worker, when nothing else matched.
        user_resolvers = _as_resolvers(identify)
        stats = self.stats
        #: Guards the end of each request: an error there is counted, never raised.
        self._finishing_guard = stats.guard("finishing a request")

        def resolver_failed(where: str, exc: BaseException) -> None:
            # Not a bound method: the worker holds this, and must not keep the client alive.
            if isinstance(exc, CallerNotRead):
                stats.add("callers_unresolved")
                stats.warn(
                    f"reading a caller from {exc.seen}",
                    "apiusage: the app attached a caller to a request, but %s. Requests like "
                    "it are counted (callers_unresolved) and this is logged at most once a "
                    "minute.",
                    exc,
                )
            else:
                stats.error(where, exc, counter="resolver_errors", hint=_RESOLVER_HINT)

        self._resolver_failed = resolver_failed
        self.resolver = ResolverChain(
            [*user_resolvers, from_state(settings.state_attribute)], on_error=resolver_failed
        )
        # When every resolver only reads request state (the built-in one, Flask-Login's),
        # read the attributes directly: this runs on every request.
        self._state_attributes: tuple[str, ...] | None = (
            tuple(resolver.attribute for resolver in self.resolver.resolvers)  # type: ignore[attr-defined]
            if all(isinstance(resolver, StateResolver) for resolver in self.resolver.resolvers)
            else None
        )
        #: The request-state attributes that name the caller: adapters read them the
        #: moment the app sets them (see :mod:`apiusage.attached`).
        self.watched_attributes = frozenset(
            resolver.attribute
            for resolver in self.resolver.resolvers
            if isinstance(resolver, StateResolver)
        )
        fallbacks: list[Resolver] = []
        if settings.caller_header:
            fallbacks.append(from_header(settings.caller_header))
        if settings.credential_callers:
            hasher = KeyedHasher(identity_secret(self.settings, posthog_client))
            fallbacks.append(from_api_key(hasher, self.auth_detector))
        self.fallback_resolver = ResolverChain(fallbacks, on_error=resolver_failed)
        self.builder = EventBuilder(
            event_name=settings.event_name,
            organisation_group=settings.organisation_group,
            framework=settings.framework,
            versions=VersionDetector(
                sources=settings.version_sources,
                headers=settings.version_headers,
                query_params=settings.version_query_params,
            ),
            auth=self.auth_detector,
            sample_rate=settings.sample_rate,
            route_sample_rates=settings.route_sample_rates,
            deprecated_routes=settings.deprecated_routes,
        )
        #: The Deprecation / Sunset headers of deprecated routes, when asked for (middleware
        #: and adapters add them); the worker updates it from the route inventory.
        self.notices: DeprecationNotices | None = None
        if settings.deprecation_headers:
            self.notices = DeprecationNotices(
                settings.deprecated_routes, settings.deprecation_dates, settings.sunset_dates
            )
            self.builder.on_deprecated = self.notices.update
        self.pipeline = EventPipeline(self.builder, self.fallback_resolver, self.sink, self.stats)
        self.delivery: Delivery = BackgroundDelivery(
            self.pipeline.process,
            self.stats,
            max_queue_size=settings.max_queue_size,
            max_queue_bytes=settings.max_queue_bytes,
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval,
            after_fork=_after_fork_hook(self.stats, self.builder, self.sink),
            when_idle=getattr(self.sink, "when_idle", None),
            spill=self.pipeline.spill,
        )
        delivery = self.delivery
        self.pipeline.behind = lambda: delivery.behind
        #: True when each request delivers its own events before it ends.
        self.delivers_at_end_of_request = _delivers_at_end_of_request(settings.delivery)
        self._excluded_exact: frozenset[str] = frozenset()
        self._excluded_prefixes: tuple[str, ...] = ()
        self._exclude(settings.exclude_paths)
        self._excluded_names = frozenset(settings.exclude_path_names)
        #: Paths the framework serves itself, read at the first request (see
        #: :meth:`exclude_framework_paths`).
        self._framework_paths: list[Callable[[], Iterable[str]]] = []
        read_headers = _read_headers(settings)
        self._environ_keys = _environ_keys(read_headers)
        self._header_names = frozenset(name.encode("latin-1") for name in read_headers)
        self._closed = False
        self._enabled = settings.enabled
        #: Where the app's routes come from (adapters add theirs); sent once, see
        #: :mod:`apiusage.inventory`.
        self._route_sources: list[tuple[str | None, RouteSource]] = []
        self._inventory_queued = False
        self._release = lifetime.watch(
            self,
            self.delivery,
            self.sink,
            self.stats,
            settings.shutdown_timeout,
            catch_signals=settings.catch_signals,
        )

    # ------------------------------------------------------------- exclusions
    def _exclude(self, paths: Iterable[str]) -> None:
        exact = {path.rstrip("/") or "/" for path in paths if not path.endswith("/")}
        prefixes = [path for path in paths if path.endswith("/")]
        self._excluded_exact = self._excluded_exact | exact
        self._excluded_prefixes = tuple(dict.fromkeys([*self._excluded_prefixes, *prefixes]))

    def exclude_framework_paths(self, source: Callable[[], Iterable[str]]) -> None:
        """Leave out what the framework serves itself (API docs, schemas, static files).

        ``source`` lists the paths (exact, or prefixes ending in ``/``); adapters call
        this. It is read at the first request, when the app's routes are complete, and
        not at all when the ``exclude_framework_paths`` setting is off.
        """
        if self.settings.exclude_framework_paths and source not in self._framework_paths:
            self._framework_paths.append(source)

    def _read_framework_paths(self) -> None:
        sources, self._framework_paths = self._framework_paths, []
        for source in sources:
            with self.stats.guard("reading the paths the framework serves"):
                self._exclude([path for path in source() if path.startswith("/")])

    # ------------------------------------------------------------- request path
    def is_excluded(self, path: str) -> bool:
        """True for paths that are never recorded (health checks, docs, metrics …)."""
        if self._framework_paths:
            self._read_framework_paths()
        trimmed = (path.rstrip("/") or "/") if path.endswith("/") else path
        return (
            trimmed in self._excluded_exact
            or trimmed[trimmed.rfind("/") + 1 :] in self._excluded_names
            or (bool(self._excluded_prefixes) and path.startswith(self._excluded_prefixes))
        )

    def begin(
        self,
        transport: str,
        method: str,
        path: str,
        query_string: bytes | str,
        headers: Any,
        scope: Any,
        root_path: str = "",
        app_path: str | None = None,
        framework: str | None = None,
    ) -> Recording:
        """Start recording a request and make it current (see :mod:`apiusage.recording`).

        ``headers`` are the ASGI scope's header pairs, or a WSGI environ (or Django's
        ``META``); ``scope`` is the ASGI scope or WSGI environ; ``app_path`` is the path
        within the app that exclusions match (WSGI's ``PATH_INFO``), by default ``path``;
        ``framework`` names the framework when the settings do not.
        Inside a request an outer apiusage already records, the recording is joined to it;
        on an excluded path, or with apiusage disabled, it is ignored.
        """
        outer = current.get()
        if outer is not None:  # recorded (or ignored) by an outer apiusage
            return NotMeasured(outer, make_current=False)
        if not self._enabled or self.is_excluded(path if app_path is None else app_path):
            return NotMeasured(IGNORED_REQUEST, make_current=True)
        record = RequestRecord(
            transport,
            method,
            path,
            query_string,
            headers,
            scope,
            root_path,
            framework or self.settings.framework,
        )
        return Recording(self, record)

    def _resolve(self, record: RequestRecord) -> Identity | Awaitable[Identity | None] | None:
        """After the response: the resolvers not tried yet (all of them, unless
        :meth:`resolve_now` ran). An awaitable only when an async resolver is involved."""
        try:
            attributes = self._state_attributes
            if attributes is not None:
                return identity_from_state(state_of(record), record.scope, attributes)
            return self.resolver(RequestView(record), record.resolvers_tried)
        except Exception as exc:  # the chain guards each resolver; this guards the rest
            self._resolver_failed("identity resolution", exc)
            return None

    def resolve_current(self) -> None:
        """Run the sync resolvers for the current request now, while the framework's
        request objects still exist.

        For adapters whose request state is torn down before the response body is sent
        (Flask's ``g``). Resolvers from the first ``async def`` one on are left for the
        end of the request; none runs twice. Outside a recorded request: nothing.
        """
        record = current_record()
        if record is not None:
            self.resolve_now(record)

    def resolve_now(self, record: RequestRecord) -> None:
        """:meth:`resolve_current` for a given record."""
        if record.identity_pinned:
            return
        if self._state_attributes is not None:
            identity = self._resolve(record)
            assert not inspect.isawaitable(identity)  # state resolvers are sync
        else:
            try:
                identity, tried = self.resolver.resolve_sync(RequestView(record))
            except Exception as exc:  # the chain guards each resolver; this guards the rest
                self._resolver_failed("identity resolution", exc)
                identity, tried = None, len(self.resolver.resolvers)
            if identity is None and tried < len(self.resolver.resolvers):
                record.resolvers_tried = tried
                return
        record.identity = identity
        record.identity_pinned = True

    def caller_now(self, record: RequestRecord) -> Identity | None:
        """The request's caller as far as it is known now, for decisions in the handler
        (feature flags): ``identify()``'s, the sync resolvers', else the header-only
        built-ins'. Settles nothing: the caller is still resolved when the request ends,
        and errors are reported then."""
        if record.identity_pinned:
            return record.identity
        try:
            attributes = self._state_attributes
            if attributes is not None:
                identity = identity_from_state(state_of(record), record.scope, attributes)
            else:
                identity, _ = self.resolver.resolve_sync(RequestView(record), quiet=True)
        except Exception:
            identity = None
        if identity is None:
            found = self.fallback_resolver.resolve_sync(RequestView(record), quiet=True)[0]
            identity = found if isinstance(found, Identity) else None
        return identity

    def finish_request(self, record: RequestRecord) -> Awaitable[None] | None:
        """Resolve the caller (after the response is sent) and queue the record.

        Returns an awaitable when an async resolver is involved, or when the request must
        wait for its events to be delivered (the process is stopping): await it.
        """
        if not record.identity_pinned:
            result = self._resolve(record)
            if result is not None and not isinstance(result, Identity):
                return self._finish_async(record, result)
            record.identity = result
        self.submit(record)
        wait = self._wait_for_delivery()
        return None if wait is None else self._await_delivery(*wait)

    async def _finish_async(
        self, record: RequestRecord, pending: Awaitable[Identity | None]
    ) -> None:
        record.identity = await self._resolved(pending)
        self.submit(record)
        wait = self._wait_for_delivery()
        if wait is not None:
            await self._await_delivery(*wait)

    async def _await_delivery(self, position: int, timeout: float) -> None:
        """Wait, without blocking the event loop or holding a thread, until the delivery
        worker has delivered the items up to ``position`` (it resolves a future). Under
        trio, which has no asyncio future, a thread waits instead."""
        if in_trio():
            wait = functools.partial(self.delivery.deliver_through, position, timeout)
            if not await run_in_thread(wait):
                self.stats.add("requests_ended_undelivered")
            return
        loop = asyncio.get_running_loop()
        # True once delivered, False when the time ran out. Awaited directly, with a timer
        # of its own: ``asyncio.wait_for`` would cost the request another turn of the loop.
        delivered: asyncio.Future[bool] = loop.create_future()

        def wake() -> None:  # on the worker's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: no one waits
                loop.call_soon_threadsafe(_settle, delivered, True)

        with self._finishing_guard:
            if not self.delivery.when_delivered(position, wake):
                return
        timer = loop.call_later(timeout, _settle, delivered, False)
        try:
            in_time = await delivered
        finally:
            timer.cancel()
        if not in_time:
            self.stats.add("requests_ended_undelivered")

    async def _resolved(self, pending: Awaitable[Identity | None]) -> Identity | None:
        try:
            return await pending
        except Exception as exc:  # the chain guards each resolver; this guards the rest
            self._resolver_failed("identity resolution", exc)
            return None

    def finish_request_blocking(self, record: RequestRecord) -> None:
        """Like :meth:`finish_request`, for sync callers: async resolvers run to the end."""
        with self._finishing_guard:
            if not record.identity_pinned:
                result = self._resolve(record)
                if result is not None and not isinstance(result, Identity):
                    result = async_to_sync(self._resolved)(result)
                record.identity = result
            self.submit(record)
            wait = self._wait_for_delivery()
            if wait is not None and not self.delivery.deliver_through(*wait):
                self.stats.add("requests_ended_undelivered")

    def _wait_for_delivery(self) -> tuple[int, float] | None:
        """Right after a request's record was queued: (position, timeout) to wait for its
        events to be delivered before the request ends, or None when the worker delivers
        them later (the usual case).

        A request waits when the runtime may freeze the process as soon as it has
        answered (``end_of_request``), or when the process is stopping and may not live
        to deliver them later. Bounded by ``request_flush_timeout`` (stopping:
        ``shutdown_timeout``).
        """
        stopping = is_stopping()
        if not (self.delivers_at_end_of_request or stopping):
            return None
        timeout = (
            self.settings.shutdown_timeout if stopping else self.settings.request_flush_timeout
        )
        return self.delivery.submitted, timeout

    def submit(self, record: RequestRecord) -> None:
        if not self._inventory_queued:
            self._queue_inventory()
        record.queued_bytes = self._detach(record)
        self.delivery.submit(record)

    def add_route_source(self, source: RouteSource, *, name: str | None = None) -> None:
        """Tell apiusage how to list the app's routes (framework adapters do this).

        ``source`` is called once, on the delivery worker, when the first request is
        recorded; its routes become the ``api_route_inventory`` event. Several apps
        sharing one client each add theirs; a source with a ``name`` replaces the one
        added before under the same name.
        """
        if name is not None:
            self._route_sources = [
                (named, known) for named, known in self._route_sources if named != name
            ]
        self._route_sources.append((name, source))
        self._inventory_queued = False

    def _queue_inventory(self) -> None:
        """Ahead of the first request's record: the worker lists the routes then, off the
        request path and after the app registered them all."""
        self._inventory_queued = True
        if self._route_sources or self.settings.deprecated_routes:
            self.delivery.submit(
                InventoryRequest(
                    tuple(source for _, source in self._route_sources),
                    self.settings.framework,
                    self.settings.deprecated_routes,
                    self.is_excluded,
                )
            )

    def _detach(self, record: RequestRecord) -> int:
        """Keep only what the worker needs, so the request's objects die with the request.

        A queued record that still held the environ or scope would keep the framework's
        request, its state and user objects alive until the next batch: measured, that
        garbage-collector work costs more than everything else on the request path. Of the
        headers, only those the worker reads are kept (the same for ASGI and WSGI): the
        server's header list and the pairs no one reads die with the request, and what
        stays is a tuple, which the collector stops tracking.

        Returns the record's estimated size in memory, for the queue's byte bound, with
        each header at an average size: measuring costs the request path more than the
        rest of the record, so the queue measures records only once they pile up
        (:meth:`RequestRecord.measured_bytes`), the only time its bound can bite.
        """
        scope = record.scope
        size = RECORD_BYTES + len(record.path) + len(record.query_string)
        raw = record.raw_headers
        if isinstance(raw, dict):  # a WSGI environ or Django META
            raw = record.raw_headers = {key: raw[key] for key in self._environ_keys if key in raw}
        else:  # ASGI (name, value) pairs, names in lower case
            names = self._header_names
            raw = record.raw_headers = tuple([pair for pair in raw if pair[0] in names])
            if record.route is None and "type" in scope:
                record.route = asgi_route_template(
                    scope, record.root_path, record.status, record.path
                )
        size += AVERAGE_HEADER_BYTES * len(raw)
        if record.journey:
            for event in record.journey:
                size += JOURNEY_EVENT_BYTES + PROPERTY_BYTES * len(event.properties)
        record.scope = _DETACHED
        record.native = None
        record.state = None
        record.client = None
        return size

    def record_journey_event(self, event: JourneyEvent) -> None:
        """A ``track()`` call made outside a request."""
        if not self.settings.enabled:
            return
        if self.delivery.submit(event):
            self.stats.add("journey_events_recorded")

    def record_identity(self, identity: Identity) -> None:
        """An ``identify()`` call made outside a request."""
        if not self.settings.enabled:
            return
        self.delivery.submit(IdentifyCall(identity))

    # --------------------------------------------------------------- lifecycle
    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything recorded so far. Blocking: not for an event loop thread."""
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        done = self.delivery.flush(timeout)
        try:
            self.sink.flush(max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            self.stats.error("flushing the sink", exc)
            return False
        return done

    def flush_before_exit(self) -> bool:
        """The app is stopping (a stop signal, the server's lifespan shutdown): flush
        within what is left of the one ``shutdown_timeout`` the whole stop may take.
        Blocking: not for an event loop thread."""
        deadline = lifetime.stop_deadline(self.settings.shutdown_timeout)
        if self.flush(max(0.0, deadline - time.monotonic())):
            return True
        # Out of time, and the process may end without running exit hooks (uvicorn
        # re-raises the stop signal): keep what is still queued on disk now (the worker
        # replays it if the process lives on).
        with self.stats.guard("keeping what the stop could not deliver"):
            self.delivery.spill_queued()
        return False

    def close(self, timeout: float | None = None) -> None:
        """Flush within the shutdown timeout and stop; called at exit automatically."""
        if self._closed:
            return
        self._closed = True
        self._release.detach()
        lifetime.forget(self)
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        lifetime.shut_down(self.delivery, self.sink, self.stats, timeout)
        self.flags.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: the client records nothing more."""
        return self._closed


def _delivers_at_end_of_request(strategy: str) -> bool:
    """``delivery``: ``auto`` picks ``end_of_request`` on a serverless runtime (said once)."""
    if strategy != "auto":
        return strategy == "end_of_request"
    runtime = ephemeral_runtime(os.environ)
    if runtime is None:
        return False
    _announce(runtime)
    return True


def _settle(future: asyncio.Future[bool], delivered: bool) -> None:
    if not future.done():  # settled already (timed out, then delivered), or cancelled
        future.set_result(delivered)


@functools.cache
def _announce(runtime: str) -> None:
    """Once per process: which strategy ``auto`` picked, and why."""
    logger.info(
        "apiusage: running on %s: each request delivers its events before it ends "
        "(delivery=end_of_request; set APIUSAGE_DELIVERY=background to change it)",
        runtime,
    )


def _after_fork_hook(stats: Stats, builder: EventBuilder, sink: Sink) -> Callable[[], None]:
    """What a forked child forgets (counters, groups sent); built without the client."""

    def after_fork() -> None:
        stats.after_fork()
        builder.forget_sent()
        sink_after_fork = getattr(sink, "after_fork", None)
        if sink_after_fork is not None:
            sink_after_fork()

    return after_fork


_DETACHED: dict[str, Any] = {}


def _read_headers(settings: Settings) -> frozenset[str]:
    """Every header the worker's detectors and built-in resolvers read (lower-case)."""
    names = {
        "authorization",
        "cookie",
        "user-agent",
        "accept",
        "content-type",
        *settings.version_headers,
        *settings.api_key_headers,
    }
    if settings.caller_header:
        names.add(settings.caller_header)
    return frozenset(name.lower() for name in names)


def _environ_keys(names: frozenset[str]) -> tuple[str, ...]:
    """The WSGI environ keys of these headers."""
    keys = {name.upper().replace("-", "_") for name in names}
    return tuple(key if key == "CONTENT_TYPE" else "HTTP_" + key for key in sorted(keys))
