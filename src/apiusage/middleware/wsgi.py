"""Pure WSGI middleware: records status, sizes and timing to the end of the response body.

The record is finished in the response iterable's ``close()``, after the server has
written the last byte, so streamed responses are timed to their end. ``wsgi.file_wrapper``
responses are left unwrapped so the server can still send the file efficiently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from types import TracebackType
from typing import Any

from apiusage.client import UsageClient
from apiusage.feature_flags import FLAGS_HEADER, flags_header_value
from apiusage.identity import Resolver
from apiusage.record import RequestRecord, exception_name
from apiusage.recording import IGNORED_REQUEST, Recording, current
from apiusage.registry import use_client
from apiusage.sinks.base import Sink

__all__ = ["WSGIMiddleware"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class WSGIMiddleware:
    """Records every request of a WSGI app::

    app.wsgi_app = apiusage.WSGIMiddleware(app.wsgi_app)
    """

    def __init__(
        self,
        app: WSGIApp,
        client: UsageClient | None = None,
        *,
        identify: Resolver | Sequence[Resolver] | None = None,
        sink: Sink | None = None,
        posthog_client: Any = None,
        **settings: Any,
    ) -> None:
        self.app = app
        self.client = use_client(
            client, identify=identify, sink=sink, posthog_client=posthog_client, **settings
        )
        self._flags_header = self.client.settings.flags_header

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        script_name = environ.get("SCRIPT_NAME", "")
        recording = self.client.begin(
            "wsgi",
            environ.get("REQUEST_METHOD", "GET"),
            script_name + path,
            environ.get("QUERY_STRING", ""),
            environ,
            environ,
            script_name,
            path,
        )
        if not recording.measures:  # recorded by an outer apiusage, or not recorded
            try:
                result = self.app(environ, start_response)
            finally:
                recording.leave()
            # A streamed body runs app code later, as the server iterates it; lists and
            # file responses (sent by the server itself) run none.
            ignored = recording.record is IGNORED_REQUEST
            if not ignored or isinstance(result, (list, tuple)):
                return result
            return result if _is_file_response(environ, result) else _IgnoredBody(result)

        record = recording.record
        content_length = environ.get("CONTENT_LENGTH")
        if content_length:
            with suppress(ValueError):
                record.request_bytes = int(content_length)
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            # No length up front: count what the app actually reads.
            stream = environ.get("wsgi.input")
            if stream is not None:
                environ["wsgi.input"] = _CountingInput(stream, record)

        response = _RecordedResponse(recording, start_response, self._flags_header)
        # The request is current only while app code runs (here, and in the body's
        # iteration and close()): a response that is never closed, as with test clients,
        # must not stay current and make every later request in this thread look nested.
        try:
            result = self.app(environ, response.start_response)
        except BaseException as exc:
            recording.failed(exc)
            response.finish()
            raise
        recording.leave()
        if _is_file_response(environ, result) and response.hook_file_wrapper(result):
            return result
        response.iterable = result
        if hasattr(result, "__len__"):
            # Servers use len() of a one-item list to set Content-Length: keep it, but only
            # where the app's body has a length (bool() of a generator body must stay true).
            response.__class__ = _SizedRecordedResponse
        return response


def _is_file_response(environ: Environ, result: Iterable[bytes]) -> bool:
    """A ``wsgi.file_wrapper`` response, which the server may send efficiently as a file."""
    file_wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(file_wrapper, type) and isinstance(result, file_wrapper)


class _RecordedResponse:
    """One request's recorder: wraps ``start_response``, then stands in for the body.

    It counts the body's bytes as the server iterates, and finishes the record on
    ``close()``, which servers call after the last byte is written.
    """

    __slots__ = (
        "_finished",
        "_flags_header",
        "_headers",
        "_record",
        "_recording",
        "_start_response",
        "iterable",
    )

    def __init__(self, recording: Recording, start_response: StartResponse, flags_header: bool):
        self._recording = recording
        self._record = recording.record
        self._start_response = start_response
        self._flags_header = flags_header
        self._headers: list[tuple[str, str]] = []
        self._finished = False
        self.iterable: Iterable[bytes] = ()

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        try:
            self._record.status = int(status[:3])
        except ValueError:
            self._record.status = None
        flags = self._record.flags
        if (
            self._flags_header
            and flags
            and not any(name.lower() == "x-feature-flags" for name, _ in headers)
        ):
            headers = [*headers, (FLAGS_HEADER, flags_header_value(flags))]
        self._headers = headers
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        record = self._record
        iterator = iter(self.iterable)
        while True:
            # Current while the app makes each chunk: a streamed body may call track().
            token = current.set(record)
            try:
                chunk = next(iterator)
            except StopIteration:
                break
            except BaseException as exc:
                record.exception = exception_name(exc)
                raise
            finally:
                current.reset(token)
            record.response_bytes += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._finished:
            return
        try:
            close = getattr(self.iterable, "close", None)
            if close is not None:
                token = current.set(self._record)
                try:
                    close()
                finally:
                    current.reset(token)
        finally:
            self.finish()

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._recording.finish_blocking()

    def hook_file_wrapper(self, result: Any) -> bool:
        """Finish when the server closes a file response, leaving the response unwrapped."""
        original_close = getattr(result, "close", None)

        def close() -> None:
            try:
                if original_close is not None:
                    original_close()
            finally:
                self.finish()

        try:
            result.close = close
        except AttributeError:
            return False
        for name, value in self._headers:
            if name.lower() == "content-length" and value.isdigit():
                self._record.response_bytes = int(value)
        return True


class _IgnoredBody:
    """The body of a request that is not recorded: app code it runs sees "ignored"."""

    __slots__ = ("_iterable",)

    def __init__(self, iterable: Iterable[bytes]) -> None:
        self._iterable = iterable

    def __iter__(self) -> Iterator[bytes]:
        iterator = iter(self._iterable)
        while True:
            token = current.set(IGNORED_REQUEST)
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            finally:
                current.reset(token)
            yield chunk

    def close(self) -> None:
        close = getattr(self._iterable, "close", None)
        if close is not None:
            token = current.set(IGNORED_REQUEST)
            try:
                close()
            finally:
                current.reset(token)


class _SizedRecordedResponse(_RecordedResponse):
    """A recorded response whose body has a length (a list, a tuple)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]


class _CountingInput:
    """``wsgi.input`` for chunked uploads: counts the bytes the app reads, changes nothing."""

    def __init__(self, stream: Any, record: RequestRecord) -> None:
        self._stream = stream
        self._record = record

    def read(self, *args: Any) -> bytes:
        data: bytes = self._stream.read(*args)
        self._record.request_bytes += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data: bytes = self._stream.readline(*args)
        self._record.request_bytes += len(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(*args)
        self._record.request_bytes += sum(len(line) for line in lines)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._record.request_bytes += len(line)
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
