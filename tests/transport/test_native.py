"""quicstore._native (C packet protection) against RFC 9001's vectors and aioquic's Python
path: the same bytes on the wire, the same packet numbers, the same errors."""

from __future__ import annotations

import os

import aioquic.quic.crypto
import pytest
from aioquic._crypto import AEAD as StockAEAD
from aioquic._crypto import CryptoError
from aioquic._crypto import HeaderProtection as StockHeaderProtection
from aioquic.quic.crypto import CryptoPair, decode_packet_number
from aioquic.tls import CipherSuite
from hypothesis import given, settings
from hypothesis import strategies as st

from quicstore.transport import compat

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
