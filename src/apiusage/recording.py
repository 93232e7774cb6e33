"""The request lifecycle in one place: begin → annotate → fail → finish.

:meth:`UsageClient.begin <apiusage.UsageClient.begin>` starts recording a request and
makes it the current one (a ContextVar, so ``track()`` and ``identify()`` in the handler
find it); the ASGI and WSGI middleware measure what the server sees (status, body sizes,
the last byte); framework adapters and apps tell it what only the framework knows with
:func:`annotate`; :meth:`Recording.finish` resolves the caller and queues the record.
Adapters use this API and never write a record themselves.

``begin()`` gives one of three kinds of recording, so a caller has one code path:

- a :class:`Recording` that measures the request (the outermost apiusage sees it);
- a joined one, when an outer apiusage already records this request (Django's middleware
  inside the ASGI middleware, or two middleware stacked): annotations go to the outer
  record, measuring and finishing are the outer's job;
- an ignored one (an excluded path, or apiusage disabled): ``track()`` and ``identify()``
  inside are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from apiusage.record import RequestRecord, exception_name

if TYPE_CHECKING:
    from apiusage.client import UsageClient

__all__ = ["IGNORED_REQUEST", "Recording", "annotate", "current_record"]

#: The record of the request being handled in this context.
current: ContextVar[RequestRecord | None] = ContextVar("apiusage_request", default=None)

#: Current during requests apiusage does not record (excluded paths, ``enabled=False``):
#: ``track()`` and ``identify()`` there are accepted and ignored.
IGNORED_REQUEST = RequestRecord(
    transport="none", method="", path="", query_string="", raw_headers=(), scope={}
)

_UNCHANGED: Any = object()


def current_record() -> RequestRecord | None:
    """The record of the request being handled, or None outside a recorded request."""
    record = current.get()
    return None if record is IGNORED_REQUEST else record


def annotate(
    *,
    route: str | None = _UNCHANGED,
    exception: BaseException | None = None,
    auth_method: str | None = None,
    request: Any = None,
    state: Any = None,
) -> None:
    """Tell apiusage what only the framework knows about the current request.

    Call it during the request, from a framework hook or middleware:

    - ``route``: the matched route template (from the framework's route object, never the
      raw path; ``None`` when nothing matched);
    - ``exception``: an unhandled error the framework turned into a response itself (only
      its class is recorded);
    - ``auth_method``: how the framework authenticated the caller, when it knows better
      than the headers (``"api_key"``, ``"session"`` …);
    - ``request``: the framework's request object (resolvers see it as ``view.native``);
    - ``state``: what the app attached to the request (resolvers read it as ``view.state``).

    Outside a recorded request it does nothing.
    """
    record = current.get()
    if record is None or record is IGNORED_REQUEST:
        return
    if route is not _UNCHANGED:
        record.route = route
    if exception is not None:
        record.exception = exception_name(exception)
    if auth_method is not None:
        record.auth_method = auth_method
    if request is not None:
        record.native = request
    if state is not None:
        record.state = state


class Recording:
    """One request being recorded, from :meth:`UsageClient.begin` to :meth:`finish`.

    It is current from ``begin()`` until :meth:`leave` (or :meth:`finish`).
    """

    __slots__ = ("_client", "_token", "record")

    #: True when this recording measures and finishes the request itself.
    measures = True

    def __init__(self, client: UsageClient, record: RequestRecord) -> None:
        self.record = record
        self._client = client
        record.client = client
        self._token: Token[RequestRecord | None] | None = current.set(record)

    def response_started(self, status: int | None) -> None:
        """The status the app responded with."""
        self.record.status = status

    def received(self, size: int) -> None:
        """``size`` bytes of request body arrived (or were announced by Content-Length)."""
        self.record.request_bytes += size

    def sent(self, size: int) -> None:
        """``size`` bytes of response body were handed to the server."""
        self.record.response_bytes += size

    def counted(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """A streamed body, unchanged, whose bytes are counted as the server sends them."""
        record = self.record
        for chunk in chunks:
            record.response_bytes += len(chunk)
            yield chunk

    async def counted_async(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """:meth:`counted` for an async streamed body."""
        record = self.record
        async for chunk in chunks:
            record.response_bytes += len(chunk)
            yield chunk

    def finish_when_closed(self, response: Any) -> None:
        """Finish when the server calls ``response.close()``, after the last byte (WSGI
        servers, and Django's handlers, close the response they were given)."""
        close = response.close

        def close_and_finish() -> None:
            try:
                close()
            finally:
                self.finish_blocking()

        response.close = close_and_finish

    def failed(self, exc: BaseException, status: int = 500) -> None:
        """An exception escaped the app: its class is recorded, and ``status`` unless the
        response had already started."""
        record = self.record
        record.exception = exception_name(exc)
        if record.status is None:
            record.status = status

    def leave(self) -> None:
        """The app's code is done: the request stops being current in this context."""
        token = self._token
        if token is not None:
            self._token = None
            current.reset(token)

    def resolve_now(self) -> None:
        """Run the sync identity resolvers now, while the framework's request objects
        still exist (Flask tears ``g`` down before the body is sent)."""
        self._client.resolve_now(self.record)

    def finish(self) -> Awaitable[None] | None:
        """The last byte is sent: stop the clock, resolve the caller, queue the record.

        Returns an awaitable when an async resolver is involved, or when the process is
        stopping and the request must wait for its events to be delivered: await it.
        """
        self.leave()
        record = self.record
        record.finish_timing()
        return self._client.finish_request(record)

    def finish_blocking(self) -> None:
        """:meth:`finish` for sync code: async resolvers are run to the end here."""
        self.leave()
        self.record.finish_timing()
        self._client.finish_request_blocking(self.record)


class NotMeasured(Recording):
    """A request this recording does not measure: joined to an outer one, or ignored.

    Annotations reach the outer record (joined); everything else does nothing.
    """

    __slots__ = ()

    measures = False

    def __init__(self, record: RequestRecord, *, make_current: bool) -> None:
        self.record = record
        self._token = current.set(record) if make_current else None

    def response_started(self, status: int | None) -> None:
        pass

    def received(self, size: int) -> None:
        pass

    def sent(self, size: int) -> None:
        pass

    def counted(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        yield from chunks  # the outer recording counts what reaches the server

    async def counted_async(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk

    def finish_when_closed(self, response: Any) -> None:
        pass

    def failed(self, exc: BaseException, status: int = 500) -> None:
        pass

    def resolve_now(self) -> None:
        pass

    def finish(self) -> Awaitable[None] | None:
        self.leave()
        return None

    def finish_blocking(self) -> None:
        self.leave()
