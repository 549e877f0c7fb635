"""One client connection: requests in flight and the routing of their events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic.quic import events as qe

from ..errors import (
    ConnectionFailed,
    IntegrityError,
    ProtocolViolation,
    QuicstoreError,
    RequestFailed,
    error_for_code,
)
from ..proto import events as ev
from ..proto.codes import ErrorCode, describe_error_code
from ..proto.connection import QuicstoreConnection
from ..proto.frames import Buffer
from ..proto.messages import Listing, RequestHeader, ResponseHeader
from ..proto.settings import Settings
from ..transport import compat
from ..transport.endpoint import QuicDriver

log = logging.getLogger("quicstore.client")

OnResponse = Callable[[ResponseHeader], None]
OnChecksums = Callable[[int, tuple[int, ...]], None]
OnData = Callable[[Buffer], bool]
"""Gets each piece of body; returns True if it is done with the bytes (credit is returned
at once), False if it will call :meth:`Call.consumed` later."""


@dataclass(eq=False)
class Call:
    """One request in flight on one stream."""

    session: ClientSession
    stream_id: int
    header: RequestHeader
    response: asyncio.Future[ResponseHeader | Listing]
    done: asyncio.Future[None]
    on_response: OnResponse | None = None
    on_checksums: OnChecksums | None = None
    on_data: OnData | None = None
    received: int = 0
    """Body bytes received, bytes."""
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, error: BaseException) -> None:
        """End the call with ``error`` (idempotent)."""
        for future in (self.response, self.done):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: callers may await only one of them

    def cancel(self, code: int = ErrorCode.QS_REQUEST_CANCELLED) -> None:
        """Abandon the request (STOP_SENDING / RESET_STREAM) and free it."""
        self.session.cancel(self, code)

    def consumed(self, size: int) -> None:
        """Return ``size`` bytes of receive credit (for ``on_data`` that returned False)."""
        self.session.qs.data_consumed(self.stream_id, size)
        self.session.driver.transmit_soon()


class ClientSession:
    """The quicstore side of one client QUIC connection."""

    def __init__(self, driver: QuicDriver, settings: Settings | None = None) -> None:
        self.driver = driver
        quic = driver.quic
        flow = quic if isinstance(quic, compat.AppPacedQuicConnection) else None
        self.qs = QuicstoreConnection(quic, is_client=True, settings=settings, flow=flow)
        self.calls: dict[int, Call] = {}
        self.closed = False
        self.close_reason = ""
        self.draining = False
        """True after GOAWAY: no new requests on this connection."""
        self.settings_received: asyncio.Future[Settings] = driver.loop.create_future()
        self._writable = asyncio.Event()
        self._writers = 0
        driver.on_receive = self._after_receive
        driver.awaiting_peer = lambda: bool(self.calls)

    def _after_receive(self) -> None:
        if self._writers:
            self._writable.set()

    async def writable(self) -> None:
        """Wait for the next received datagram (ACKs may have freed send-buffer space), or
        for the connection to end."""
        if self.closed:
            raise ConnectionFailed(self.close_reason or "connection closed")
        self._writers += 1
        self._writable.clear()
        try:
            await self._writable.wait()
        finally:
            self._writers -= 1

    @property
    def usable(self) -> bool:
        """Whether new requests may be sent on this connection."""
        return not (self.closed or self.draining or self.qs.closed)

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        for e in self.qs.handle_event(event):
            self._dispatch(e)

    def _dispatch(self, e: ev.Event) -> None:
        if isinstance(e, ev.ConnectionTerminated):
            self._terminated(e)
            return
        if isinstance(e, ev.SettingsReceived):
            if not self.settings_received.done():
                self.settings_received.set_result(e.settings)
            return
        if isinstance(e, ev.GoawayReceived):
            self.draining = True
            return
        call = self.calls.get(getattr(e, "stream_id", -1))
        if call is None:
            if isinstance(e, ev.DataReceived):
                self.qs.data_consumed(e.stream_id, len(e.data))
            return
        try:
            self._route(call, e)
        except QuicstoreError as exc:
            self.cancel(call, exc.code)
            call.fail(exc)
        except Exception as exc:  # a bug in a callback: do not let it kill the connection
            log.exception("callback of stream %d failed", call.stream_id)
            self.cancel(call, ErrorCode.QS_INTERNAL_ERROR)
            call.fail(exc)

    def _route(self, call: Call, e: ev.Event) -> None:
        if isinstance(e, ev.DataReceived):
            call.received += len(e.data)
            if call.on_data is None or call.on_data(e.data):
                self.qs.data_consumed(call.stream_id, len(e.data))
        elif isinstance(e, ev.ChecksumsReceived):
            if call.on_checksums is not None:
                call.on_checksums(e.first_block, e.checksums)
        elif isinstance(e, ev.ResponseReceived):
            if call.on_response is not None:
                call.on_response(e.header)
            if not call.response.done():
                call.response.set_result(e.header)
        elif isinstance(e, ev.ListingReceived):
            if not call.response.done():
                call.response.set_result(e.listing)
        elif isinstance(e, ev.ErrorReceived):
            self._forget(call)
            call.fail(error_for_code(e.code, e.reason))
        elif isinstance(e, ev.StreamEnded):
            self._forget(call)
            if not call.response.done():
                call.fail(ProtocolViolation("response ended without a header"))
            elif not call.done.done():
                call.done.set_result(None)
        elif isinstance(e, ev.StreamReset):
            self._forget(call)
            call.fail(_reset_error(e.code))
        elif isinstance(e, ev.StreamAbandoned):
            self._forget(call)
            call.fail(ProtocolViolation(f"gateway broke the protocol: {e.reason}", code=e.code))

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.stream_id, None)

    def _terminated(self, e: ev.ConnectionTerminated) -> None:
        self.closed = True
        self._writable.set()
        self.close_reason = e.reason or describe_error_code(e.code)
        calls, self.calls = self.calls, {}
        for call in calls.values():
            call.fail(ConnectionFailed(f"connection lost: {self.close_reason}"))
        if not self.settings_received.done():
            self.settings_received.set_exception(ConnectionFailed(self.close_reason))
            self.settings_received.exception()

    def start(
        self,
        header: RequestHeader,
        *,
        on_response: OnResponse | None = None,
        on_checksums: OnChecksums | None = None,
        on_data: OnData | None = None,
    ) -> Call:
        """Send a request; the returned call's futures complete as the response arrives."""
        if not self.usable:
            raise ConnectionFailed(self.close_reason or "connection is closing")
        loop = self.driver.loop
        stream_id = self.qs.send_request(header)
        call = Call(
            self,
            stream_id,
            header,
            loop.create_future(),
            loop.create_future(),
            on_response,
            on_checksums,
            on_data,
        )
        self.calls[stream_id] = call
        self.driver.transmit_soon(message=True)
        return call

    def cancel(self, call: Call, code: int) -> None:
        """Abandon a call's stream."""
        self._forget(call)
        if not self.qs.closed:
            self.qs.cancel_request(call.stream_id, code)
            self.driver.transmit_soon()

    async def close(self) -> None:
        """Close the connection (QS_NO_ERROR) and wait until it is gone (bounded)."""
        if not self.qs.closed:
            self.qs.close(ErrorCode.QS_NO_ERROR, "client closing")
            self.driver.transmit()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.driver.closed), timeout=1.0)


def _reset_error(code: int) -> QuicstoreError:
    if code == ErrorCode.QS_INTEGRITY_ERROR:
        return IntegrityError("the gateway found its stored copy corrupt and stopped sending")
    if code == ErrorCode.QS_REQUEST_REJECTED:
        return ConnectionFailed("request rejected by a gateway going away (retryable)", code=code)
    return RequestFailed(f"stream reset by the gateway: {describe_error_code(code)}", code=code)
