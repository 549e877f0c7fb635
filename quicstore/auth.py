"""Bearer tokens of the reference gateway (spec Section 11 and Appendix B).

``qs1.<base64url(msgpack claims)>.<base64url(HMAC-SHA256)>``, signed with one of several
named secrets (so keys can be rotated), checked in constant time. Pure code: the current
time is passed in, in seconds since the Unix epoch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from .proto.codes import ErrorCode
from .proto.errors import RequestError
from .proto.messages import OP_DELETE, OP_GET, OP_HEAD, OP_LIST, OP_PUT

TOKEN_PREFIX = "qs1."
PERMISSIONS = ("read", "write", "list", "delete")
"""Operations a token can allow; ``read`` covers GET and HEAD."""
PERMISSION_OF_OP = {
    OP_GET: "read",
    OP_HEAD: "read",
    OP_PUT: "write",
    OP_LIST: "list",
    OP_DELETE: "delete",
}
"""The permission each protocol operation needs."""
ANY_BUCKET = "*"
"""A token bucket scope that matches every bucket."""


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What a token grants (Appendix B). Times in seconds since the Unix epoch."""

    kid: str
    """Identifier of the secret that signed the token."""
    bucket: str
    """Bucket the token is for, or ``*`` for all."""
    ops: list[str]
    """Permissions: a subset of read, write, list, delete."""
    exp: int
    """Expiry time."""
    iat: int = 0
    """Issue time."""
    prefix: str = ""
    """Key prefix the token is limited to."""


_CLAIMS_DECODER = msgspec.msgpack.Decoder(TokenClaims)
_ENCODER = msgspec.msgpack.Encoder()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, signed_part: str) -> bytes:
    return hmac.new(secret, signed_part.encode("ascii"), hashlib.sha256).digest()


def mint_token(
    secret: bytes,
    *,
    kid: str,
    bucket: str,
    ops: Iterable[str],
    now: int,
    ttl: int,
    prefix: str = "",
) -> str:
    """A signed token for ``ops`` on ``bucket``/``prefix``, valid for ``ttl`` seconds."""
    ops = sorted(set(ops))
    unknown = set(ops) - set(PERMISSIONS)
    if unknown:
        raise ValueError(f"unknown permissions: {', '.join(sorted(unknown))}")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    claims = TokenClaims(kid=kid, bucket=bucket, ops=ops, exp=now + ttl, iat=now, prefix=prefix)
    signed_part = TOKEN_PREFIX + _b64encode(_ENCODER.encode(claims))
    return f"{signed_part}.{_b64encode(_sign(secret, signed_part))}"


def verify_token(token: str, secrets: Mapping[str, bytes], now: float) -> TokenClaims:
    """The claims of a genuine, unexpired token.

    Raises QS_UNAUTHENTICATED (malformed, unknown key, bad signature) or QS_TOKEN_EXPIRED.
    Reasons name the class of failure only, never the token.
    """
    malformed = RequestError(ErrorCode.QS_UNAUTHENTICATED, "malformed token")
    if not token.startswith(TOKEN_PREFIX) or token.count(".") != 2:
        raise malformed
    signed_part, _, signature_text = token.rpartition(".")
    try:
        payload = _b64decode(signed_part[len(TOKEN_PREFIX) :])
        signature = _b64decode(signature_text)
        claims = _CLAIMS_DECODER.decode(payload)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise malformed from None
    secret = secrets.get(claims.kid)
    if secret is None:
        raise RequestError(ErrorCode.QS_UNAUTHENTICATED, "token signed with an unknown key")
    if not hmac.compare_digest(_sign(secret, signed_part), signature):
        raise RequestError(ErrorCode.QS_UNAUTHENTICATED, "bad token signature")
    if claims.exp <= now:
        raise RequestError(ErrorCode.QS_TOKEN_EXPIRED, "token expired")
    return claims


def claims_allow(claims: TokenClaims, op: str, bucket: str, key_or_prefix: str) -> bool:
    """Whether ``claims`` allow ``op`` on ``bucket`` for a key (or, for LIST, a prefix)."""
    if claims.bucket not in (ANY_BUCKET, bucket):
        return False
    if PERMISSION_OF_OP.get(op) not in claims.ops:
        return False
    return key_or_prefix.startswith(claims.prefix)


@dataclass(frozen=True)
class Authorizer:
    """The gateway's access policy: which secrets sign tokens, and what needs none.

    With no secrets and ``open_access`` set, every request is allowed (a development
    gateway); otherwise each request needs a token, except the permissions that
    ``public`` grants per bucket.
    """

    secrets: Mapping[str, bytes] = field(default_factory=dict)
    """Accepted signing secrets by key ID; two during a rotation."""
    public: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Permissions (e.g. read, list) granted without a token, per bucket."""
    open_access: bool = False
    """Allow everything without a token (only for local development)."""

    def check(
        self, token: str | None, op: str, bucket: str, key_or_prefix: str, now: float
    ) -> None:
        """Allow the request or raise QS_UNAUTHENTICATED, QS_TOKEN_EXPIRED or QS_FORBIDDEN."""
        if self.open_access:
            return
        if token is None:
            if PERMISSION_OF_OP.get(op) in self.public.get(bucket, frozenset()):
                return
            raise RequestError(ErrorCode.QS_UNAUTHENTICATED, "token required")
        claims = verify_token(token, self.secrets, now)
        if not claims_allow(claims, op, bucket, key_or_prefix):
            raise RequestError(ErrorCode.QS_FORBIDDEN, f"token does not allow {op} here")
