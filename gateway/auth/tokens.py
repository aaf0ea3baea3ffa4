"""Verify a Clerk session JWT -> Claims, failing with Clerk's own reason codes."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.auth.claims import MalformedClaims, SessionClaims, normalise_session_claims
from gateway.auth.token_problems import (
    SessionPending,
    TokenExpired,
    TokenIatInTheFuture,
    TokenInvalid,
    TokenInvalidAlgorithm,
    TokenInvalidAudience,
    TokenInvalidAuthorizedParties,
    TokenInvalidIssuer,
    TokenInvalidSignature,
    TokenMissing,
    TokenNotActiveYet,
    TokenTypeMismatch,
)
from gateway.config import Config, frontend_api_host
from gateway.errors import Problem

# Clerk session tokens are about 1 KB; past 8 KB a token is abuse, and PyJWT's cost grows with size.
MAX_TOKEN_LENGTH = 8192


_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")


# Clerk ids (user_..., sess_...) are short printable ASCII; \Z, not $, which allows a final "\n".
_CLERK_ID_RE = re.compile(r"^[\x21-\x7e]{1,64}\Z")


# Any sane NumericDate (exp, iat, nbf) is well below the year 9999; 1e300 is not a date.
_MAX_NUMERIC_DATE = 253402300799


# RS256 is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 3.3); both objects are stateless.
_PKCS1V15 = PKCS1v15()


_SHA256 = SHA256()


class KeySource(Protocol):
    """Where verification keys come from: a PEM key, a JWKS cache, the dev-mode key."""

    def get_key(self, kid: str | None) -> Any: ...


@dataclass(frozen=True)
class VerifierSettings:
    # None only when no issuer can be known (PEM key or Backend API JWKS alone): the key itself
    # then pins the Clerk instance, and `iss` must still be present.
    issuer: str | None
    authorized_parties: tuple[str, ...] = ()
    leeway_seconds: int = 5
    audiences: tuple[str, ...] = ()  # CLERK_AUDIENCE; empty: aud not checked

    @classmethod
    def from_config(cls, config: Config, dev_issuer: str | None = None) -> VerifierSettings:
        return cls(
            issuer=expected_issuer(config, dev_issuer),
            authorized_parties=config.clerk_authorized_parties,
            leeway_seconds=config.clerk_clock_skew_seconds,
            audiences=config.clerk_audience,
        )


def expected_issuer(config: Config, dev_issuer: str | None = None) -> str | None:
    if config.clerk_issuer:
        return config.clerk_issuer.rstrip("/")
    if config.clerk_publishable_key:
        return f"https://{frontend_api_host(config.clerk_publishable_key)}"
    if config.clerk_jwks_url:
        # Clerk's Frontend API publishes at <issuer>/.well-known/jwks.json.
        parts = urlsplit(config.clerk_jwks_url)
        if parts.path.rstrip("/") == "/.well-known/jwks.json":
            return f"{parts.scheme}://{parts.netloc}"
    return dev_issuer


@dataclass(frozen=True)
class Claims:
    """The verified payload; `data` is the whole claim set as Clerk sent it, `session` the same
    normalised for token versions 1 and 2 (built once, then cached with the token)."""

    data: dict[str, Any]
    session: SessionClaims = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Raises MalformedClaims (a ValueError): verify_session_token reads it as token_invalid.
        object.__setattr__(self, "session", normalise_session_claims(self.data))

    @property
    def sub(self) -> str:
        return str(self.data["sub"])

    @property
    def session_id(self) -> str | None:
        sid = self.data.get("sid")
        return sid if isinstance(sid, str) else None

    @property
    def exp(self) -> float:
        return float(self.data["exp"])

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)


def verify_session_token(
    token: Any,
    settings: VerifierSettings,
    key_source: KeySource,
    now: Callable[[], float] = time.time,
) -> Claims:
    """Verify shape, signature (RS256 only), then claims. Raises a Problem, never anything else."""
    try:
        return _verify(token, settings, key_source, now)
    except Problem:
        raise
    except Exception:  # noqa: BLE001 - any parser or crypto surprise is a bad token, never a 500
        raise TokenInvalid() from None


def _verify(
    token: Any, settings: VerifierSettings, key_source: KeySource, now: Callable[[], float]
) -> Claims:
    if not isinstance(token, str):
        raise TokenInvalid()
    if not token:
        raise TokenMissing()
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid(f"The session token is longer than {MAX_TOKEN_LENGTH} characters.")
    segments = token.split(".")
    if len(segments) != 3 or not all(_SEGMENT_RE.match(s) for s in segments[:2]):
        raise TokenInvalid("The session token is not a JWT (three base64url segments).")
    if segments[2] and not _SEGMENT_RE.match(segments[2]):
        raise TokenInvalid("The session token is not a JWT (three base64url segments).")

    header = _json_segment(segments[0], "header")
    payload = _json_segment(segments[1], "payload")
    if header.get("alg") != "RS256":
        raise TokenInvalidAlgorithm()
    if not segments[2]:
        raise TokenInvalidSignature("The session token carries no signature.")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenInvalid("The session token's kid header is not a string.")
    # No JWS extension is understood here, so a token that declares one critical, or asks for an
    # unencoded payload (b64, RFC 7797), is refused (RFC 7515 4.1.11), as PyJWT refuses them.
    if "crit" in header or header.get("b64", True) is not True:
        raise TokenInvalid("The session token uses a JWS extension this gateway does not support.")
    # jku, x5u, jwk and x5c are ignored: keys come only from our configured source.
    key = key_source.get_key(kid)
    _verify_rs256(token, segments[2], key)

    _check_claims(payload, settings, now())
    check_session_kind(header, payload, settings)
    try:
        return Claims(payload)
    except MalformedClaims:
        raise TokenInvalid("The session token's organization claims are malformed.") from None


def _verify_rs256(token: str, signature_segment: str, key: Any) -> None:
    """The RS256 signature over header.payload, with `cryptography` and the cached key object.

    What PyJWT's PyJWS.decode_complete does for RS256, without its general machinery around the
    verification itself (about twice the cost of the RSA operation on a cold token).
    """
    if not isinstance(key, RSAPublicKey):
        raise TokenInvalid("The signing key is not an RSA public key.")
    try:
        signature = base64.urlsafe_b64decode(
            signature_segment + "=" * (-len(signature_segment) % 4)
        )
    except (binascii.Error, ValueError):
        raise TokenInvalid("The session token's signature is not base64url.") from None
    signing_input = token[: len(token) - len(signature_segment) - 1].encode("ascii")
    try:
        key.verify(signature, signing_input, _PKCS1V15, _SHA256)
    except InvalidSignature:
        raise TokenInvalidSignature() from None


# RFC 9068 access tokens say so in `typ` (Clerk's OAuth tokens: "at+jwt"); Clerk M2M tokens are
# issued to machines, whose ids start mch_. Both are signed with the instance's session key.
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


_MACHINE_SUBJECT_PREFIX = "mch_"


def check_session_kind(
    header: dict[str, Any], payload: dict[str, Any], settings: VerifierSettings
) -> None:
    """Only a user's session token is a session (CONTRACT 4.1), and for this API when aud is set.

    Runs after the signature and the time claims: a token of another kind from this very instance
    verifies until here, and must still not pass as a user's session.
    """
    typ = header.get("typ")
    if isinstance(typ, str) and typ.lower() in _ACCESS_TOKEN_TYPES:
        raise TokenTypeMismatch()
    if str(payload.get("sub", "")).startswith(_MACHINE_SUBJECT_PREFIX):
        raise TokenTypeMismatch()
    sid = payload.get("sid")
    if not isinstance(sid, str) or not _CLERK_ID_RE.match(sid):
        raise TokenInvalid("The session token has no session id (sid).")
    if settings.audiences:
        aud = payload.get("aud")
        given = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in settings.audiences for a in given):
            raise TokenInvalidAudience()


def _check_claims(payload: dict[str, Any], settings: VerifierSettings, now: float) -> None:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenInvalid("The session token has no subject (sub).")
    if not _CLERK_ID_RE.match(sub):
        # sub is stored (users, guard_requests) and forwarded in headers: a Clerk id, no more.
        raise TokenInvalid("The session token's subject (sub) is not a Clerk user id.")
    exp = _numeric_date(payload, "exp", required=True)
    iat = _numeric_date(payload, "iat", required=True)
    nbf = _numeric_date(payload, "nbf", required=False)
    leeway = settings.leeway_seconds
    if exp is not None and exp <= now - leeway:
        raise TokenExpired()
    if nbf is not None and nbf > now + leeway:
        raise TokenNotActiveYet()
    if iat is not None and iat > now + leeway:
        raise TokenIatInTheFuture()
    iss = payload.get("iss")
    if not isinstance(iss, str) or (settings.issuer is not None and iss != settings.issuer):
        raise TokenInvalidIssuer()
    # Clerk omits azp on some cookie-borne tokens, so only a present azp is checked.
    azp_listed = payload.get("azp") in settings.authorized_parties
    if "azp" in payload and settings.authorized_parties and not azp_listed:
        raise TokenInvalidAuthorizedParties()
    if payload.get("sts") == "pending":
        raise SessionPending()


def _numeric_date(payload: dict[str, Any], name: str, *, required: bool) -> float | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise TokenInvalid(f"The session token has no {name} claim.")
        return None
    # bool is an int in Python; "123" is what PyJWT lets through.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenInvalid(f"The session token's {name} claim is not a number.")
    if not math.isfinite(value) or not 0 <= value <= _MAX_NUMERIC_DATE:
        raise TokenInvalid(f"The session token's {name} claim is not a plausible date.")
    return float(value)


def _json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise TokenInvalid(f"The session token's {what} is not base64url JSON.") from None
    if not isinstance(value, dict):
        raise TokenInvalid(f"The session token's {what} is not a JSON object.")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate keys; another parser may keep the first. Refuse both.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
