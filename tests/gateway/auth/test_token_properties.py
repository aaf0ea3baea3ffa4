"""Property tests of the token parser: arbitrary input and mutated valid tokens -> a contract
code, never an exception (CONTRACT 3: every bad token is one of Clerk's reasons)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth import tokens
from gateway.auth.jwks import StaticKey
from gateway.auth.tokens import Claims, VerifierSettings
from gateway.errors import Problem
from tests.support.clerk import ISSUER, ClerkKeys, encode_segment, mint_token, sign_raw
from tests.support.properties import BOUNDED

TOKEN_CODES = {
    "token_missing", "token_invalid", "token_invalid_algorithm", "token_invalid_signature",
    "token_expired", "token_not_active_yet", "token_iat_in_the_future", "token_invalid_issuer",
    "token_invalid_authorized_parties", "session_pending", "jwk_kid_mismatch",
    "token_type_mismatch", "token_invalid_audience",
}  # fmt: skip
SETTINGS = VerifierSettings(
    issuer=ISSUER, authorized_parties=("https://app.example.com",), audiences=()
)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
CLAIM_NAMES = st.sampled_from(
    ["sub", "sid", "iss", "exp", "iat", "nbf", "azp", "sts", "aud", "v", "o", "act", "fva"]
)


def outcome(token: Any, key: StaticKey) -> str:
    """ "ok" or the contract code. The parser's own path (without verify_session_token's last-resort
    catch-all) so that a parser bug fails here instead of passing as a silent token_invalid."""
    parse = getattr(tokens, "_verify", None)
    try:
        if parse is not None:
            claims = parse(token, SETTINGS, key, time.time)
        else:  # pragma: no cover - a refactored module without the private entry point
            claims = tokens.verify_session_token(token, SETTINGS, key)
    except Problem as problem:
        assert problem.code in TOKEN_CODES, problem.code
        return problem.code
    assert isinstance(claims, Claims)
    return "ok"


@pytest.fixture(scope="module")
def key(clerk_keys: ClerkKeys) -> StaticKey:
    return StaticKey(clerk_keys.primary.private.public_key())


@BOUNDED
@given(token=st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_is_a_contract_code(key: StaticKey, token: str) -> None:
    assert outcome(token, key) != "ok"


@BOUNDED
@given(
    header=st.dictionaries(st.text(max_size=8), JSON, max_size=4) | JSON,
    payload=st.dictionaries(CLAIM_NAMES | st.text(max_size=8), JSON, max_size=8) | JSON,
    signature=st.text(B64URL, max_size=40),
)
def test_arbitrary_segments_with_any_signature_are_a_contract_code(
    key: StaticKey, header: Any, payload: Any, signature: str
) -> None:
    token = f"{encode_segment(_json_bytes(header))}.{encode_segment(_json_bytes(payload))}"
    assert outcome(f"{token}.{signature}", key) != "ok"


@BOUNDED
@given(
    claims=st.dictionaries(CLAIM_NAMES, JSON | st.integers(0, 2**40), max_size=6),
    header=st.dictionaries(st.sampled_from(["typ", "cty", "jku", "x5u", "crit"]), JSON),
)
def test_validly_signed_claims_of_any_shape_are_ok_or_a_contract_code(
    clerk_keys: ClerkKeys, key: StaticKey, claims: dict[str, Any], header: dict[str, Any]
) -> None:
    """Signed with the instance key: only the claim checks stand between these and a session."""
    now = int(time.time())
    base = {"sub": "user_1", "sid": "sess_1", "iss": ISSUER, "iat": now, "exp": now + 60}
    token = sign_raw(
        clerk_keys.primary,
        {"alg": "RS256", "kid": clerk_keys.primary.kid} | header,
        base | claims,
    )
    result = outcome(token, key)
    if result == "ok":  # whatever passed is a plausible user session
        merged = base | claims
        assert isinstance(merged["sub"], str) and not merged["sub"].startswith("mch_")
        assert isinstance(merged["sid"], str) and merged["sid"]


@BOUNDED
@given(data=st.data())
def test_mutated_valid_token_is_ok_only_if_unchanged(
    clerk_keys: ClerkKeys, key: StaticKey, data: st.DataObject
) -> None:
    token = mint_token(clerk_keys.primary)
    position = data.draw(st.integers(0, len(token) - 1))
    mutation = data.draw(st.sampled_from(["replace", "delete", "insert", "truncate", "swap"]))
    char = data.draw(st.sampled_from(B64URL + ".=+/ \x00é"))
    if mutation == "replace":
        mutated = token[:position] + char + token[position + 1 :]
    elif mutation == "delete":
        mutated = token[:position] + token[position + 1 :]
    elif mutation == "insert":
        mutated = token[:position] + char + token[position:]
    elif mutation == "truncate":
        mutated = token[:position]
    else:
        header, payload, signature = token.split(".")
        mutated = f"{payload}.{header}.{signature}"
    result = outcome(mutated, key)
    # base64url decodes a few different last characters to the same bytes; that is not a change.
    assert result != "ok" or _same_token_bytes(mutated, token)


def _json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def _same_token_bytes(a: str, b: str) -> bool:
    import base64

    def raw(token: str) -> list[bytes]:
        return [base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)) for s in token.split(".")]

    try:
        return raw(a) == raw(b)
    except ValueError:
        return False
