"""Fan-out GET: one object (or range) fetched as block-aligned parts over parallel streams,
written straight into place, verified block by block, resumed after faults.

The first part's RESPONSE says the object's size, ETag and block size; the other parts are
requested with ``if_match`` on that ETag so that all bytes come from one version (a change
fails with :class:`~quicstore.errors.ObjectChanged`, never a mixture). How many parts are
outstanding follows the connection's live path estimate
(:func:`quicstore.plan.prefetch.plan_prefetch`). A part whose bytes fail their CRC32C is
fetched again from its last verified byte; a lost connection is re-established with backoff
and every unfinished part resumes from its last verified byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..errors import (
    ConnectionFailed,
    IntegrityError,
    ObjectChanged,
    PreconditionFailed,
    QuicstoreError,
    error_for_code,
)
from ..plan.prefetch import PrefetchConfig, plan_prefetch
from ..plan.ranges import Coverage, Span, aligned_span, split_parts
from ..proto.errors import RequestError
from ..proto.frames import Buffer
from ..proto.integrity import IntegrityError as BlockIntegrityError
from ..proto.integrity import RangeVerifier
from ..proto.messages import RequestHeader, ResponseHeader
from ..proto.semantics import resolve_range
from ..store.base import ObjectInfo
from ..transport import compat
from .session import Call, ClientSession
from .sinks import Sink

log = logging.getLogger("quicstore.client")

REPLAN_INTERVAL = 0.02
"""Seconds between re-plans of the prefetch depth while parts are outstanding."""


@dataclass
class GetResult:
    """What a GET read: the object's metadata and the range delivered."""

    info: ObjectInfo
    offset: int
    """First byte delivered."""
    length: int
    """Bytes delivered."""
    attempts: int = 1
    """Connections used (more than 1 after a resume)."""
    refetched_bytes: int = 0
    """Bytes fetched again after an integrity failure or a lost connection."""


@dataclass(eq=False)
class _Part:
    span: Span
    verifier: RangeVerifier | None = None
    call: Call | None = None
    pos: int = 0
    integrity_failures: int = 0
    last_failed_block: int | None = None


@dataclass
class _State:
    info: ObjectInfo | None = None
    start: int = 0
    end: int = 0
    sink: Sink | None = None
    coverage: Coverage = field(default_factory=Coverage)
    delivered: int = 0
    started: float = field(default_factory=time.perf_counter)


def _info_from(header: ResponseHeader, bucket: str, key: str) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=header.size or 0,
        etag=header.etag or "",
        mtime_ns=header.mtime_ns or 0,
        block_size=header.block_size or 65536,
        sha256=header.sha256 or b"",
        content_type=header.content_type,
        meta=header.meta or {},
    )


class FanoutGet:
    """Reads ``[offset, offset + length)`` (or the last ``suffix`` bytes, or everything) of
    one object into a sink created once the size is known."""

    def __init__(
        self,
        get_session: Callable[[int], Awaitable[ClientSession]],
        *,
        bucket: str,
        key: str,
        token: str | None,
        offset: int | None,
        length: int | None,
        suffix: int | None,
        if_match: str | None,
        make_sink: Callable[[ObjectInfo, int], Sink],
        prefetch: PrefetchConfig,
        max_attempts: int,
        integrity_retries: int,
        verify_sha256: bool,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._get_session = get_session
        self.progress = progress
        self.bucket = bucket
        self.key = key
        self.token = token
        self.offset = offset
        self.length = length
        self.suffix = suffix
        self.if_match = if_match
        self.make_sink = make_sink
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.integrity_retries = integrity_retries
        self.verify_sha256 = verify_sha256
        self.state = _State()
        self.parts: list[_Part] = []
        self.outstanding: set[_Part] = set()
        self.attempts = 0
        self.refetched = 0
        self._rate_bytes = 0
        self._rate_since = time.perf_counter()
        self._rate = 0.0
        self._waiter: asyncio.Future[None] | None = None
        """What the drive loop awaits: resolved by :meth:`_wake`."""

    # -- sessions and requests

    async def _session(self) -> ClientSession:
        self.attempts += 1
        self.session = await self._get_session(self.attempts)
        return self.session

    def _header(self, span: Span | None, if_match: str | None) -> RequestHeader:
        if span is None:  # the first request, before the size is known
            if self.suffix is not None:
                return RequestHeader(
                    op="GET",
                    bucket=self.bucket,
                    key=self.key,
                    token=self.token,
                    suffix=self.suffix,
                    if_match=if_match,
                )
            # Start on a block boundary of the gateway's block size so the part verifies.
            block = self.session.qs.peer_settings.block_size
            start = self.offset or 0
            aligned = start - start % block
            length = self.prefetch.part_size
            if self.length is not None:
                length = min(length, -(-(start + self.length - aligned) // block) * block)
            return RequestHeader(
                op="GET",
                bucket=self.bucket,
                key=self.key,
                token=self.token,
                offset=aligned,
                length=length,
                if_match=if_match,
            )
        return RequestHeader(
            op="GET",
            bucket=self.bucket,
            key=self.key,
            token=self.token,
            offset=span.start,
            length=span.length,
            if_match=if_match,
        )

    def _start_part(self, session: ClientSession, part: _Part, span: Span | None) -> None:
        info = self.state.info
        etag = info.etag if info is not None else self.if_match
        header = self._header(span, etag)
        part.pos = span.start if span is not None else 0

        def on_response(resp: ResponseHeader) -> None:
            if self.state.info is None:
                self._first_response(resp)
            info = self.state.info
            assert info is not None
            if resp.etag != info.etag:
                raise ObjectChanged(f"{self.bucket}/{self.key} changed while being read")
            offset, length = resp.offset or 0, resp.length or 0
            part.pos = offset
            part.span = Span(offset, length)
            part.verifier = RangeVerifier(
                offset=offset, length=length, size=info.size, block_size=info.block_size
            )

        def on_checksums(first: int, sums: tuple[int, ...]) -> None:
            assert part.verifier is not None
            part.verifier.add_checksums(first, sums)

        def on_data(data: Buffer) -> bool:
            verifier = part.verifier
            assert verifier is not None and part.call is not None
            try:
                verifier.update(data)
            except BlockIntegrityError as exc:
                part.last_failed_block = exc.block
                raise IntegrityError(f"{self.bucket}/{self.key}: {exc.reason}") from None
            st = self.state
            pos = part.pos
            part.pos += len(data)
            lo = max(pos, st.start)
            hi = min(part.pos, st.end)
            self._rate_bytes += len(data)
            if hi <= lo:
                return True
            view = memoryview(data)[lo - pos : hi - pos]
            assert st.sink is not None
            if self.progress is not None:
                self.progress(hi - lo)
            call = part.call
            return st.sink.write(lo - st.start, view, call.consumed)

        part.call = session.start(
            header, on_response=on_response, on_checksums=on_checksums, on_data=on_data
        )
        part.call.done.add_done_callback(self._wake)
        self.outstanding.add(part)

    def _wake(self, _: object = None) -> None:
        """Wake the drive loop: a part's call ended, parts were queued, or it is time to
        re-plan."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _first_response(self, resp: ResponseHeader) -> None:
        info = _info_from(resp, self.bucket, self.key)
        if self.if_match is not None and info.etag != self.if_match:
            raise ObjectChanged(f"{self.bucket}/{self.key} is not the version asked for")
        wanted = RequestHeader(
            op="GET",
            bucket=self.bucket,
            key=self.key,
            offset=self.offset,
            length=self.length,
            suffix=self.suffix,
        )
        try:
            rng = resolve_range(wanted, info.size)
        except RequestError as exc:
            raise error_for_code(exc.code, exc.reason) from None
        st = self.state
        st.info = info
        st.start, st.end = rng.offset, rng.end
        st.sink = self.make_sink(info, rng.length)
        first = Span(resp.offset or 0, resp.length or 0)
        target = aligned_span(st.start, st.end, info.size, info.block_size)
        # A first part that began mid-block (a suffix, or an object with a larger block
        # size than the gateway's current one) cannot verify its head: read the aligned
        # range again from the start; the verified bytes overwrite the unverified ones.
        rest_start = first.end if first.start % info.block_size == 0 else target.start
        if rest_start < target.end:
            rest = Span(rest_start, target.end - rest_start)
            self.parts = [
                _Part(s) for s in split_parts(rest, self.prefetch.part_size, info.block_size)
            ]
            self._wake()  # start them now, not when the first part ends

    # -- the loop

    async def run(self) -> GetResult:
        session = await self._session()
        self._start_part(session, _Part(Span(0, 0)), None)
        await self._drive(session)
        st = self.state
        assert st.info is not None and st.sink is not None
        await st.sink.flush()
        if self.verify_sha256 and st.start == 0 and st.end == st.info.size:
            self._check_digest()
        return GetResult(st.info, st.start, st.end - st.start, self.attempts, self.refetched)

    def _check_digest(self) -> None:
        st = self.state
        buffer = getattr(st.sink, "buffer", None)
        if buffer is None or st.info is None or not st.info.sha256:
            return
        if hashlib.sha256(buffer).digest() != st.info.sha256:
            raise IntegrityError(f"{self.bucket}/{self.key}: whole-object SHA-256 mismatch")

    def _plan(self, session: ClientSession) -> int:
        now = time.perf_counter()
        elapsed = now - self._rate_since
        if elapsed >= 0.05:
            self._rate = self._rate_bytes / elapsed
            self._rate_bytes = 0
            self._rate_since = now
        estimate = compat.path_estimate(session.driver.quic)
        outstanding_bytes = 0
        for part in self.outstanding:
            verifier = part.verifier
            outstanding_bytes += (
                verifier.end - verifier.position if verifier is not None else part.span.length
            )
        return plan_prefetch(
            estimate,
            outstanding_bytes=outstanding_bytes,
            outstanding_parts=len(self.outstanding),
            remaining_parts=len(self.parts),
            delivery_rate=self._rate,
            config=self.prefetch,
        )

    async def _drive(self, session: ClientSession) -> None:
        while self.outstanding or self.parts or self.state.info is None:
            first_lost = self.state.info is None and not self.outstanding
            if (self.parts or first_lost) and not session.usable:
                # Parts in flight on a draining connection (GOAWAY) finish there; new ones
                # need a new connection. A dead connection fails its calls, which requeue.
                session = await self._reconnect(session)
            if first_lost:
                self._start_part(session, _Part(Span(0, 0)), None)
            elif self.state.info is not None and session.usable:
                for _ in range(self._plan(session)):
                    part = self.parts.pop(0)
                    self._start_part(session, part, part.span)
            if not self.outstanding:
                continue
            await self._until_woken()
            for part in [p for p in self.outstanding if p.call is not None and p.call.done.done()]:
                future = part.call.done  # type: ignore[union-attr]
                self.outstanding.discard(part)
                error = future.exception()
                if error is None:
                    self._completed(part)
                elif isinstance(error, ConnectionFailed):
                    self._requeue(part)
                elif isinstance(error, IntegrityError):
                    self._integrity_failure(part, error)
                elif isinstance(error, PreconditionFailed) and self.state.info is not None:
                    raise ObjectChanged(
                        f"{self.bucket}/{self.key} changed while being read; nothing mixed"
                    )
                else:
                    raise error

    async def _until_woken(self) -> None:
        """Until a part's call ends, the first response queues the other parts, or (while
        parts wait to be started) the re-plan interval passes. One future awaited, woken
        by the calls' own callbacks: asyncio.wait's per-wait set-up cost a small GET
        about 15 us, and a large GET's other parts waited up to the re-plan interval
        after its first response queued them."""
        if any(p.call is not None and p.call.done.done() for p in self.outstanding):
            return
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(REPLAN_INTERVAL, self._wake) if self.parts else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _completed(self, part: _Part) -> None:
        verifier = part.verifier
        if verifier is None:
            raise QuicstoreError("response without a body range")
        self.state.coverage.add(verifier.offset, verifier.end)

    def _remaining_span(self, part: _Part) -> Span | None:
        """What of a part must be fetched again: from its last verified byte."""
        verifier = part.verifier
        if verifier is None:  # nothing arrived: the whole part (or the first request)
            return part.span if self.state.info is not None and part.span.length else None
        resume = max(verifier.offset, verifier.verified_end)
        self.state.coverage.add(verifier.offset, resume)
        self.refetched += max(0, verifier.position - resume)
        if resume >= verifier.end:
            return Span(resume, 0)
        return Span(resume, verifier.end - resume)

    def _requeue(self, part: _Part) -> None:
        span = self._remaining_span(part)
        if span is not None and span.length:
            self.parts.insert(0, _Part(span))

    def _integrity_failure(self, part: _Part, error: IntegrityError) -> None:
        span = self._remaining_span(part)
        failures = part.integrity_failures + 1
        if failures > self.integrity_retries or span is None:
            block = part.last_failed_block
            info = self.state.info
            if block is None and span is not None and info is not None:
                block = span.start // info.block_size  # the gateway stopped at this block
            where = ""
            if block is not None and info is not None:
                where = (
                    f" at block {block} (bytes {block * info.block_size}-"
                    f"{min(info.size, (block + 1) * info.block_size) - 1})"
                )
            raise IntegrityError(
                f"{self.bucket}/{self.key}: data failed its checksum{where} "
                f"{failures} times; giving up"
            ) from error
        if span.length:
            retry = _Part(
                span, integrity_failures=failures, last_failed_block=part.last_failed_block
            )
            self.parts.insert(0, retry)

    async def _reconnect(self, session: ClientSession) -> ClientSession:
        if self.attempts >= self.max_attempts:
            raise ConnectionFailed(
                f"{self.bucket}/{self.key}: connection lost {self.attempts} times; giving up "
                f"with {self.state.coverage.covered()} bytes verified"
            )
        log.info(
            "connection lost during %s/%s; resuming (attempt %d)",
            self.bucket,
            self.key,
            self.attempts + 1,
        )
        return await self._session()
