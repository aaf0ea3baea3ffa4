"""Property tests of the webhook parser: arbitrary and mutated deliveries -> a contract outcome
(400 webhook_signature_invalid, or a stored event whose status says what it is), never an
exception."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.extensions import db
from gateway.users.service import ClerkUser
from gateway.webhooks.service import parse_event, record_webhook_event
from gateway.webhooks.signatures import WebhookSignatureInvalid, verify_webhook
from tests.support.properties import BOUNDED
from tests.support.svix import SECRET, clerk_event, encode, new_msg_id, new_user_id, sign

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16,
)
HEADER_NAMES = [f"{p}-{n}" for p in ("svix", "webhook") for n in ("id", "timestamp", "signature")]
EVENT_TYPES = st.sampled_from(["user.created", "user.updated", "user.deleted", "session.created"])


def _verifies(body: bytes, headers: dict[str, str]) -> bool:
    try:
        verify_webhook(body, headers, (SECRET,))
    except WebhookSignatureInvalid:
        return False
    return True


@BOUNDED
@given(
    body=st.binary(max_size=300),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES) | st.text(max_size=10), st.text()),
)
def test_arbitrary_delivery_is_signature_invalid(body: bytes, headers: dict[str, str]) -> None:
    assert not _verifies(body, headers)


@BOUNDED
@given(data=st.data())
def test_mutated_signed_delivery_verifies_only_if_unchanged(data: st.DataObject) -> None:
    body = encode(clerk_event("user.updated", "user_1", "a@example.com"))
    headers = sign(body)
    assert _verifies(body, headers)
    target = data.draw(st.sampled_from(["body", "svix-id", "svix-timestamp", "svix-signature"]))
    if target == "body":
        position = data.draw(st.integers(0, len(body) - 1))
        byte = data.draw(st.integers(0, 255))
        mutated_body, mutated_headers = (
            body[:position] + bytes([byte]) + body[position + 1 :],
            headers,
        )
    else:
        value = headers[target]
        position = data.draw(st.integers(0, len(value)))
        char = data.draw(st.characters(codec="latin-1"))
        mutated_body = body
        mutated_headers = headers | {target: value[:position] + char + value[position + 1 :]}
    unchanged = mutated_body == body and mutated_headers == headers
    if _verifies(mutated_body, mutated_headers) and not unchanged:
        # Only another spelling of the same value may still verify: the signature's base64
        # (padding, a space), or the timestamp (svix reads int("1733000000\r")).
        assert target in ("svix-signature", "svix-timestamp"), target
        if target == "svix-signature":
            assert _signatures(mutated_headers[target]) & _signatures(headers[target])
        else:
            assert int(mutated_headers[target]) == int(headers[target])


def _signatures(header: str) -> set[bytes]:
    found = set()
    for part in header.split():
        version, _, encoded = part.partition(",")
        try:
            found.add(version.encode("latin-1") + b"," + base64.b64decode(encoded))
        except ValueError:
            continue
    return found


@BOUNDED
@given(text=st.text(max_size=300) | JSON.map(json.dumps))
def test_any_verified_text_parses_to_a_status(text: str) -> None:
    parsed = parse_event(text.encode("utf-8", "surrogatepass"))
    assert parsed.status.value in ("received", "ignored", "invalid")


@BOUNDED
@given(data=st.dictionaries(st.text(max_size=30), JSON, max_size=8) | JSON)
def test_any_user_object_parses_or_is_refused_as_not_a_user(data: Any) -> None:
    with contextlib.suppress(ValueError):  # ValueError: "not a user", an invalid event
        ClerkUser.from_payload(data)


@settings(BOUNDED, max_examples=40)
@given(
    event_type=EVENT_TYPES,
    data=st.dictionaries(
        st.sampled_from(["first_name", "last_name", "image_url", "public_metadata", "id"]),
        JSON,
        max_size=4,
    ),
)
def test_any_signed_event_is_stored_and_applied_without_an_exception(
    app: Any, event_type: str, data: dict[str, Any]
) -> None:
    """Through the ledger and the apply step on PostgreSQL: stored with a status, applied to one
    of the contract's outcomes (or refused as invalid), never a database error."""
    from gateway.webhooks.processing import drain

    event = clerk_event(event_type, new_user_id(), "prop@example.com")
    event["data"].update(data)
    with app.app_context():
        recorded = record_webhook_event(db.session, new_msg_id(), encode(event))
        assert recorded.status in ("received", "ignored", "invalid")
        result = drain(db.session, app.config["GATEWAY"], lambda follow_ups: None)
        # Applied, or refused as what it is; never a database error ("failed" with its class).
        assert set(result.statuses) <= {"processed", "ignored", "invalid"}, result.statuses
        db.session.remove()
