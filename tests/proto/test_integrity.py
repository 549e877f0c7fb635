"""Block checksums and range verification (quicstore.proto.integrity)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quicstore.proto.integrity import (
    BodyDigester,
    IntegrityError,
    RangeVerifier,
    align_range,
    block_checksums,
    block_count,
    blocks_touched,
    crc32c,
    pack_checksums,
    unpack_checksums,
)


def test_crc32c_known_answer() -> None:
    # RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA; "123456789" -> 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283


def test_block_arithmetic() -> None:
    assert block_count(0, 4) == 0 and block_count(9, 4) == 3
    assert list(blocks_touched(3, 2, 4)) == [0, 1]
    assert list(blocks_touched(4, 4, 4)) == [1]
    assert align_range(5, 2, size=9, block_size=4) == (4, 4)
    assert align_range(7, 100, size=9, block_size=4) == (4, 5)


@given(st.binary(max_size=5000), st.integers(1, 64), st.lists(st.integers(0, 5000), max_size=5))
def test_digester_matches_one_shot(body: bytes, block_size: int, cuts: list[int]) -> None:
    digester = BodyDigester(block_size)
    digester.expect(0, block_checksums(body, block_size)[:2])
    prev = 0
    for cut in [*sorted(c % (len(body) + 1) for c in cuts), len(body)]:
        digester.update(body[prev:cut])
        prev = cut
    checksums, digest = digester.finish()
    assert checksums == block_checksums(body, block_size)
    assert digest == hashlib.sha256(body).digest()
    assert unpack_checksums(pack_checksums(checksums)) == tuple(checksums)


def test_digester_rejects_wrong_claims() -> None:
    digester = BodyDigester(4)
    digester.expect(0, [0])
    with pytest.raises(IntegrityError) as exc:
        digester.update(b"abcd")
    assert exc.value.block == 0
    late = BodyDigester(4)
    late.update(b"abcd")
    with pytest.raises(IntegrityError):
        late.expect(0, [1])
    beyond = BodyDigester(4)
    beyond.expect(3, [1])
    beyond.update(b"ab")
    with pytest.raises(IntegrityError):
        beyond.finish()


@given(
    st.binary(min_size=1, max_size=3000),
    st.integers(1, 200),
    st.data(),
)
def test_range_verifier_accepts_true_bytes_in_any_pieces(
    body: bytes, block_size: int, data: st.DataObject
) -> None:
    offset = data.draw(st.integers(0, len(body) - 1))
    length = data.draw(st.integers(1, len(body) - offset))
    verifier = RangeVerifier(offset=offset, length=length, size=len(body), block_size=block_size)
    sums = block_checksums(body, block_size)
    first = offset // block_size
    verifier.add_checksums(first, sums[first:])
    pos = offset
    while pos < offset + length:
        step = data.draw(st.integers(1, offset + length - pos))
        verifier.update(body[pos : pos + step])
        pos += step
    assert verifier.complete
    if verifier.fully_verifiable:
        assert verifier.verified_end == offset + length


@given(st.binary(min_size=8, max_size=400), st.integers(4, 32), st.data())
def test_range_verifier_catches_any_flipped_byte(
    body: bytes, block_size: int, data: st.DataObject
) -> None:
    sums = block_checksums(body, block_size)
    index = data.draw(st.integers(0, len(body) - 1))
    corrupt = bytearray(body)
    corrupt[index] ^= 1 << data.draw(st.integers(0, 7))
    verifier = RangeVerifier(offset=0, length=len(body), size=len(body), block_size=block_size)
    verifier.add_checksums(0, sums)
    with pytest.raises(IntegrityError) as exc:
        verifier.update(bytes(corrupt))
    assert exc.value.block == index // block_size
    assert verifier.verified_end <= index


def test_range_verifier_needs_checksums_first() -> None:
    verifier = RangeVerifier(offset=0, length=8, size=8, block_size=4)
    with pytest.raises(IntegrityError):
        verifier.update(b"abcd")


def test_range_verifier_rejects_extra_bytes() -> None:
    verifier = RangeVerifier(offset=0, length=2, size=8, block_size=4)
    with pytest.raises(IntegrityError):
        verifier.update(b"abc")
