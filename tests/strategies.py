"""Hypothesis strategies for quicstore frames and messages, shared by the tests."""

from __future__ import annotations

from hypothesis import strategies as st

from quicstore.proto.codes import ErrorCode, FrameType
from quicstore.proto.frames import (
    ChecksumsFrame,
    DataFrame,
    ErrorFrame,
    Frame,
    GoawayFrame,
    ListingFrame,
    RequestFrame,
    ResponseFrame,
    SettingsFrame,
    TrailerFrame,
)
from quicstore.proto.messages import (
    OPERATIONS,
    ListEntry,
    Listing,
    RequestHeader,
    ResponseHeader,
    Trailer,
)
from quicstore.proto.varint import VARINT_MAX

uint64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
varints = st.integers(min_value=0, max_value=VARINT_MAX)
small_text = st.text(max_size=40)
maybe = st.none().__or__
digests = st.binary(min_size=32, max_size=32)
meta_maps = st.dictionaries(small_text, small_text, max_size=4)

request_headers = st.builds(
    RequestHeader,
    op=st.sampled_from(sorted(OPERATIONS)) | small_text,
    bucket=small_text,
    key=maybe(small_text),
    token=maybe(small_text),
    offset=maybe(uint64),
    length=maybe(uint64),
    suffix=maybe(uint64),
    if_match=maybe(small_text),
    if_none_match=maybe(small_text),
    checksums=maybe(st.booleans()),
    content_length=maybe(uint64),
    content_type=maybe(small_text),
    meta=maybe(meta_maps),
    sha256=maybe(digests),
    prefix=maybe(small_text),
    delimiter=maybe(small_text),
    continuation=maybe(small_text),
    limit=maybe(uint64),
)

response_headers = st.builds(
    ResponseHeader,
    size=maybe(uint64),
    etag=maybe(small_text),
    mtime_ns=maybe(uint64),
    block_size=maybe(uint64),
    sha256=maybe(digests),
    content_type=maybe(small_text),
    meta=maybe(meta_maps),
    offset=maybe(uint64),
    length=maybe(uint64),
)

list_entries = st.builds(ListEntry, key=small_text, size=uint64, etag=small_text, mtime_ns=uint64)
listings = st.builds(
    Listing,
    entries=st.lists(list_entries, max_size=5),
    prefixes=st.lists(small_text, max_size=3),
    next=maybe(small_text),
)

data_frames = st.binary(max_size=3000).map(DataFrame)
error_frames = st.builds(
    ErrorFrame, code=st.sampled_from(list(ErrorCode)) | varints, reason=small_text
)
checksums_frames = st.builds(
    ChecksumsFrame,
    first_block=varints,
    checksums=st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=50).map(tuple),
)
settings_frames = st.dictionaries(varints, varints, max_size=10).map(
    lambda d: SettingsFrame(tuple(d.items()))
)
goaway_frames = st.integers(0, VARINT_MAX // 4).map(lambda n: GoawayFrame(n * 4))

frames: st.SearchStrategy[Frame] = st.one_of(
    data_frames,
    request_headers.map(RequestFrame),
    response_headers.map(ResponseFrame),
    error_frames,
    checksums_frames,
    st.builds(Trailer, sha256=maybe(digests)).map(TrailerFrame),
    listings.map(ListingFrame),
    settings_frames,
    goaway_frames,
)

KNOWN_TYPES = [int(t) for t in FrameType]
