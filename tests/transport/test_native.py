"""quicstore._native (C packet protection) against RFC 9001's vectors and aioquic's Python
path: the same bytes on the wire, the same packet numbers, the same errors."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable

import aioquic.quic.crypto
import pytest
from aioquic import tls
from aioquic._buffer import Buffer
from aioquic._crypto import AEAD as StockAEAD
from aioquic._crypto import CryptoError
from aioquic._crypto import HeaderProtection as StockHeaderProtection
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.crypto import CryptoPair, decode_packet_number
from aioquic.tls import CipherSuite
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from quicstore.transport import compat
from tests.pair import test_certificate

if compat.native_unavailable_reason() and os.environ.get(compat.NATIVE_SETTING) != "1":
    pytest.skip(
        f"quicstore._native not built: {compat.native_unavailable_reason()}",
        allow_module_level=True,
    )
from quicstore import _native  # type: ignore[attr-defined]

CIPHERS = {
    "aes-128-gcm": (b"aes-128-gcm", b"aes-128-ecb", 16),
    "aes-256-gcm": (b"aes-256-gcm", b"aes-256-ecb", 32),
    "chacha20-poly1305": (b"chacha20-poly1305", b"chacha20", 32),
}


def stock_seal(aead: StockAEAD, hp: StockHeaderProtection, header: bytes, payload: bytes,
               number: int) -> bytes:  # fmt: skip
    return hp.apply(header, aead.encrypt(payload, header, number))


def test_rfc9001_a5_chacha20_short_header() -> None:
    """RFC 9001 appendix A.5: a ChaCha20-Poly1305 short-header packet, both ways."""
    key = bytes.fromhex("c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8")
    iv = bytes.fromhex("e0459b3474bdd0e44a41c144")
    hp_key = bytes.fromhex("25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4")
    aead = _native.AEAD(b"chacha20-poly1305", key, iv)
    hp = _native.HeaderProtection(b"chacha20", hp_key)
    header, number = bytes.fromhex("4200bff4"), 654360564
    packet = bytes.fromhex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb")
    assert _native.seal(aead, hp, header, b"\x01", number) == packet
    assert hp.mask(packet[5:21]) == bytes.fromhex("aefefe7d03")
    assert _native.open(aead, hp, packet, 1, number - 1, 0) == (header, b"\x01", number)


@pytest.mark.parametrize(
    ("hp_key", "sample", "mask"),
    [  # RFC 9001 appendix A.2 (client Initial) and A.3 (server Initial)
        ("9f50449e04a0e810283a1e9933adedd2", "d1b1c98dd7689fb8ec11d242b123dc9b", "437b9aec36"),
        ("c206b8d9b9f0f37644430b490eeaa314", "2cd0991cd25b0aac406a5816b6394100", "2ec0d8356a"),
    ],
)
def test_rfc9001_initial_header_protection_masks(hp_key: str, sample: str, mask: str) -> None:
    hp = _native.HeaderProtection(b"aes-128-ecb", bytes.fromhex(hp_key))
    assert hp.mask(bytes.fromhex(sample)) == bytes.fromhex(mask)


@settings(max_examples=300, deadline=None)
@given(
    cipher=st.sampled_from(sorted(CIPHERS)),
    keys=st.binary(min_size=76, max_size=76),
    long_header=st.booleans(),
    key_phase=st.integers(0, 1),
    pn_length=st.integers(1, 4),
    middle=st.binary(max_size=40),
    payload=st.binary(min_size=3, max_size=3000),
    number=st.integers(0, (1 << 62) - 1),
)
def test_seal_and_open_match_aioquic(
    cipher: str,
    keys: bytes,
    long_header: bool,
    key_phase: int,
    pn_length: int,
    middle: bytes,
    payload: bytes,
    number: int,
) -> None:
    aead_name, hp_name, key_length = CIPHERS[cipher]
    key, iv, hp_key = keys[:key_length], keys[32:44], keys[44 : 44 + key_length]
    first = (0xC0 if long_header else 0x40 | key_phase << 2) | (pn_length - 1)
    truncated = number & ((1 << (8 * pn_length)) - 1)
    header = bytes([first]) + middle + truncated.to_bytes(pn_length, "big")
    stock_aead, stock_hp = StockAEAD(aead_name, key, iv), StockHeaderProtection(hp_name, hp_key)
    aead, hp = _native.AEAD(aead_name, key, iv), _native.HeaderProtection(hp_name, hp_key)

    packet = _native.seal(aead, hp, header, payload, number)
    assert packet == stock_seal(stock_aead, stock_hp, header, payload, number)

    pn_offset = len(header) - pn_length
    expected = max(0, number - 3)  # the receiver's next expected number
    decoded = decode_packet_number(truncated, pn_length * 8, expected)
    opened = _native.open(aead, hp, packet, pn_offset, expected, key_phase)
    if decoded != number:  # the truncated number is ambiguous: what aioquic decodes fails
        assert opened[2] == decoded
        return
    assert opened == (header, payload, number)
    # The HeaderProtection object also serves aioquic-style callers (apply/remove).
    protected = stock_aead.encrypt(payload, header, number)
    assert hp.apply(header, protected) == packet
    assert hp.remove(packet, pn_offset) == stock_hp.remove(packet, pn_offset)
    if not long_header:  # the other key phase: the header is opened, the payload left
        other = _native.open(aead, hp, packet, pn_offset, expected, 1 - key_phase)
        assert other == (header, None, number)
    assert aead.decrypt(packet[len(header) :], header, number) == payload


@settings(max_examples=300, deadline=None)
@given(
    bits=st.sampled_from([8, 16, 24, 32]),
    expected=st.integers(0, (1 << 62) - 1),
    delta=st.integers(-(1 << 31), 1 << 31),
)
def test_packet_number_decoding_matches_aioquic(bits: int, expected: int, delta: int) -> None:
    """RFC 9000 appendix A.3 near window edges and the 2^62 limit, as aioquic decodes."""
    number = min(max(0, expected + delta), (1 << 62) - 1)
    truncated = number & ((1 << bits) - 1)
    pn_length = bits // 8
    aead = _native.AEAD(b"aes-128-gcm", bytes(16), bytes(12))
    hp = _native.HeaderProtection(b"aes-128-ecb", bytes(16))
    header = bytes([0x40 | (pn_length - 1), 7]) + truncated.to_bytes(pn_length, "big")
    packet = _native.seal(aead, hp, header, bytes(20), number)
    if decode_packet_number(truncated, bits, expected) == number:
        assert _native.open(aead, hp, packet, 2, expected, 0) == (header, bytes(20), number)
    else:  # decoded to another number: the nonce differs and the packet does not open
        with pytest.raises(CryptoError):
            _native.open(aead, hp, packet, 2, expected, 0)


def test_forged_and_short_packets_raise_aioquic_crypto_error() -> None:
    aead = _native.AEAD(b"aes-128-gcm", bytes(range(16)), bytes(12))
    hp = _native.HeaderProtection(b"aes-128-ecb", bytes(16))
    header = bytes([0x41, 9, 9, 0, 5])
    packet = bytearray(_native.seal(aead, hp, header, b"payload" * 4, 5))
    packet[-1] ^= 1
    with pytest.raises(CryptoError):
        _native.open(aead, hp, bytes(packet), 3, 4, 0)
    with pytest.raises(CryptoError, match="too short"):
        _native.open(aead, hp, bytes(packet[:20]), 3, 4, 0)
    for offset in (-1, 0, len(packet), 1 << 40):
        with pytest.raises((CryptoError, OverflowError)):
            _native.open(aead, hp, bytes(packet), offset, 4, 0)
    with pytest.raises(CryptoError, match="too short"):
        _native.seal(aead, hp, bytes([0x40, 1]), b"", 1)
    with pytest.raises(CryptoError):
        aead.decrypt(b"short", b"", 1)
    with pytest.raises(CryptoError, match="Invalid"):
        _native.AEAD(b"aes-128-ccm", bytes(16), bytes(12))
    with pytest.raises(CryptoError, match="length"):
        _native.HeaderProtection(b"aes-256-ecb", bytes(16))
    with pytest.raises(TypeError):
        _native.seal(hp, aead, header, b"payload", 1)


def _pair(secret: bytes, is_client: bool) -> CryptoPair:
    """1-RTT keys of one side (on the packet path in use when it is made)."""
    pair = CryptoPair()
    suite, version = CipherSuite.AES_128_GCM_SHA256, 1
    send, recv = (secret, secret[::-1]) if is_client else (secret[::-1], secret)
    pair.send.setup(cipher_suite=suite, secret=send, version=version)
    pair.recv.setup(cipher_suite=suite, secret=recv, version=version)
    return pair


def _packet(sender: CryptoPair, number: int) -> tuple[bytes, bytes, int, bytes]:
    first = 0x40 | sender.key_phase << 2 | 1  # short header, 2-byte packet number
    header = bytes([first, 3]) + number.to_bytes(2, "big")
    payload = b"data %d" % number
    return header, payload, number, sender.encrypt_packet(header, payload, number)


def test_key_updates_on_the_native_path() -> None:
    """Two native sides across key updates started by either side (RFC 9001 section 6)."""
    before = compat.native_packet_path()
    compat.use_native_packet_path(True)
    try:
        client, server = _pair(bytes(range(32)), True), _pair(bytes(range(32)), False)
        assert isinstance(client.send, compat.NativeCryptoContext)
        number = 0
        for updater in (client, server, client):
            updater.update_key()
            for sender, receiver in ((client, server), (server, client)):
                header, payload, number, packet = _packet(sender, number)
                assert receiver.decrypt_packet(packet, 2, number) == (header, payload, number)
                number += 1
        assert client.send.key_phase == server.recv.key_phase == 1  # three updates
    finally:
        compat.use_native_packet_path(before)


@pytest.mark.parametrize("sender_native", [True, False])
def test_packets_of_one_path_open_on_the_other_across_key_updates(sender_native: bool) -> None:
    before = compat.native_packet_path()
    try:
        compat.use_native_packet_path(sender_native)
        sender = _pair(bytes(range(32)), True)
        sent = []
        for number in range(6):
            if number in (2, 4):
                sender.update_key()
            sent.append(_packet(sender, number))
        compat.use_native_packet_path(not sender_native)
        receiver = _pair(bytes(range(32)), False)
        assert isinstance(receiver.recv, compat.NativeCryptoContext) is not sender_native
        for header, payload, number, packet in sent:
            assert receiver.decrypt_packet(packet, 2, number) == (header, payload, number)
        assert receiver.recv.key_phase == 0  # two updates followed
        forged = bytearray(sent[-1][3])
        forged[-3] ^= 0x40
        with pytest.raises(CryptoError):
            receiver.decrypt_packet(bytes(forged), 2, 5)
    finally:
        compat.use_native_packet_path(before)


def test_path_switch_installs_the_classes_aioquic_builds() -> None:
    before = compat.native_packet_path()
    try:
        compat.use_native_packet_path(False)
        assert aioquic.quic.crypto.HeaderProtection is compat.FastHeaderProtection
        assert not compat.native_packet_path()
        compat.use_native_packet_path(True)
        assert aioquic.quic.crypto.HeaderProtection is _native.HeaderProtection
        assert aioquic.quic.crypto.CryptoContext is compat.NativeCryptoContext
        assert compat.native_packet_path()
    finally:
        compat.use_native_packet_path(before)


# -- native stream bursts: packets built and sealed in C, registered with aioquic


def test_stream_packets_open_to_one_stream_frame_each() -> None:
    """seal_stream_packets: consecutive packet numbers, no packet over the size, one STREAM
    frame each (offset, length, FIN on the last) carrying the data in order."""
    aead = _native.AEAD(b"aes-128-gcm", bytes(range(16)), bytes(12))
    hp = _native.HeaderProtection(b"aes-128-ecb", bytes(range(16, 32)))
    header = bytes([0x41]) + bytes(range(8))
    data = os.urandom(10_000)
    for size, offset in ((1200, 0), (1452, 70_000), (65_000, 1 << 31)):
        packets, ends = _native.seal_stream_packets(
            aead, hp, header, 300, 4, offset, data, True, size, 1000
        )
        assert ends[-1] == offset + len(data)
        got = b""
        for index, (packet, end) in enumerate(zip(packets, ends, strict=True)):
            assert len(packet) <= size
            plain, payload, number = _native.open(aead, hp, packet, 9, 300 + index, 0)
            assert number == 300 + index and plain[0] == 0x41
            buf = Buffer(data=payload)
            frame_type = buf.pull_uint_var()
            assert frame_type & ~0x07 == 0x08 and frame_type & 0x02
            assert buf.pull_uint_var() == 4
            frame_offset = buf.pull_uint_var() if frame_type & 0x04 else 0
            assert frame_offset == offset + len(got)
            length = buf.pull_uint_var()
            got += buf.pull_bytes(length)
            assert buf.eof() and offset + len(got) == end
            assert bool(frame_type & 0x01) == (index == len(packets) - 1)
            if index < len(packets) - 1:
                assert len(packet) >= size - 8  # full packets, but for varint slack
        assert got == data
    few, ends = _native.seal_stream_packets(aead, hp, header, 0, 0, 0, data, True, 1200, 3)
    assert len(few) == 3 and ends[-1] < len(data)
    with pytest.raises(ValueError):  # packet number length bits other than 2
        _native.seal_stream_packets(aead, hp, bytes([0x40]) + bytes(8), 0, 0, 0, data, 0, 1200, 1)


def test_stream_packets_with_a_leading_frame_and_whole_packets_only() -> None:
    """seal_stream_packets with a prefix: the first packet leads with those frames and
    carries that much less data; with whole_only, a last packet shorter than the size allows
    is left unsent; a one-byte prefix alone is padded so the header-protection sample lies
    within the packet."""
    aead = _native.AEAD(b"aes-128-gcm", bytes(range(16)), bytes(12))
    hp = _native.HeaderProtection(b"aes-128-ecb", bytes(range(16, 32)))
    header = bytes([0x41]) + bytes(range(8))
    data = os.urandom(5000)
    ack = bytes([0x02, 0x20, 0x05, 0x00, 0x10])  # ACK: largest 32, delay 5, first range 16
    packets, ends = _native.seal_stream_packets(
        aead, hp, header, 10, 4, 0, data, False, 1452, 100, ack, True
    )
    assert len(packets) == 3 and all(len(p) >= 1452 - 8 for p in packets)
    assert ends[-1] < len(data)  # the short tail stays for later
    _plain, payload, _number = _native.open(aead, hp, packets[0], 9, 10, 0)
    assert payload.startswith(ack)
    buf = Buffer(data=payload[len(ack) :])
    assert buf.pull_uint_var() & ~0x07 == 0x08 and buf.pull_uint_var() == 4
    assert buf.pull_bytes(buf.pull_uint_var()) == data[: ends[0]] and buf.eof()
    _plain, payload, _number = _native.open(aead, hp, packets[1], 9, 11, 0)
    assert not payload.startswith(ack)
    tail, tail_ends = _native.seal_stream_packets(
        aead, hp, header, 13, 4, ends[-1], data[ends[-1] :], True, 1452, 100, b"", False
    )
    assert len(tail) == 1 and tail_ends == [len(data)]  # the short last packet, with FIN
    assert _native.seal_stream_packets(
        aead, hp, header, 13, 4, 0, data[:100], False, 1452, 100, b"", True
    ) == ([], [])
    ping, ping_ends = _native.seal_stream_packets(
        aead, hp, header, 20, 4, 0, b"", False, 1452, 5, b"\x01"
    )
    assert len(ping) == 1 and ping_ends == [0]
    _plain, payload, number = _native.open(aead, hp, ping[0], 9, 20, 0)
    assert number == 20 and payload.rstrip(b"\x00") == b"\x01"
    with pytest.raises(ValueError):  # a prefix that cannot fit in a packet
        _native.seal_stream_packets(aead, hp, header, 0, 4, 0, data, False, 1200, 1, bytes(1200))


def test_pending_views_continue_into_the_next_buffers_for_full_packets() -> None:
    """next_pending_view: a view within one buffer, and whether more follows; with join, a
    buffer's short remainder is continued by views of the following buffers (no copy; up to
    CONTINUATION_BUFFERS) when they reach a full packet or the end of what may be sent, not
    past the flow-control limit; only runs of many tiny buffers are joined by a copy; FIN
    reported where the bytes end the stream."""
    sender = compat.ChunkedStreamSender(0, True)
    first, header, second = os.urandom(1000), os.urandom(3), os.urandom(3000)
    sender.write_view(memoryview(first), lambda: None)
    sender.write(header)  # a DATA frame's header between two reads
    sender.write_view(memoryview(second), lambda: None, end_stream=True)
    start, view, following, fin, more = sender.next_pending_view(10_000)  # type: ignore[misc]
    assert (start, bytes(view), following, fin, more) == (0, first, None, False, True)
    sender.mark_sent(0, 900, False)
    start, view, following, fin, more = sender.next_pending_view(10_000, 1452)  # type: ignore[misc]
    assert (start, bytes(view), [bytes(v) for v in following], fin, more) == (
        900, first[900:], [header, second], True, False
    )  # fmt: skip
    start, view, following, fin, more = sender.next_pending_view(1500, 1452)  # type: ignore[misc]
    assert (start, bytes(view), [bytes(v) for v in following], fin, more) == (
        900, first[900:], [header, second[:497]], False, False
    )  # fmt: skip
    sender.mark_sent(900, 2500, False)
    start, view, following, fin, more = sender.next_pending_view(10_000, 1452)  # type: ignore[misc]
    assert (start, bytes(view), following, fin, more) == (2500, second[1497:], None, True, False)
    # Many tiny writes: CONTINUATION_BUFFERS of them do not make a packet, so they are
    # joined (copied).
    tiny = compat.ChunkedStreamSender(0, True)
    parts = [os.urandom(50) for _ in range(40)]
    for part in parts:
        tiny.write_view(memoryview(part), lambda: None)
    start, joined, following, fin, more = tiny.next_pending_view(10_000, 1452)  # type: ignore[misc]
    assert (start, joined, following, fin, more) == (0, b"".join(parts)[:1452], None, False, True)


def test_pending_views_reach_through_several_buffers_for_a_burst() -> None:
    """next_pending_view with ``reach``: a view is continued by the following buffers (reads
    and the DATA headers between them) towards ``reach`` bytes, up to CONTINUATION_BUFFERS
    of them, even where the first buffer alone holds full packets; more pending follows."""
    sender = compat.ChunkedStreamSender(0, True)
    reads = [os.urandom(5000) for _ in range(6)]
    for read in reads:
        sender.write(b"\x00\x40\x13\x88")  # a DATA frame's header
        sender.write_view(memoryview(read), lambda: None)
    wire = b"".join(b"\x00\x40\x13\x88" + read for read in reads)
    # One packet's reach: the first buffer is enough (4 bytes) only joined with the next.
    start, view, following, fin, more = sender.next_pending_view(100_000, 1452)  # type: ignore[misc]
    assert start == 0 and bytes(view) + b"".join(map(bytes, following)) == wire[:5004]
    # A burst's reach: eight following buffers (four reads and four headers) in one view set.
    start, view, following, fin, more = sender.next_pending_view(  # type: ignore[misc]
        100_000, 1452, 30 * 1452
    )
    assert len(following) == compat.CONTINUATION_BUFFERS
    assert (start, fin, more) == (0, False, True)
    assert bytes(view) + b"".join(map(bytes, following)) == wire[: 4 * 5004 + 4]
    # A smaller reach stops at the buffer that reaches it.
    start, view, following, fin, more = sender.next_pending_view(  # type: ignore[misc]
        100_000, 1452, 12 * 1452
    )
    assert bytes(view) + b"".join(map(bytes, following)) == wire[: 4 * 5004]
    # Not past the flow-control limit.
    start, view, following, fin, more = sender.next_pending_view(  # type: ignore[misc]
        9000, 1452, 30 * 1452
    )
    assert bytes(view) + b"".join(map(bytes, following)) == wire[:9000]
    assert (fin, more) == (False, False)


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(min_value=0, max_value=9000),
    split=st.integers(min_value=0, max_value=9000),
    seed=st.integers(min_value=0, max_value=2**32),
    size=st.sampled_from([1200, 1452, 4000]),
    fin=st.booleans(),
    whole_only=st.booleans(),
    prefix=st.sampled_from([b"", bytes([0x02, 0x20, 0x05, 0x00, 0x10]), b"\x01"]),
)
def test_stream_packets_from_several_buffers_equal_those_from_one(
    length: int, split: int, seed: int, size: int, fin: bool, whole_only: bool, prefix: bytes
) -> None:
    """seal_stream_packets with ``next``: data taken from several buffers (encrypted
    straight from them) gives byte for byte the packets the same bytes give from one
    buffer; more than 8 following buffers are refused."""
    data = random.Random(seed).randbytes(length)
    aead = _native.AEAD(b"aes-128-gcm", bytes(range(16)), bytes(12))
    hp = _native.HeaderProtection(b"aes-128-ecb", bytes(range(16, 32)))
    header = bytes([0x41]) + bytes(range(8))
    split = min(split, len(data))
    whole = _native.seal_stream_packets(
        aead, hp, header, 7, 4, 5000, data, fin, size, 100, prefix, whole_only
    )
    cuts = sorted({split, *random.Random(seed + 1).sample(range(len(data) + 1), min(3, len(data)))})
    rest = [memoryview(bytearray(data[a:b])) for a, b in itertools.pairwise([*cuts, len(data)])]
    parts = _native.seal_stream_packets(
        aead, hp, header, 7, 4, 5000, memoryview(data)[: cuts[0]], fin, size, 100, prefix,
        whole_only, rest,
    )  # fmt: skip
    assert parts == whole
    chacha = _native.AEAD(b"chacha20-poly1305", bytes(range(32)), bytes(12))
    chacha_hp = _native.HeaderProtection(b"chacha20", bytes(range(32, 64)))
    assert _native.seal_stream_packets(
        chacha, chacha_hp, header, 7, 4, 0, data[:split], fin, size, 100, prefix, whole_only,
        [data[split:]],
    ) == _native.seal_stream_packets(
        chacha, chacha_hp, header, 7, 4, 0, data, fin, size, 100, prefix, whole_only
    )  # fmt: skip
    with pytest.raises(ValueError):
        _native.seal_stream_packets(
            aead, hp, header, 7, 4, 0, data, fin, size, 100, prefix, whole_only, [b"x"] * 9
        )


def test_a_due_ack_rides_in_the_first_burst_packet() -> None:
    """With an ACK due and a burst of stream data to send, the ACK goes in the first burst
    packet (registered with aioquic's ACK delivery handler) instead of an ACK-only packet of
    its own that would take a full packet's pacing time; every burst packet but the last is
    full, across the buffers the data was written in."""
    before = compat.native_packet_path()
    compat.use_native_packet_path(True)
    try:
        link = _Link(loss=0.0, seed=1, size=1452, bursts=True)
        link.run_until(lambda: link.client._handshake_confirmed)
        stream_id = link.client.get_next_available_stream_id()
        link.client.send_stream_data(stream_id, b"get", end_stream=True)
        link.run_until(lambda: stream_id in link.server._streams)
        link.client.send_ping(7)  # ack-eliciting: the server owes an ACK
        for data, _ in link.client.datagrams_to_send(now=link.now):
            link.server.receive_datagram(data, ("127.0.0.1", 40000), now=link.now)
        space = link.server._spaces[tls.Epoch.ONE_RTT]
        assert space.ack_at is not None
        body = os.urandom(100_000)
        for piece in range(0, len(body), 10_000):  # buffers that are not packet multiples
            link.server.send_stream_view(
                stream_id, memoryview(body)[piece : piece + 10_000], lambda: None
            )
        first_number = link.server._packet_number
        sent = link.server.datagrams_to_send(now=max(link.now, space.ack_at))
        assert len(sent) >= 8 and space.ack_at is None
        assert all(len(data) >= 1452 - 8 for data, _ in sent[:-1])
        record = space.sent_packets[first_number]
        assert record.delivery_handlers[0][0] == link.server._on_ack_delivery
        assert link.server.native_packets_sent >= len(sent) - 1  # aioquic may fill the window
        for data, _ in sent:
            link.client.receive_datagram(data, ("127.0.0.1", 4433), now=link.now)
        got = b""
        while (event := link.client.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                got += event.data
        assert body.startswith(got) and len(got) >= 7 * 1400
    finally:
        compat.use_native_packet_path(before)


class _Link:
    """A client and a server AppPacedQuicConnection under a fake clock, passing datagrams
    with a loss rate (every (1/loss)-th datagram dropped) and, with batches, seeded
    reordering."""

    def __init__(
        self, *, loss: float, seed: int, size: int, bursts: bool, batches: bool = False
    ) -> None:
        cert_pem, key_pem = test_certificate()
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.loss = loss
        client_config = QuicConfiguration(
            is_client=True, alpn_protocols=["test"], server_name="localhost",
            max_datagram_size=size, max_data=8 << 20, max_stream_data=4 << 20,
        )  # fmt: skip
        client_config.load_verify_locations(cadata=cert_pem)
        server_config = QuicConfiguration(
            is_client=False, alpn_protocols=["test"], max_datagram_size=size,
            max_data=8 << 20, max_stream_data=4 << 20,
        )  # fmt: skip
        server_config.certificate = x509.load_pem_x509_certificate(cert_pem)
        server_config.private_key = serialization.load_pem_private_key(key_pem, None)  # type: ignore[assignment]
        windows = {"stream_window": 4 << 20, "connection_window": 8 << 20}
        self.client = compat.AppPacedQuicConnection(configuration=client_config, **windows)
        self.client.connect(("127.0.0.1", 4433), now=self.now)
        self.server = compat.AppPacedQuicConnection(
            configuration=server_config,
            original_destination_connection_id=self.client.original_destination_connection_id,
            **windows,
        )
        self.server.native_bursts = self.client.native_bursts = bursts
        self.batches = batches
        """Deliver each transmit's datagrams as batches of up to 64 (receive_datagram_batch),
        a few swapped with their neighbour (reordering)."""
        self.dropped = 0
        self.counted = 0
        self.period = round(1 / loss) if loss else 0
        self.received: dict[int, bytearray] = {}
        self.ended: set[int] = set()

    def _deliver(self, source: compat.AppPacedQuicConnection,
                 target: compat.AppPacedQuicConnection, addr: tuple[str, int]) -> bool:  # fmt: skip
        sent = source.datagrams_to_send(now=self.now)
        kept = []
        for data, _ in sent:
            self.counted += 1
            # every (1/loss)-th datagram is lost: loss that handshake sizes cannot move
            if self.period and self.counted % self.period == 0:
                self.dropped += 1
            else:
                kept.append(data)
        if not self.batches:
            for data in kept:
                target.receive_datagram(data, addr, now=self.now)
            return bool(sent)
        for i in range(len(kept) - 1):
            if self.rng.random() < 0.05:
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
        for start in range(0, len(kept), 64):
            target.receive_datagram_batch(kept[start : start + 64], addr, self.now)
        return bool(sent)

    def run_until(self, done: Callable[[], bool], max_seconds: float = 300.0) -> None:
        deadline = self.now + max_seconds
        while not done():
            for quic in (self.client, self.server):
                while (event := quic.next_event()) is not None:
                    if isinstance(event, qe.StreamDataReceived) and quic is self.client:
                        self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
                        if event.end_stream:
                            self.ended.add(event.stream_id)
            if done():
                return
            moved = self._deliver(self.client, self.server, ("127.0.0.1", 40000))
            moved = self._deliver(self.server, self.client, ("127.0.0.1", 4433)) or moved
            if moved:
                continue
            timers = [t for t in (self.client.get_timer(), self.server.get_timer()) if t]
            assert timers and self.now < deadline, f"stalled at {self.now:.3f}"
            self.now = max(self.now, min(timers))
            for quic in (self.client, self.server):
                timer = quic.get_timer()
                if timer is not None and timer <= self.now:
                    quic.handle_timer(now=self.now)


@pytest.mark.parametrize(
    ("loss", "size", "bursts", "batches"),
    [
        (0.0, 1452, True, False),
        (0.03, 1452, True, False),
        (0.03, 16000, True, False),
        (0.03, 1452, False, False),
        (0.0, 1452, True, True),
        (0.03, 1452, True, True),
        (0.03, 16000, False, True),
    ],
)
def test_streams_arrive_whole_with_native_bursts(
    loss: float, size: int, bursts: bool, batches: bool
) -> None:
    """Three streams of handed-over buffers, one with a FIN alone after its data, under
    seeded loss (and, with batches, reordering and batch receive): every byte arrives
    once and in order, every buffer is released once, (bursts on) nearly every data packet
    was built natively and (batches) nearly every one was opened natively."""
    before = compat.native_packet_path()
    compat.use_native_packet_path(True)
    try:
        link = _Link(loss=loss, seed=7, size=size, bursts=bursts, batches=batches)
        link.run_until(lambda: link.client._handshake_confirmed)
        sent: dict[int, bytes] = {}
        released: list[int] = []
        streams = []
        for n in range(3):
            streams.append(link.client.get_next_available_stream_id())
            link.client.send_stream_data(streams[-1], b"get %d" % n, end_stream=True)
        link.run_until(lambda: all(s in link.server._streams for s in streams))
        for n, stream_id in enumerate(streams):
            body = os.urandom(300_000 + 77_777 * n)
            sent[stream_id] = body
            for piece in range(0, len(body), 65536):
                chunk = memoryview(body)[piece : piece + 65536]
                link.server.send_stream_view(
                    stream_id, chunk, lambda p=piece: released.append(p),
                    end_stream=n != 2 and piece + 65536 >= len(body),
                )  # fmt: skip
            if n == 2:
                link.server.send_stream_data(stream_id, b"", end_stream=True)
        link.run_until(lambda: link.ended >= set(sent))
        for stream_id, body in sent.items():
            assert bytes(link.received[stream_id]) == body
        link.run_until(lambda: link.server._loss._cc.bytes_in_flight == 0)
        assert len(released) == sum(-(-len(b) // 65536) for b in sent.values())
        native = link.server.native_packets_sent
        data_packets = sum(len(b) for b in sent.values()) // size
        if bursts:
            assert native >= data_packets * 0.9
        else:
            assert native == 0
        if loss:
            assert link.dropped > 0
        opened = link.client.native_packets_received
        if batches:
            assert opened >= data_packets * (1 - loss) * 0.8
        else:
            assert opened == 0
    finally:
        compat.use_native_packet_path(before)


def _frame_stream(stream_id: int, offset: int, data: bytes, fin: bool = False) -> bytes:
    buf = Buffer(capacity=64 + len(data))
    buf.push_uint_var(0x08 | 0x04 | 0x02 | (1 if fin else 0))
    buf.push_uint_var(stream_id)
    buf.push_uint_var(offset)
    buf.push_uint_var(len(data))
    buf.push_bytes(data)
    return buf.data


def test_open_stream_packets_joins_stream_data_and_hands_acks_over() -> None:
    aead = _native.AEAD(b"aes-128-gcm", bytes(range(16)), bytes(12))
    hp = _native.HeaderProtection(b"aes-128-ecb", bytes(range(16, 32)))
    dcid = bytes(range(8))

    def packet(number: int, payload: bytes, *, first: int = 0x41, cid: bytes = dcid) -> bytes:
        header = bytes([first]) + cid + (number & 0xFFFF).to_bytes(2, "big")
        return bytes(_native.seal(aead, hp, header, payload, number))

    ack = bytes([0x02, 5, 0, 1, 2, 0, 1])  # largest 5, delay 0, one more range
    datagrams = [
        packet(10, _frame_stream(0, 0, b"abc") + _frame_stream(4, 0, b"x")),
        packet(11, _frame_stream(0, 3, b"def", fin=True) + ack + bytes(20)),
        packet(12, _frame_stream(4, 5, b"gap")),  # not contiguous: its own segment
        packet(13, b"\x01\x00"),  # PING, PADDING
    ]
    numbers, first, eliciting, streams, acks = _native.open_stream_packets(
        aead, hp, datagrams, dcid, 10, 0
    )
    assert numbers == [10, 11, 12, 13] and first & 0x03 == 1 and eliciting
    assert streams == [(0, 0, b"abcdef", True), (4, 0, b"x", False), (4, 5, b"gap", False)]
    assert acks == [(2, ack[1:])]
    only_ack = _native.open_stream_packets(aead, hp, [packet(14, ack)], dcid, 14, 0)
    assert only_ack == ([14], 0x41, False, [], [(2, ack[1:])])
    # Anything else leaves the whole batch to aioquic.
    refused = {
        "MAX_DATA frame": packet(15, bytes([0x10, 0x44, 0x00])),
        "other connection ID": packet(15, b"\x01\x00", cid=bytes(8)),
        "other key phase": packet(15, b"\x01\x00", first=0x45),
        "truncated STREAM": packet(15, bytes([0x0A, 0, 9]) + b"short"),
        "unknown frame": packet(15, bytes([0x40, 0x99])),
    }
    for reason, bad in refused.items():
        batch = [*datagrams, bad]
        assert _native.open_stream_packets(aead, hp, batch, dcid, 10, 0) is None, reason
    tampered = bytearray(datagrams[1])
    tampered[-1] ^= 1
    for bad_datagram in (bytes(tampered), bytes([0xC0]) + datagrams[0][1:], datagrams[0][:20]):
        assert _native.open_stream_packets(aead, hp, [bad_datagram], dcid, 10, 0) is None
    assert _native.open_stream_packets(aead, hp, [], dcid, 10, 0) == ([], 0, False, [], [])
    # Many small frames of one stream join into one segment, up to the batch's table of
    # pieces (1,024 frames with data); past it the batch goes to aioquic.
    body = os.urandom(1200)

    def tiny_frames(number: int, first_offset: int) -> bytes:
        return packet(
            number,
            b"".join(
                _frame_stream(8, o, body[o : o + 1])
                for o in range(first_offset, first_offset + 400)
            ),
        )

    two = _native.open_stream_packets(
        aead, hp, [tiny_frames(20, 0), tiny_frames(21, 400)], dcid, 20, 0
    )
    assert two is not None and two[3] == [(8, 0, body[:800], False)]
    three = [tiny_frames(20, 0), tiny_frames(21, 400), tiny_frames(22, 800)]
    assert _native.open_stream_packets(aead, hp, three, dcid, 20, 0) is None
