"""Request semantics (quicstore.proto.semantics)."""

from __future__ import annotations

import pytest

from quicstore.proto.codes import ErrorCode
from quicstore.proto.errors import RequestError
from quicstore.proto.messages import RequestHeader
from quicstore.proto.semantics import (
    ByteRange,
    check_conditions,
    etag_from_sha256,
    list_page_limit,
    resolve_range,
    validate_bucket,
    validate_key,
    validate_request,
)
from quicstore.proto.settings import Settings


def code_of(fn: object, *args: object) -> int | None:
    try:
        fn(*args)  # type: ignore[operator]
    except RequestError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "a/../b",
        "/abs",
        "a//b",
        "a/",
        "./a",
        "a\x00b",
        "a\\b",
        "a\x7fb",
        "x" * 256,
        "a/" + "y" * 256,
        "",
        "tab\there",
    ],
)
def test_hostile_keys_are_invalid(key: str) -> None:
    assert code_of(validate_key, key, 1024) == ErrorCode.QS_INVALID_KEY


@pytest.mark.parametrize("key", ["a", "a/b/c.bin", "%2F..%2F", "shard-00001.tar", "ü/名前", "a..b"])
def test_ordinary_keys_are_valid(key: str) -> None:
    assert code_of(validate_key, key, 1024) is None


def test_key_length_limit() -> None:
    assert code_of(validate_key, "a/" * 600, 1024) == ErrorCode.QS_KEY_TOO_LONG
    assert code_of(validate_key, "é" * 513, 1024) == ErrorCode.QS_KEY_TOO_LONG  # 1026 bytes


@pytest.mark.parametrize("bucket", ["", "Upper", "-x", "a" * 64, "a/b", "a b"])
def test_bad_buckets(bucket: str) -> None:
    assert code_of(validate_bucket, bucket) == ErrorCode.QS_INVALID_KEY


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"op": "FROB"}, ErrorCode.QS_BAD_REQUEST),
        ({"op": "GET", "key": None}, ErrorCode.QS_BAD_REQUEST),
        ({"suffix": 5, "offset": 1}, ErrorCode.QS_BAD_REQUEST),
        ({"length": 5}, ErrorCode.QS_BAD_REQUEST),
        ({"offset": 0, "length": 0}, ErrorCode.QS_BAD_REQUEST),
        ({"suffix": 0}, ErrorCode.QS_BAD_REQUEST),
        ({"if_match": 'bad"etag'}, ErrorCode.QS_BAD_REQUEST),
        ({"op": "PUT", "meta": {"k": "v" * 9000}}, ErrorCode.QS_METADATA_TOO_LARGE),
        ({"op": "LIST", "limit": 0}, ErrorCode.QS_BAD_REQUEST),
        ({"op": "DELETE", "if_none_match": "*"}, ErrorCode.QS_BAD_REQUEST),
        ({"token": "t" * 5000}, ErrorCode.QS_UNAUTHENTICATED),
        ({"bucket": "../x"}, ErrorCode.QS_INVALID_KEY),
    ],
)
def test_request_validation(fields: dict[str, object], code: int) -> None:
    base: dict[str, object] = {"op": "GET", "bucket": "b", "key": "k"}
    base.update(fields)
    header = RequestHeader(**base)  # type: ignore[arg-type]
    assert code_of(validate_request, header, Settings()) == code


def test_object_size_limit() -> None:
    header = RequestHeader(op="PUT", bucket="b", key="k", content_length=11)
    assert code_of(validate_request, header, Settings(max_object_size=10)) == (
        ErrorCode.QS_OBJECT_TOO_LARGE
    )
    assert code_of(validate_request, header, Settings()) is None


@pytest.mark.parametrize(
    ("fields", "size", "expected"),
    [
        ({}, 10, ByteRange(0, 10)),
        ({"offset": 3}, 10, ByteRange(3, 7)),
        ({"offset": 3, "length": 4}, 10, ByteRange(3, 4)),
        ({"offset": 8, "length": 100}, 10, ByteRange(8, 2)),
        ({"suffix": 4}, 10, ByteRange(6, 4)),
        ({"suffix": 40}, 10, ByteRange(0, 10)),
        ({"offset": 0}, 0, ByteRange(0, 0)),
        ({}, 0, ByteRange(0, 0)),
    ],
)
def test_ranges(fields: dict[str, int], size: int, expected: ByteRange) -> None:
    header = RequestHeader(op="GET", bucket="b", key="k", **fields)  # type: ignore[arg-type]
    assert resolve_range(header, size) == expected


@pytest.mark.parametrize(("offset", "size"), [(10, 10), (11, 10), (1, 0)])
def test_unsatisfiable_ranges(offset: int, size: int) -> None:
    header = RequestHeader(op="GET", bucket="b", key="k", offset=offset)
    assert code_of(resolve_range, header, size) == ErrorCode.QS_RANGE_NOT_SATISFIABLE


@pytest.mark.parametrize(
    ("op", "fields", "current", "code"),
    [
        ("GET", {}, None, ErrorCode.QS_NOT_FOUND),
        ("GET", {"if_match": "e1"}, None, ErrorCode.QS_PRECONDITION_FAILED),
        ("GET", {"if_match": "e1"}, "e2", ErrorCode.QS_PRECONDITION_FAILED),
        ("GET", {"if_match": "e1"}, "e1", None),
        ("GET", {"if_match": "*"}, "e1", None),
        ("GET", {"if_none_match": "e1"}, "e1", ErrorCode.QS_NOT_MODIFIED),
        ("HEAD", {"if_none_match": "*"}, "e1", ErrorCode.QS_NOT_MODIFIED),
        ("GET", {"if_none_match": "e1"}, "e2", None),
        ("PUT", {}, None, None),
        ("PUT", {"if_none_match": "*"}, "e1", ErrorCode.QS_PRECONDITION_FAILED),
        ("PUT", {"if_none_match": "*"}, None, None),
        ("PUT", {"if_match": "e1"}, None, ErrorCode.QS_PRECONDITION_FAILED),
        ("DELETE", {}, None, ErrorCode.QS_NOT_FOUND),
        ("DELETE", {"if_match": "e1"}, "e2", ErrorCode.QS_PRECONDITION_FAILED),
        ("GET", {"if_match": "e1", "if_none_match": "e1"}, "e1", ErrorCode.QS_NOT_MODIFIED),
    ],
)
def test_conditions(op: str, fields: dict[str, str], current: str | None, code: int | None) -> None:
    header = RequestHeader(op=op, bucket="b", key="k", **fields)  # type: ignore[arg-type]
    assert code_of(check_conditions, header, current) == code


def test_list_page_limit_and_etag() -> None:
    s = Settings(max_list_page=50)
    assert list_page_limit(RequestHeader(op="LIST", bucket="b"), s) == 50
    assert list_page_limit(RequestHeader(op="LIST", bucket="b", limit=7), s) == 7
    assert list_page_limit(RequestHeader(op="LIST", bucket="b", limit=70), s) == 50
    assert etag_from_sha256(bytes(range(32))) == bytes(range(16)).hex()
