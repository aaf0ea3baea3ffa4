"""The acceptance table of issue 3: every token goes through the before_request hook -> one code."""

# The table below reads best as one row per case; its long rows are the only E501s here.
# ruff: noqa: E501

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from pytest_httpserver import HTTPServer

from gateway.auth.jwks import StaticKey
from gateway.auth.token_problems import TokenInvalid
from gateway.auth.tokens import MAX_TOKEN_LENGTH, Claims, VerifierSettings, verify_session_token
from gateway.auth.verifier import SessionVerifier, VerifiedTokenCache
from gateway.errors import PROBLEM_CONTENT_TYPE
from tests.support.clerk import (
    ISSUER,
    ClerkKeys,
    encode_segment,
    mint_token,
    session_claims,
    sign_raw,
)

ATTACKER_PATH = "/attacker/jwks.json"


def _hs256_with_public_key(keys: ClerkKeys, host: str) -> str:
    # PyJWT refuses to HMAC with a PEM key, so sign by hand: the classic RS/HS confusion attack.
    header = encode_segment({"alg": "HS256", "typ": "JWT", "kid": keys.primary.kid})
    payload = encode_segment(session_claims())
    mac = hmac.new(
        keys.primary.public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256
    ).digest()
    return f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _tampered(keys: ClerkKeys, host: str) -> str:
    header, _, signature = mint_token(keys.primary).split(".")
    return f"{header}.{encode_segment(session_claims(user_id='user_admin'))}.{signature}"


def _stripped(keys: ClerkKeys, host: str) -> str:
    header, payload, _ = mint_token(keys.primary).split(".")
    return f"{header}.{payload}."


def _attacker_header(name: str) -> Callable[[ClerkKeys, str], str]:
    def make(keys: ClerkKeys, host: str) -> str:
        value: Any = {
            "jwk": keys.attacker.public_jwk,
            "x5c": [base64.b64encode(keys.attacker.public_pem.encode()).decode()],
        }.get(name, host + ATTACKER_PATH)
        return mint_token(keys.attacker, headers={name: value})

    return make


def _raw(header: Any, payload: Any) -> Callable[[ClerkKeys, str], str]:
    return lambda keys, host: sign_raw(keys.primary, header, payload)


def _claims_text(**replace: str) -> bytes:
    """Claims as JSON text with some values replaced verbatim (duplicates, strings, 1e300)."""
    text = json.dumps(session_claims())
    for name, raw in replace.items():
        text = text.replace("}", f', "{name}": {raw}}}')
    return text.encode()


NOW = int(time.time())
RS_HEADER = {"alg": "RS256", "typ": "JWT", "kid": "key-a"}

# (case, token factory, expected status, expected code); "ok" means the request is let through.
CASES: list[tuple[str, Callable[[ClerkKeys, str], str], int, str]] = [
    ("valid", lambda k, h: mint_token(k.primary), 200, "ok"),
    ("expired", lambda k, h: mint_token(k.primary, exp=int(time.time()) - 60), 401, "token_expired"),
    ("expired_within_skew", lambda k, h: mint_token(k.primary, exp=int(time.time()) - 2), 200, "ok"),
    ("nbf_future", lambda k, h: mint_token(k.primary, nbf=int(time.time()) + 60), 401, "token_not_active_yet"),
    ("iat_future_beyond_skew", lambda k, h: mint_token(k.primary, iat=int(time.time()) + 60), 401, "token_iat_in_the_future"),
    ("iat_future_within_skew", lambda k, h: mint_token(k.primary, iat=int(time.time()) + 2), 200, "ok"),
    ("wrong_iss", lambda k, h: mint_token(k.primary, iss="https://evil.clerk.accounts.dev"), 401, "token_invalid_issuer"),
    ("missing_iss", lambda k, h: mint_token(k.primary, iss=None), 401, "token_invalid_issuer"),
    ("azp_listed", lambda k, h: mint_token(k.primary, azp="https://app.example.com"), 200, "ok"),
    ("azp_unlisted", lambda k, h: mint_token(k.primary, azp="https://evil.example.com"), 401, "token_invalid_authorized_parties"),
    ("azp_absent", lambda k, h: mint_token(k.primary, azp=None), 200, "ok"),
    ("sts_pending", lambda k, h: mint_token(k.primary, sts="pending"), 401, "session_pending"),
    ("sts_active", lambda k, h: mint_token(k.primary, sts="active"), 200, "ok"),
    ("alg_none", lambda k, h: jwt.encode(session_claims(), None, algorithm="none", headers={"kid": "key-a"}), 401, "token_invalid_algorithm"),
    ("hs256_public_key_as_secret", _hs256_with_public_key, 401, "token_invalid_algorithm"),
    ("rs512", lambda k, h: mint_token(k.primary, algorithm="RS512"), 401, "token_invalid_algorithm"),
    ("ps256", lambda k, h: mint_token(k.primary, algorithm="PS256"), 401, "token_invalid_algorithm"),
    ("es256", lambda k, h: jwt.encode(session_claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "key-a"}), 401, "token_invalid_algorithm"),
    ("jku_attacker", _attacker_header("jku"), 401, "token_invalid_signature"),
    ("x5u_attacker", _attacker_header("x5u"), 401, "token_invalid_signature"),
    ("jwk_attacker", _attacker_header("jwk"), 401, "token_invalid_signature"),
    ("x5c_attacker", _attacker_header("x5c"), 401, "token_invalid_signature"),
    ("unknown_kid", lambda k, h: mint_token(k.secondary), 401, "jwk_kid_mismatch"),
    ("missing_kid", lambda k, h: mint_token(k.primary, kid=None), 401, "token_invalid"),
    ("tampered_payload", _tampered, 401, "token_invalid_signature"),
    ("stripped_signature", _stripped, 401, "token_invalid_signature"),
    ("not_a_jwt", lambda k, h: "not-a-jwt", 401, "token_invalid"),
    ("four_segments", lambda k, h: mint_token(k.primary) + ".abc", 401, "token_invalid"),
    ("non_json_header", lambda k, h: "bm90IGpzb24." + mint_token(k.primary).split(".", 1)[1], 401, "token_invalid"),
    ("non_json_payload", _raw(RS_HEADER, b"not json"), 401, "token_invalid"),
    ("payload_not_object", _raw(RS_HEADER, b"[1, 2]"), 401, "token_invalid"),
    ("nested_payload", _raw(RS_HEADER, b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}"), 401, "token_invalid"),
    ("token_20kb", lambda k, h: mint_token(k.primary, pad="x" * 20_000), 401, "token_invalid"),
    ("missing_sub", lambda k, h: mint_token(k.primary, sub=None), 401, "token_invalid"),
    ("empty_sub", lambda k, h: mint_token(k.primary, sub=""), 401, "token_invalid"),
    ("missing_exp", lambda k, h: mint_token(k.primary, exp=None), 401, "token_invalid"),
    ("missing_iat", lambda k, h: mint_token(k.primary, iat=None), 401, "token_invalid"),
    ("duplicate_payload_key", _raw(RS_HEADER, _claims_text(sub='"user_admin"')), 401, "token_invalid"),
    ("duplicate_header_key", _raw(b'{"alg": "RS256", "kid": "key-a", "alg": "RS256"}', session_claims()), 401, "token_invalid"),
    ("string_exp", _raw(RS_HEADER, session_claims(exp=str(NOW + 60))), 401, "token_invalid"),
    ("bool_exp", _raw(RS_HEADER, session_claims(exp=True)), 401, "token_invalid"),
    ("huge_exp", _raw(RS_HEADER, json.dumps(session_claims(exp=0)).replace('"exp": 0', '"exp": 1e300').encode()), 401, "token_invalid"),
    ("nan_exp", _raw(RS_HEADER, json.dumps(session_claims(exp=0)).replace('"exp": 0', '"exp": NaN').encode()), 401, "token_invalid"),
    ("string_nbf", _raw(RS_HEADER, session_claims(nbf="0")), 401, "token_invalid"),
    ("crit_extension", _raw(RS_HEADER | {"crit": ["exp"], "exp": 1}, session_claims()), 401, "token_invalid"),
    ("crit_b64", _raw(RS_HEADER | {"crit": ["b64"], "b64": True}, session_claims()), 401, "token_invalid"),
    ("unencoded_payload_b64_false", _raw(RS_HEADER | {"crit": ["b64"], "b64": False}, session_claims()), 401, "token_invalid"),
    ("signature_bad_base64url_length", lambda k, h: mint_token(k.primary) + "AAA", 401, "token_invalid"),
    ("signature_one_bit_flipped", lambda k, h: _flip_last_signature_byte(mint_token(k.primary)), 401, "token_invalid_signature"),
    # Only session tokens are sessions (CONTRACT 4.1): same instance key, other kinds of token.
    ("missing_sid", lambda k, h: mint_token(k.primary, sid=None), 401, "token_invalid"),
    ("non_string_sid", lambda k, h: mint_token(k.primary, sid=12), 401, "token_invalid"),
    ("oauth_access_token", lambda k, h: mint_token(k.primary, headers={"typ": "at+jwt"}), 401, "token_type_mismatch"),
    ("oauth_access_token_media_type", lambda k, h: mint_token(k.primary, headers={"typ": "application/at+jwt"}), 401, "token_type_mismatch"),
    ("oauth_access_token_no_sid", lambda k, h: mint_token(k.primary, headers={"typ": "at+jwt"}, sid=None), 401, "token_type_mismatch"),
    ("machine_token", lambda k, h: mint_token(k.primary, user_id="mch_2abc", sid=None), 401, "token_type_mismatch"),
    ("machine_token_with_sid", lambda k, h: mint_token(k.primary, user_id="mch_2abc"), 401, "token_type_mismatch"),
    ("aud_ignored_without_clerk_audience", lambda k, h: mint_token(k.primary, aud="https://other.example"), 200, "ok"),
]  # fmt: skip


def _flip_last_signature_byte(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[-1] ^= 1
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


@pytest.fixture
def protected_app(clerk_app: Flask) -> Flask:
    @clerk_app.route("/test/whoami", methods=["GET", "POST"])
    def whoami() -> Any:
        from flask import g, jsonify

        return jsonify(user_id=g.clerk_user_id, claims=g.clerk_claims, token=g.clerk_token)

    return clerk_app


@pytest.mark.parametrize(
    ("make_token", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hook_token_table_gives_contract_code(
    protected_app: Flask, clerk_keys: ClerkKeys, httpserver: HTTPServer, make_token, status, code
):
    token = make_token(clerk_keys, httpserver.url_for("").rstrip("/"))
    response = protected_app.test_client().get(
        "/test/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == status, response.get_data(as_text=True)
    if status == 200:
        body = response.get_json()
        assert body["user_id"] == body["claims"]["sub"] and body["token"] == token
        return
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    body = response.get_json(force=True)
    assert body["code"] == code
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    text = response.get_data(as_text=True)
    for segment in token.split("."):
        if len(segment) > 8:
            assert segment not in text
    # Header fields that point elsewhere are never followed.
    assert not [r for r, _ in httpserver.log if r.path == ATTACKER_PATH]


def test_hook_no_token_is_token_missing_with_bare_challenge(protected_app):
    response = protected_app.test_client().get("/test/whoami")
    assert response.status_code == 401
    assert response.get_json(force=True)["code"] == "token_missing"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_hook_iat_future_detail_says_check_clock(protected_app, clerk_keys):
    token = mint_token(clerk_keys.primary, iat=int(time.time()) + 600)
    response = protected_app.test_client().get(
        "/test/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    assert "check the server clock" in response.get_json(force=True)["detail"]


def _settings(**overrides: Any) -> VerifierSettings:
    return VerifierSettings(
        **({"issuer": ISSUER, "authorized_parties": (), "leeway_seconds": 5} | overrides)
    )


def test_verify_session_token_any_exception_becomes_token_invalid(clerk_keys):
    class ExplodingKeys:
        def get_key(self, kid):
            raise RecursionError("deep")

    with pytest.raises(TokenInvalid):
        verify_session_token(mint_token(clerk_keys.primary), _settings(), ExplodingKeys())
    with pytest.raises(TokenInvalid):
        verify_session_token(b"bytes.are.wrong", _settings(), StaticKey(None))  # type: ignore[arg-type]


def test_verify_session_token_key_that_is_not_rsa_public_is_token_invalid(clerk_keys):
    # A JWKS or PEM source never hands out anything else; if one did, no signature check passes.
    token = mint_token(clerk_keys.primary)
    for key in (ec.generate_private_key(ec.SECP256R1()).public_key(), clerk_keys.primary.private):
        with pytest.raises(TokenInvalid):
            verify_session_token(token, _settings(), StaticKey(key))


def test_verify_session_token_length_cap_is_checked_before_parsing(clerk_keys):
    class MustNotBeCalled:
        def get_key(self, kid):
            raise AssertionError("key looked up for an oversized token")

    token = mint_token(clerk_keys.primary, pad="x" * MAX_TOKEN_LENGTH)
    with pytest.raises(TokenInvalid):
        verify_session_token(token, _settings(), MustNotBeCalled())


def test_verify_session_token_without_pinned_issuer_still_requires_iss(clerk_keys):
    key = StaticKey(clerk_keys.primary.private.public_key())
    claims = verify_session_token(
        mint_token(clerk_keys.primary, iss="https://x.example"), _settings(issuer=None), key
    )
    assert claims.sub == "user_123"
    with pytest.raises(Exception) as raised:
        verify_session_token(mint_token(clerk_keys.primary, iss=None), _settings(issuer=None), key)
    assert raised.value.code == "token_invalid_issuer"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_verified_token_cache_entry_never_outlives_exp():
    clock = FakeClock(1000.0)
    cache = VerifiedTokenCache(clock=clock)
    claims = Claims({"sub": "user_1", "exp": 1060})
    cache.put("token-1", claims)
    clock.now = 1059.9
    assert cache.get("token-1") is claims
    clock.now = 1060.0
    assert cache.get("token-1") is None
    assert len(cache) == 0


def test_verified_token_cache_bounded_evicts_least_recently_used():
    cache = VerifiedTokenCache(max_entries=3, clock=FakeClock(0.0))
    for n in range(3):
        cache.put(f"t{n}", Claims({"sub": f"u{n}", "exp": 100}))
    assert cache.get("t0") is not None  # t0 is now the most recently used
    cache.put("t3", Claims({"sub": "u3", "exp": 100}))
    assert len(cache) == 3
    assert cache.get("t1") is None and cache.get("t0") is not None and cache.get("t3") is not None


def test_verified_token_cache_keyed_by_whole_token(clerk_keys, protected_app):
    token = mint_token(clerk_keys.primary)
    client = protected_app.test_client()
    assert (
        client.get("/test/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    # Same header and payload, another signature: a cache keyed by less than the whole token
    # would let it through.
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    response = client.get("/test/whoami", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.get_json(force=True)["code"] in ("token_invalid_signature", "token_invalid")


def test_session_verifier_cache_hit_skips_key_lookup_and_signature(clerk_keys):
    calls: list[str | None] = []

    class CountingKey:
        def get_key(self, kid):
            calls.append(kid)
            return clerk_keys.primary.private.public_key()

    verifier = SessionVerifier(_settings(), CountingKey())
    token = mint_token(clerk_keys.primary)
    assert verifier.verify(token).sub == verifier.verify(token).sub == "user_123"
    assert calls == ["key-a"]
    with pytest.raises(Exception) as raised:
        verifier.verify(mint_token(clerk_keys.primary, exp=int(time.time()) - 60))
    assert raised.value.code == "token_expired"
    assert len(verifier.cache) == 1  # failures are never cached


@pytest.mark.parametrize(
    ("aud", "status", "code"),
    [
        ("https://api.example.com", 200, "ok"),
        (["https://x.example", "https://api.example.com"], 200, "ok"),
        ("https://other.example", 401, "token_invalid_audience"),
        (["https://other.example"], 401, "token_invalid_audience"),
        ([], 401, "token_invalid_audience"),
        (None, 401, "token_invalid_audience"),
        (7, 401, "token_invalid_audience"),
    ],
    ids=[
        "listed",
        "list_with_listed",
        "unlisted",
        "list_unlisted",
        "empty_list",
        "absent",
        "number",
    ],
)
def test_hook_clerk_audience_set_requires_listed_aud(
    make_app, clerk_env, clerk_keys, aud, status, code
):
    app = make_app(**clerk_env, CLERK_AUDIENCE="https://api.example.com, https://b.example.com")
    token = mint_token(clerk_keys.primary, aud=aud)
    response = app.test_client().get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == status, response.get_data(as_text=True)
    if status == 401:
        assert response.get_json(force=True)["code"] == code
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
