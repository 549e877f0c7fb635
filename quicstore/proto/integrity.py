"""End-to-end integrity (spec Section 8): block arithmetic, CRC32C per block, SHA-256.

Pure computation over bytes handed in; no I/O. CRC32C comes from the ``crc32c`` package
(SSE4.2 / ARMv8 instructions, about 8 GB/s on one core here), which also continues a CRC
across pieces, so nothing needs buffering to verify a block that arrives in pieces.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import crc32c as _crc32c

from .codes import ErrorCode
from .errors import ErrorScope, ProtocolError
from .frames import Buffer


def crc32c(data: Buffer, value: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``value`` (0 to start)."""
    return int(_crc32c.crc32c(data, value))


class IntegrityError(ProtocolError):
    """Bytes did not match their checksum (QS_INTEGRITY_ERROR)."""

    def __init__(self, reason: str, *, block: int | None = None) -> None:
        super().__init__(ErrorCode.QS_INTEGRITY_ERROR, reason, scope=ErrorScope.REQUEST)
        self.block = block
        """Index of the block that failed, if one did."""


def block_count(size: int, block_size: int) -> int:
    """Number of blocks of an object of ``size`` bytes (0 for an empty object)."""
    return (size + block_size - 1) // block_size


def blocks_touched(offset: int, length: int, block_size: int) -> range:
    """Indices of the blocks that bytes ``[offset, offset + length)`` touch."""
    if length <= 0:
        return range(0)
    return range(offset // block_size, (offset + length - 1) // block_size + 1)


def align_range(offset: int, length: int, size: int, block_size: int) -> tuple[int, int]:
    """The smallest range covering ``[offset, offset + length)`` whose ends fall on block
    boundaries (or the object's end), so that every block in it can be verified."""
    start = offset - offset % block_size
    end = min(size, -(-(offset + length) // block_size) * block_size)
    return start, max(0, end - start)


def block_checksums(data: Buffer, block_size: int) -> list[int]:
    """CRC32C of each ``block_size`` piece of ``data`` (the last may be shorter)."""
    view = memoryview(data)
    return [crc32c(view[i : i + block_size]) for i in range(0, len(view), block_size)]


def pack_checksums(checksums: Sequence[int]) -> bytes:
    """Checksums as consecutive big-endian 32-bit values (their form on disk and wire)."""
    return struct.pack(f">{len(checksums)}I", *checksums)


def unpack_checksums(packed: Buffer) -> tuple[int, ...]:
    """The inverse of :func:`pack_checksums`."""
    if len(packed) % 4:
        raise ValueError("packed checksums must be a multiple of 4 bytes")
    return struct.unpack(f">{len(packed) // 4}I", packed)


class BodyDigester:
    """Computes, as a body streams through, what a stored version needs: the CRC32C of each
    block, the SHA-256 and the size. Optionally checks client-sent block checksums."""

    __slots__ = ("_block_crc", "_block_fill", "_expected", "block_size", "checksums", "sha", "size")

    def __init__(self, block_size: int) -> None:
        """``block_size``: bytes per checksum block."""
        self.block_size = block_size
        self.checksums: list[int] = []
        """CRC32C of every completed block so far."""
        self.sha = hashlib.sha256()
        self.size = 0
        """Bytes seen so far."""
        self._block_crc = 0
        self._block_fill = 0
        self._expected: dict[int, int] = {}

    def expect(self, first_block: int, checksums: Sequence[int]) -> None:
        """Record checksums the sender claims for blocks from ``first_block``; a block that
        is already complete is compared at once. Raises IntegrityError on a mismatch."""
        for index, value in enumerate(checksums, first_block):
            if index < len(self.checksums):
                if self.checksums[index] != value:
                    raise IntegrityError(f"block {index} checksum mismatch", block=index)
            else:
                self._expected[index] = value

    def update(self, data: Buffer) -> None:
        """Add the next bytes of the body. Raises IntegrityError if a completed block does
        not match a checksum given to :meth:`expect`."""
        view = memoryview(data)
        self.sha.update(view)
        self.size += len(view)
        pos = 0
        while pos < len(view):
            take = min(self.block_size - self._block_fill, len(view) - pos)
            self._block_crc = crc32c(view[pos : pos + take], self._block_crc)
            self._block_fill += take
            pos += take
            if self._block_fill == self.block_size:
                self._complete_block()

    def _complete_block(self) -> None:
        index = len(self.checksums)
        expected = self._expected.pop(index, None)
        if expected is not None and expected != self._block_crc:
            raise IntegrityError(f"block {index} checksum mismatch", block=index)
        self.checksums.append(self._block_crc)
        self._block_crc = 0
        self._block_fill = 0

    def finish(self) -> tuple[list[int], bytes]:
        """Close the last partial block; return ``(checksums, sha256)``. Raises
        IntegrityError if the sender claimed checksums for blocks the body does not have."""
        if self._block_fill:
            self._complete_block()
        if self._expected:
            first = min(self._expected)
            raise IntegrityError(f"checksum sent for block {first} beyond the body", block=first)
        return self.checksums, self.sha.digest()


class RangeVerifier:
    """Verifies the bytes of ``[offset, offset + length)`` of an object as they arrive in
    order, block by block, with no buffering (the CRC continues across pieces).

    Blocks wholly inside the range are verified when their last byte arrives. Partial edge
    blocks (a range that does not start or end on a block boundary or the object's end)
    cannot be verified: :attr:`fully_verifiable` says whether the range has any.
    """

    __slots__ = (
        "_block_crc",
        "_expected",
        "_pos",
        "block_size",
        "end",
        "offset",
        "size",
        "verified_end",
    )

    def __init__(self, *, offset: int, length: int, size: int, block_size: int) -> None:
        """``size``: the whole object's size; byte counts in bytes."""
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.offset = offset
        self.end = offset + length
        self.size = size
        self.block_size = block_size
        self._pos = offset
        self._block_crc = 0
        self._expected: dict[int, int] = {}
        self.verified_end = -(-offset // block_size) * block_size
        """Absolute offset up to which every byte from the first block boundary at or after
        ``offset`` has been verified."""

    @property
    def position(self) -> int:
        """Absolute offset of the next byte expected."""
        return self._pos

    @property
    def fully_verifiable(self) -> bool:
        """True if both ends of the range fall on block boundaries (or the object's end)."""
        return self.offset % self.block_size == 0 and (
            self.end % self.block_size == 0 or self.end == self.size
        )

    @property
    def complete(self) -> bool:
        """True once every byte of the range has been fed."""
        return self._pos == self.end

    def add_checksums(self, first_block: int, checksums: Sequence[int]) -> None:
        """Record the checksums of blocks from ``first_block`` (from a CHECKSUMS frame)."""
        for index, value in enumerate(checksums, first_block):
            self._expected[index] = value

    def update(self, data: Buffer) -> int:
        """Feed the next bytes of the range; return :attr:`verified_end` afterwards.

        Raises IntegrityError for a block whose CRC32C does not match, one whose checksum
        did not arrive before its data (the spec requires CHECKSUMS first), or bytes past
        the end of the range.
        """
        view = memoryview(data)
        if self._pos + len(view) > self.end:
            raise IntegrityError("more bytes than the range holds")
        bs = self.block_size
        pos = 0
        while pos < len(view):
            block = self._pos // bs
            block_start = block * bs
            block_end = min(block_start + bs, self.size)
            take = min(block_end - self._pos, len(view) - pos)
            verifiable = block_start >= self.offset and block_end <= self.end
            if verifiable:
                if block not in self._expected:
                    raise IntegrityError(f"no checksum received for block {block}", block=block)
                self._block_crc = crc32c(view[pos : pos + take], self._block_crc)
            pos += take
            self._pos += take
            if verifiable and self._pos == block_end:
                expected = self._expected.pop(block)
                if expected != self._block_crc:
                    raise IntegrityError(
                        f"block {block} (bytes {block_start}-{block_end - 1}) failed its "
                        "CRC32C check",
                        block=block,
                    )
                self._block_crc = 0
                self.verified_end = block_end
        return self.verified_end
