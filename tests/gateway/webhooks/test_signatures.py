"""Every case of the Svix vector file: exactly with a frozen clock, and over HTTP re-signed now."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks.webhooks
from sqlalchemy import func, select

from gateway.config import ConfigError
from gateway.extensions import db
from gateway.models import WebhookEvent
from gateway.webhooks.signatures import WebhookSignatureInvalid, verify_webhook
from tests.support.svix import SECRET, sign, svix_vectors

VECTORS = svix_vectors()
SIGN = {vector["name"]: vector for vector in VECTORS["sign_vectors"]}


def case_id(case):
    return f"{case['vector']}-{case.get('case') or case['signature']}-{case['now_offset_s']}"


def signature_header(case, expected):
    """The signature header a verify case describes, given the expected signature."""
    kind = case["signature"]
    decoys = VECTORS["decoy_signatures"][case["vector"]]
    if kind == "expected":
        return expected
    if kind == "known_bad":
        return VECTORS["known_bad_signatures"][case["vector"]]
    if kind == "decoys only":
        return " ".join(decoys)
    if kind == "decoys + expected + decoy[0]":
        return " ".join([*decoys, expected, decoys[0]])
    if kind == "decoys[0:2] + expected + decoys[2]":
        return " ".join([*decoys[0:2], expected, decoys[2]])
    return kind  # a literal header value


def build(case, timestamp, expected):
    vector = SIGN[case["vector"]]
    prefix = case["headers"]
    headers = {
        f"{prefix}-id": case.get("msg_id_override", vector["msg_id"]),
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": signature_header(case, expected),
    }
    body = case.get("payload_override", vector["payload"]).encode()
    return body, headers


class FrozenDatetime(datetime):
    frozen: datetime

    @classmethod
    def now(cls, tz=None):
        return cls.frozen


@pytest.fixture
def frozen_clock(monkeypatch):
    """The only stand-in here: svix reads the wall clock, and the vectors are from 2021."""

    def freeze(epoch_seconds):
        FrozenDatetime.frozen = datetime.fromtimestamp(epoch_seconds, UTC)
        monkeypatch.setattr(standardwebhooks.webhooks, "datetime", FrozenDatetime)

    return freeze


@pytest.mark.parametrize("vector", VECTORS["sign_vectors"], ids=lambda v: v["name"])
def test_sign_helper_reproduces_vector_signature(vector):
    headers = sign(vector["payload"], vector["msg_id"], vector["secret"], vector["timestamp"])

    assert headers["svix-signature"] == vector["expected_signature"]


@pytest.mark.parametrize("case", VECTORS["verify_cases"], ids=case_id)
def test_verify_webhook_vector_case_matches_expected_outcome(case, frozen_clock):
    vector = SIGN[case["vector"]]
    frozen_clock(vector["timestamp"] + case["now_offset_s"])
    body, headers = build(case, vector["timestamp"], vector["expected_signature"])
    secret = case.get("secret_override", vector["secret"])

    if case["expect"] == "valid":
        assert verify_webhook(body, headers, [secret]) == headers[f"{case['headers']}-id"]
    else:
        with pytest.raises(WebhookSignatureInvalid):
            verify_webhook(body, headers, [secret])


@pytest.mark.parametrize("case", VECTORS["unpadded_secret_cases"], ids=lambda c: c["note"])
def test_verify_webhook_unpadded_secret_equals_padded(case):
    body = b'{"type": "user.updated"}'
    headers = sign(body, "msg_1", "whsec_" + case["padded_equivalent"])

    assert verify_webhook(body, headers, ["whsec_" + case["secret_as_given"]]) == "msg_1"


def margin(offset):
    """Over HTTP the clock runs between signing and verifying: keep 5 s off the boundary."""
    if offset == 0:
        return 0
    toward_zero = -5 if offset > 0 else 5
    return offset + toward_zero if abs(offset) <= 300 else offset - toward_zero


@pytest.mark.parametrize("case", VECTORS["verify_cases"], ids=case_id)
def test_receive_vector_case_over_http_matches_expected_outcome(make_app, case):
    # Same secret, id, body and header mutation as the vector, signed now minus the offset.
    vector = SIGN[case["vector"]]
    app = make_app(CLERK_WEBHOOK_SECRET=case.get("secret_override", vector["secret"]))
    timestamp = int(time.time()) - margin(case["now_offset_s"])
    expected = sign(vector["payload"], vector["msg_id"], vector["secret"], timestamp)
    body, headers = build(case, timestamp, expected["svix-signature"])

    response = app.test_client().post("/webhooks/clerk", data=body, headers=headers)

    if case["expect"] == "valid":
        assert response.status_code == 200
        assert response.json["event_id"] == headers[f"{case['headers']}-id"]
    else:
        assert response.status_code == 400
        assert response.json["code"] == "webhook_signature_invalid"
        with app.app_context():
            assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def malformed(mutation, headers, body):
    """The mutations of malformed_header_cases_svix_2_9_1, applied to a valid request."""
    good = headers["svix-signature"]
    if mutation == "svix-timestamp = 'hello'":
        headers["svix-timestamp"] = "hello"
    elif mutation == "svix-id header missing":
        del headers["svix-id"]
    elif mutation == "svix-signature = 'v1,'":
        headers["svix-signature"] = "v1,"
    elif mutation == "svix-signature = 'garbage' (no comma)":
        headers["svix-signature"] = "garbage"
    elif mutation == "two spaces between signatures":
        headers["svix-signature"] = f"v1,AAAA  {good}"
    elif mutation == "svix-signature = 'v1,!!!notbase64'":
        headers["svix-signature"] = "v1,!!!notbase64"
    elif mutation == "body bytes not valid UTF-8":
        body = b'{"type": "user.updated", "x": "\xff\xfe"}'
    return headers, body


HEADER_CASES = [
    case
    for case in VECTORS["malformed_header_cases_svix_2_9_1"]["cases"]
    if not case["mutation"].startswith("Webhook(")
]


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!"])
def test_config_empty_or_garbled_secret_refused_at_start(make_config, secret):
    # The vector file's EmptyWebhookSecretError case: it must stop the process, not 500 later.
    with pytest.raises(ConfigError, match="CLERK_WEBHOOK_SECRET"):
        make_config(CLERK_WEBHOOK_SECRET=secret)


@pytest.mark.parametrize("case", HEADER_CASES, ids=lambda c: c["mutation"])
def test_receive_malformed_headers_answer_400_never_500(make_app, case):
    app = make_app(CLERK_WEBHOOK_SECRET=SECRET)
    body = json.dumps({"type": "user.updated", "data": {"id": "user_1"}}).encode()
    headers, body = malformed(case["mutation"], sign(body), body)

    response = app.test_client().post("/webhooks/clerk", data=body, headers=headers)

    assert response.status_code == 400
    assert response.json["code"] == "webhook_signature_invalid"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"svix-id": "msg_1"},
        {"svix-id": "", "svix-timestamp": "1", "svix-signature": "v1,AAAA"},
        {"svix-id": "m" * 300, "svix-timestamp": str(int(time.time())), "svix-signature": "v1,x"},
    ],
    ids=["none", "id-only", "empty-id", "id-too-long"],
)
def test_receive_missing_or_bad_headers_answer_400(make_app, headers):
    app = make_app(CLERK_WEBHOOK_SECRET=SECRET)

    response = app.test_client().post("/webhooks/clerk", data=b"{}", headers=headers)

    assert response.status_code == 400
    assert response.json["code"] == "webhook_signature_invalid"
