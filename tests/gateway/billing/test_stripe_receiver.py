"""POST /webhooks/stripe: Stripe-Signature verification, the ledger row, the answer (no worker)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import WebhookEvent
from tests.support.polling import wait_until
from tests.support.processes import free_port
from tests.support.stripe_events import (
    OTHER_SECRET,
    SECRET,
    customer,
    encode,
    post_stripe,
    sign,
    stripe_event,
    subscription,
)
from tests.support.svix import SECRET as SVIX_SECRET
from tests.support.svix import clerk_event, new_user_id, post_event

ADMIN_KEY = "admin-key-for-tests-0123456789abcdef"


@pytest.fixture
def app(make_app):
    return make_app(STRIPE_WEBHOOK_SECRET=SECRET)


def rows(app):
    with app.app_context():
        found = list(db.session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))
        db.session.expunge_all()
        return found


def updated_event(**kw):
    return stripe_event("customer.subscription.updated", subscription("sub_1", "cus_1"), **kw)


def test_receive_signed_subscription_event_stored_as_stripe_and_acknowledged(app, client):
    event = updated_event()

    response = post_stripe(client, event)

    assert response.status_code == 200
    assert response.json == {"received": True, "event_id": event["id"], "duplicate": False}
    [row] = rows(app)
    assert (row.svix_id, row.source, row.type) == (event["id"], "stripe", event["type"])
    assert row.clerk_user_id is None
    assert row.ordering_key == "cus_1"  # one customer's events apply one at a time, in order
    assert row.payload == event
    assert row.event_timestamp == event["created"] * 1000
    assert row.to_dict()["source"] == "stripe"
    # The hand-off wakes a worker after the answer; the test broker (Redis) takes it.
    wait_until(lambda: rows(app)[0].status == "queued", 10)


def test_receive_signature_by_hand_matches_stripe_scheme(app, client):
    # Stripe's documented scheme, computed without the library: v1 = HMAC-SHA256(secret,
    # "<t>.<body>"), so the receiver accepts what Stripe really sends.
    body = encode(updated_event())
    timestamp = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    header = f"t={timestamp},v1={digest.hexdigest()},v0=ignored"

    response = post_stripe(client, body, headers={"Stripe-Signature": header})

    assert response.status_code == 200


def test_receive_same_event_twice_answers_duplicate_and_stores_once(app, client):
    event = updated_event()

    first = post_stripe(client, event)
    second = post_stripe(client, event)

    assert first.json["duplicate"] is False
    assert second.status_code == 200
    assert second.json == {"received": True, "event_id": event["id"], "duplicate": True}
    assert len(rows(app)) == 1


@pytest.mark.parametrize(
    "event_type", ["invoice.paid", "customer.created", "customer.subscription.trial_will_end"]
)
def test_receive_other_types_stored_ignored_never_queued(app, client, event_type):
    event = stripe_event(event_type, {"id": "in_1", "object": "invoice", "customer": "cus_1"})

    response = post_stripe(client, event)

    assert response.status_code == 200
    [row] = rows(app)
    assert (row.status, row.queued_at) == ("ignored", None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json at all", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"type": "customer.deleted", "created": 1}', "no_event_id"),
        (b'{"id": "evt_x", "created": NaN, "type": "customer.deleted"}', "not_json"),
    ],
)
def test_receive_signed_unusable_body_stored_invalid_with_evidence(app, client, body, reason):
    first = post_stripe(client, body)
    again = post_stripe(client, body)

    assert first.status_code == 200
    assert again.json["duplicate"] is True  # an id derived from the body: retries are duplicates
    [row] = rows(app)
    assert (row.status, row.last_error, row.raw_body) == ("invalid", reason, body.decode())
    assert row.svix_id.startswith("stripe_unparsable_")


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        ("customer.subscription.updated", {"id": "sub_1", "status": "active"}),
        ("customer.subscription.created", {"id": "sub_1", "customer": {"name": "no id"}}),
        ("customer.deleted", {"object": "customer"}),
        ("customer.subscription.deleted", "sub_1"),
    ],
)
def test_receive_handled_type_without_its_customer_stored_invalid(app, client, event_type, obj):
    event = stripe_event(event_type, obj)  # type: ignore[arg-type]

    assert post_stripe(client, event).status_code == 200

    [row] = rows(app)
    assert (row.status, row.last_error, row.payload) == ("invalid", "no_customer", event)
    assert row.queued_at is None


def test_receive_without_secret_answers_503(make_app):
    client = make_app().test_client()

    response = post_stripe(client, updated_event())

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "webhooks_not_configured"
    assert "STRIPE_WEBHOOK_SECRET" in response.json["detail"]


def test_receive_rotated_secrets_either_verifies(make_app):
    app = make_app(STRIPE_WEBHOOK_SECRET=f"{OTHER_SECRET} {SECRET}")
    client = app.test_client()

    old = post_stripe(client, updated_event(), secret=SECRET)
    new = post_stripe(client, updated_event(), secret=OTHER_SECRET)
    unknown = post_stripe(client, updated_event(), secret="whsec_someone_else")

    assert (old.status_code, new.status_code, unknown.status_code) == (200, 200, 400)
    assert len(rows(app)) == 2


def _header_cases() -> list[tuple[str, dict[str, str] | None]]:
    body = encode(updated_event())
    good = sign(body)["Stripe-Signature"]
    timestamp, signature = good.split(",")
    return [
        ("missing", {}),
        ("empty", {"Stripe-Signature": ""}),
        ("no_v1", {"Stripe-Signature": timestamp}),
        ("no_t", {"Stripe-Signature": signature}),
        ("t_not_int", {"Stripe-Signature": f"t=soon,{signature}"}),
        ("garbage", {"Stripe-Signature": "%%%,,,==="}),
        ("bare_keys", {"Stripe-Signature": "t,v1"}),
        ("v0_only", {"Stripe-Signature": f"{timestamp},v0={signature[3:]}"}),
        ("wrong_hmac", {"Stripe-Signature": f"{timestamp},v1={'0' * 64}"}),
        ("non_ascii", {"Stripe-Signature": f"{timestamp},v1=\u00e9\u00e9"}),
        ("huge", {"Stripe-Signature": f"{timestamp},v1=" + "a" * 20000}),
    ]


@pytest.mark.parametrize(("case", "headers"), _header_cases(), ids=lambda c: str(c)[:12])
def test_receive_malformed_or_wrong_signature_answers_400_never_500(app, client, case, headers):
    response = post_stripe(client, updated_event(), headers=headers)

    assert response.status_code == 400, case
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "webhook_signature_invalid"
    assert rows(app) == []


def test_receive_body_changed_after_signing_rejected(app, client):
    body = encode(updated_event())
    headers = sign(body)

    response = post_stripe(client, body.replace(b"active", b"trialing"), headers=headers)

    assert response.status_code == 400
    assert rows(app) == []


def test_receive_non_utf8_body_answers_400(app, client):
    body = b'{"id": "evt_\xff"}'
    digest = hmac.new(SECRET.encode(), b"%d." % int(time.time()) + body, hashlib.sha256)

    response = post_stripe(
        client, body, headers={"Stripe-Signature": f"t={int(time.time())},v1={digest.hexdigest()}"}
    )

    assert response.status_code == 400
    assert response.json["code"] == "webhook_signature_invalid"


@pytest.mark.parametrize("age", [310, 3600, -310, -86400])
def test_receive_timestamp_outside_300s_tolerance_rejected(app, client, age):
    response = post_stripe(client, updated_event(), timestamp=time.time() - age)

    assert response.status_code == 400
    assert response.json["code"] == "webhook_signature_invalid"
    assert rows(app) == []


@pytest.mark.parametrize("age", [290, -290])
def test_receive_timestamp_inside_tolerance_accepted(app, client, age):
    response = post_stripe(client, updated_event(), timestamp=time.time() - age)

    assert response.status_code == 200


def test_receive_over_one_mib_refused_before_storing(app, client):
    event = updated_event()
    event["data"]["object"]["metadata"] = {"pad": "x" * (1024 * 1024)}

    response = post_stripe(client, event)

    assert response.status_code == 413
    assert response.json["code"] == "payload_too_large"
    assert rows(app) == []


def test_receive_exactly_one_mib_accepted(app, client):
    text = json.dumps(updated_event())
    body = (text[:-1] + ', "pad": "' + "x" * (1024 * 1024 - len(text) - 11) + '"}').encode()
    assert len(body) == 1024 * 1024

    assert post_stripe(client, body).status_code == 200


def test_receive_database_down_answers_503(make_app):
    app = make_app(
        STRIPE_WEBHOOK_SECRET=SECRET,
        DATABASE_URL=f"postgresql://root:root@127.0.0.1:{free_port()}/nowhere",
    )

    response = post_stripe(app.test_client(), updated_event())

    assert response.status_code == 503
    assert response.json["code"] == "database_unavailable"


def test_receive_broker_down_still_acknowledges_row_received(make_app):
    app = make_app(STRIPE_WEBHOOK_SECRET=SECRET, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    response = post_stripe(app.test_client(), updated_event())

    assert response.status_code == 200
    [row] = rows(app)
    assert row.status == "received"  # the sweep publishes it


def test_receive_stripe_and_clerk_events_share_one_ledger_and_admin_view(make_app):
    app = make_app(
        STRIPE_WEBHOOK_SECRET=SECRET, CLERK_WEBHOOK_SECRET=SVIX_SECRET, ADMIN_API_KEYS=ADMIN_KEY
    )
    client = app.test_client()

    stripe_answer = post_stripe(client, stripe_event("customer.deleted", customer("cus_9")))
    clerk_answer = post_event(client, clerk_event("user.updated", new_user_id(), "c@example.com"))
    listed = client.get(
        "/admin/webhook-events", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ).json["events"]

    assert (stripe_answer.status_code, clerk_answer.status_code) == (200, 200)
    assert {(e["event_id"], e["source"], e["type"]) for e in listed} == {
        (stripe_answer.json["event_id"], "stripe", "customer.deleted"),
        (clerk_answer.json["event_id"], "clerk", "user.updated"),
    }
