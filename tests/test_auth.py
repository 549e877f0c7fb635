"""Bearer tokens (quicstore.auth)."""

from __future__ import annotations

import pytest

from quicstore.auth import Authorizer, mint_token, verify_token
from quicstore.proto.codes import ErrorCode
from quicstore.proto.errors import RequestError

SECRET = b"s" * 32
NOW = 1_800_000_000


def token(**kw: object) -> str:
    args: dict[str, object] = {
        "kid": "k1",
        "bucket": "data",
        "ops": ["read"],
        "now": NOW,
        "ttl": 60,
    }
    args.update(kw)
    return mint_token(SECRET, **args)  # type: ignore[arg-type]


def check(
    auth: Authorizer,
    tok: str | None,
    op: str = "GET",
    bucket: str = "data",
    key: str = "x",
    now: float = NOW,
) -> int | None:
    try:
        auth.check(tok, op, bucket, key, now)
    except RequestError as exc:
        return exc.code
    return None


AUTH = Authorizer(secrets={"k1": SECRET})


def test_valid_token_allows_its_scope_only() -> None:
    assert check(AUTH, token()) is None
    assert check(AUTH, token(), op="PUT") == ErrorCode.QS_FORBIDDEN
    assert check(AUTH, token(), bucket="other") == ErrorCode.QS_FORBIDDEN
    scoped = token(prefix="train/", ops=["read", "list"])
    assert check(AUTH, scoped, key="train/0001") is None
    assert check(AUTH, scoped, key="test/0001") == ErrorCode.QS_FORBIDDEN
    assert check(AUTH, scoped, op="LIST", key="train/") is None
    assert check(AUTH, scoped, op="LIST", key="") == ErrorCode.QS_FORBIDDEN
    assert check(AUTH, token(bucket="*"), bucket="anything") is None


def test_missing_malformed_expired_and_forged_tokens() -> None:
    assert check(AUTH, None) == ErrorCode.QS_UNAUTHENTICATED
    assert check(AUTH, "garbage") == ErrorCode.QS_UNAUTHENTICATED
    assert check(AUTH, "qs1.!!!.???") == ErrorCode.QS_UNAUTHENTICATED
    assert check(AUTH, token(), now=NOW + 61) == ErrorCode.QS_TOKEN_EXPIRED
    forged = mint_token(b"other secret", kid="k1", bucket="data", ops=["read"], now=NOW, ttl=60)
    assert check(AUTH, forged) == ErrorCode.QS_UNAUTHENTICATED
    assert check(AUTH, token(kid="k9")) == ErrorCode.QS_UNAUTHENTICATED
    good = token()
    tampered = good.replace("qs1.", "qs1.A", 1)
    assert check(AUTH, tampered) == ErrorCode.QS_UNAUTHENTICATED


def test_expired_token_with_bad_signature_is_unauthenticated_not_expired() -> None:
    forged = mint_token(b"nope", kid="k1", bucket="data", ops=["read"], now=NOW - 100, ttl=1)
    assert check(AUTH, forged) == ErrorCode.QS_UNAUTHENTICATED


def test_rotation_accepts_both_secrets() -> None:
    auth = Authorizer(secrets={"old": b"o" * 32, "new": b"n" * 32})
    for kid, secret in (("old", b"o" * 32), ("new", b"n" * 32)):
        tok = mint_token(secret, kid=kid, bucket="data", ops=["read"], now=NOW, ttl=60)
        assert check(auth, tok) is None


def test_public_buckets_and_open_access() -> None:
    auth = Authorizer(secrets={"k1": SECRET}, public={"pub": frozenset({"read"})})
    assert check(auth, None, bucket="pub") is None
    assert check(auth, None, bucket="pub", op="PUT") == ErrorCode.QS_UNAUTHENTICATED
    assert check(Authorizer(open_access=True), None, op="DELETE") is None


def test_error_reasons_never_echo_the_token() -> None:
    tok = token()
    with pytest.raises(RequestError) as exc:
        verify_token(tok, {"k1": SECRET}, NOW + 1000)
    assert tok not in str(exc.value) and tok.split(".")[2] not in str(exc.value)


def test_mint_validates_arguments() -> None:
    with pytest.raises(ValueError):
        token(ops=["fly"])
    with pytest.raises(ValueError):
        token(ttl=0)
