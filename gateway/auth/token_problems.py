"""Why a session token was refused: a stable code each (and the JWKS and CSRF problems)."""

from __future__ import annotations

from typing import ClassVar

from gateway.errors import Problem


class TokenProblem(Problem):
    """A 401 with the RFC 6750 challenge; `error="invalid_token"` because a token was given."""

    status: ClassVar[int] = 401
    challenge: ClassVar[str] = 'Bearer error="invalid_token"'

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": self.challenge})


class TokenMissing(TokenProblem):
    code, title = "token_missing", "Session token missing"
    default_detail = (
        "Send the Clerk session token as 'Authorization: Bearer <token>' "
        "or in the __session cookie."
    )
    challenge = "Bearer"


class TokenInvalid(TokenProblem):
    code, title = "token_invalid", "Session token invalid"
    default_detail = "The session token is not a valid Clerk session JWT; sign in again."


class TokenInvalidAlgorithm(TokenProblem):
    code, title = "token_invalid_algorithm", "Session token algorithm not accepted"
    default_detail = "Only RS256 session tokens are accepted; use a token issued by Clerk."


class TokenInvalidSignature(TokenProblem):
    code, title = "token_invalid_signature", "Session token signature invalid"
    default_detail = "The session token's signature does not verify; sign in again."


class TokenExpired(TokenProblem):
    code, title = "token_expired", "Session token expired"
    default_detail = "The session token has expired; get a fresh one from Clerk (getToken())."


class TokenNotActiveYet(TokenProblem):
    code, title = "token_not_active_yet", "Session token not active yet"
    default_detail = "The session token is not valid yet (nbf); check the client and server clocks."


class TokenIatInTheFuture(TokenProblem):
    code, title = "token_iat_in_the_future", "Session token issued in the future"
    default_detail = "The session token was issued in the future (iat); check the server clock."


class TokenInvalidIssuer(TokenProblem):
    code, title = "token_invalid_issuer", "Session token issuer not accepted"
    default_detail = "The session token was issued by another Clerk instance; sign in here."


class TokenInvalidAuthorizedParties(TokenProblem):
    code, title = "token_invalid_authorized_parties", "Session token origin not authorized"
    default_detail = "The session token was issued to an origin this gateway does not accept (azp)."


class SessionPending(TokenProblem):
    code, title = "session_pending", "Session pending"
    default_detail = "The session is pending (sts); finish signing in, then retry."


class TokenTypeMismatch(TokenProblem):
    code, title = "token_type_mismatch", "Not a session token"
    default_detail = (
        "This is a Clerk OAuth access token or machine token; send the user's session token "
        "(getToken())."
    )


class TokenInvalidAudience(TokenProblem):
    code, title = "token_invalid_audience", "Session token audience not accepted"
    default_detail = "The session token was not issued for this API (aud); check CLERK_AUDIENCE."


class JwkKidMismatch(TokenProblem):
    code, title = "jwk_kid_mismatch", "Session token key unknown"
    default_detail = (
        "The session token was signed with a key this instance does not publish; sign in again."
    )


class JwkRemoteFailedToLoad(Problem):
    status, code, title = 503, "jwk_remote_failed_to_load", "Signing keys unavailable"
    default_detail = (
        "Clerk's signing keys could not be loaded; retry shortly (your token is not at fault)."
    )

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


class CsrfOrigin(Problem):
    status, code, title = 403, "csrf_origin", "Cross-site request refused"
    default_detail = (
        "A cookie session on a state-changing request needs an Origin listed in "
        "CLERK_AUTHORIZED_PARTIES; API clients should send 'Authorization: Bearer <token>'."
    )
