"""Stripe's webhooks end to end: localstripe (or events signed with Stripe's scheme) -> the gateway
over real HTTP -> Redis -> a real Celery worker -> PostgreSQL -> the guard gate (CONTRACT 4.11)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway.extensions import db
from gateway.models import User, WebhookEvent
from tests.gateway.guards.upstream import Upstream
from tests.support.clerk import ISSUER, mint_token
from tests.support.polling import wait_until
from tests.support.processes import free_port
from tests.support.stripe import (
    add_user,
    create_customer,
    create_free_plan,
    register_webhook,
    stripe_call,
)
from tests.support.stripe_events import SECRET, post_stripe, stripe_event, subscription

FINAL = ("processed", "failed", "ignored", "invalid")
HANDLED = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.deleted",
]
pytestmark = pytest.mark.slow


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture
def gateway(make_app, worker, upstream, clerk_keys) -> Iterator[tuple[object, str]]:
    """The gateway on a real loopback port (localstripe posts to it), gating `paid`."""
    app = make_app(
        STRIPE_WEBHOOK_SECRET=SECRET,
        GUARD_SERVICES=f"paid={upstream.url('/echo')},free={upstream.url('/echo')}",
        GUARD_REQUIRES_SUBSCRIPTION="paid",
        CLERK_JWT_KEY=clerk_keys.primary.public_pem,
        CLERK_ISSUER=ISSUER,
    )
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(10)


@pytest.fixture
def localstripe_hooks(localstripe, gateway) -> Iterator[str]:
    """localstripe delivering the handled event types to the gateway; unhooked afterwards."""
    _, base = gateway
    register_webhook(localstripe, "gateway", f"{base}/webhooks/stripe", SECRET, HANDLED)
    yield localstripe
    register_webhook(localstripe, "gateway", f"{base}/webhooks/stripe", SECRET, ["none.none"])


def events(app) -> list[WebhookEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))
        db.session.expunge_all()
        return rows


def user_row(app, clerk_user_id: str) -> User:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.clerk_user_id == clerk_user_id))
        db.session.expunge_all()
        return user


def wait_final(app, *event_ids: str, timeout: float = 30.0) -> dict[str, WebhookEvent]:
    def done():
        rows = {row.svix_id: row for row in events(app)}
        return all(e in rows and rows[e].status in FINAL for e in event_ids) and rows

    return wait_until(done, timeout)


def call_guard(base: str, token: str, service: str) -> requests.Response:
    return requests.post(
        f"{base}/api/v1/guards/process",
        json={"service": service, "payload": {"n": 1}},
        headers={"Authorization": f"Bearer {token}", "X-Subscription-Status": "active"},
        timeout=10,
    )


def gate_answers(base: str, token: str, service: str, status: int) -> None:
    """The guard gate reads statuses through a one-second per-process cache: a change shows
    within that second (gateway.billing.entitlement.StatusCache)."""
    wait_until(lambda: call_guard(base, token, service).status_code == status, 10, 0.2)


def test_localstripe_subscription_lifecycle_reaches_user_and_gate(
    gateway, localstripe_hooks, upstream, clerk_keys
):
    app, base = gateway
    localstripe = localstripe_hooks
    cus = create_customer(localstripe, metadata={"clerk_user_id": "user_ls"})
    with app.app_context():
        add_user(db.session, "user_ls", stripe_customer_id=cus["id"])
    token = mint_token(clerk_keys.primary, user_id="user_ls")
    assert call_guard(base, token, "paid").json()["code"] == "subscription_required"
    assert upstream.hits == []

    create_free_plan(localstripe, "price_ls_basic")
    sub = stripe_call(
        localstripe, "POST", "/v1/subscriptions",
        customer=cus["id"], **{"items[0][plan]": "price_ls_basic"},
    )  # fmt: skip
    assert sub["status"] == "active"
    wait_until(lambda: user_row(app, "user_ls").subscription_status == "active", 30)
    user = user_row(app, "user_ls")
    assert (user.stripe_subscription_id, user.subscription_price_id) == (
        sub["id"],
        "price_ls_basic",
    )
    assert int(user.subscription_current_period_end.timestamp()) == sub["current_period_end"]

    gate_answers(base, token, "paid", 200)
    # The gateway's own value (a client's forged header is dropped: tests/gateway/guards).
    assert upstream.hits[-1].headers["x-subscription-status"] == "active"

    stripe_call(localstripe, "DELETE", f"/v1/subscriptions/{sub['id']}")
    wait_until(lambda: user_row(app, "user_ls").subscription_status == "canceled", 30)
    gate_answers(base, token, "paid", 402)
    called = len(upstream.hits)
    refused = call_guard(base, token, "paid")
    assert (refused.status_code, refused.json()["code"]) == (402, "subscription_required")
    assert len(upstream.hits) == called  # not called
    free = call_guard(base, token, "free")
    assert free.status_code == 200
    assert upstream.hits[-1].headers["x-subscription-status"] == "canceled"

    stripe_call(localstripe, "DELETE", f"/v1/customers/{cus['id']}")
    wait_until(lambda: user_row(app, "user_ls").stripe_customer_id is None, 30)
    user = user_row(app, "user_ls")
    assert (user.subscription_status, user.stripe_customer_deleted_at is not None) == (None, True)

    def no_header() -> bool:
        call_guard(base, token, "free")
        return "x-subscription-status" not in upstream.hits[-1].headers

    wait_until(no_header, 10, 0.2)
    rows = events(app)
    assert {row.source for row in rows} == {"stripe"}
    assert all(row.status == "processed" and row.attempts == 1 for row in rows), [
        (r.type, r.status, r.last_error) for r in rows
    ]


def test_signed_updated_event_applied_in_one_pass_gate_follows(gateway, upstream, clerk_keys):
    app, base = gateway
    with app.app_context():
        add_user(db.session, "user_sig", stripe_customer_id="cus_sig")
    token = mint_token(clerk_keys.primary, user_id="user_sig")
    event = stripe_event(
        "customer.subscription.updated", subscription("sub_sig", "cus_sig", "trialing")
    )

    assert post_stripe(base, event).status_code == 200
    rows = wait_final(app, event["id"])

    assert (rows[event["id"]].status, rows[event["id"]].attempts) == ("processed", 1)
    assert user_row(app, "user_sig").subscription_status == "trialing"
    assert call_guard(base, token, "paid").status_code == 200
    assert upstream.hits[-1].headers["x-subscription-status"] == "trialing"


def test_duplicates_and_out_of_order_through_the_worker(gateway):
    app, base = gateway
    with app.app_context():
        add_user(db.session, "user_ooo", stripe_customer_id="cus_ooo")
    t0 = 1_800_000_000
    newer = stripe_event(
        "customer.subscription.updated",
        subscription("sub_ooo", "cus_ooo", "past_due", "price_b"),
        created=t0 + 60,
    )
    older = stripe_event(
        "customer.subscription.created",
        subscription("sub_ooo", "cus_ooo", "active", "price_a"),
        created=t0,
    )

    for event in (newer, newer, older, newer):
        assert post_stripe(base, event).status_code == 200
    rows = wait_final(app, newer["id"], older["id"])

    assert len(events(app)) == 2
    assert rows[newer["id"]].attempts == 1  # three deliveries, applied once
    assert (rows[older["id"]].status, rows[older["id"]].last_error) == ("processed", "stale")
    user = user_row(app, "user_ooo")
    assert (user.subscription_status, user.subscription_price_id) == ("past_due", "price_b")


def test_unknown_customer_event_ignored_by_worker(gateway):
    app, base = gateway
    event = stripe_event("customer.subscription.created", subscription("sub_x", "cus_nobody"))

    post_stripe(base, event)
    rows = wait_final(app, event["id"])

    assert (rows[event["id"]].status, rows[event["id"]].last_error) == (
        "ignored",
        "customer_not_linked",
    )


def test_admin_replay_of_a_stripe_event_changes_nothing_more(gateway, make_app):
    app, base = gateway
    with app.app_context():
        add_user(db.session, "user_rp", stripe_customer_id="cus_rp")
    event = stripe_event("customer.subscription.created", subscription("sub_rp", "cus_rp"))
    post_stripe(base, event)
    wait_final(app, event["id"])
    before = user_row(app, "user_rp").updated_at
    first_pass = {r.svix_id: r for r in events(app)}[event["id"]].processed_at

    admin = make_app(ADMIN_API_KEYS="k" * 32)
    response = admin.test_client().post(
        f"/admin/webhook-events/{event['id']}/replay",
        headers={"Authorization": "Bearer " + "k" * 32},
    )
    assert response.status_code == 202
    wait_until(
        lambda: any(r.svix_id == event["id"] and r.status == "processed"
                    and r.processed_at > first_pass for r in events(app)),
        30,
    )  # fmt: skip
    assert user_row(app, "user_rp").subscription_status == "active"
    assert user_row(app, "user_rp").updated_at == before
