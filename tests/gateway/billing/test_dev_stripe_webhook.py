"""`flask dev stripe-webhook`: a Stripe-signed event sent to the local gateway (dev mode)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway.billing.signatures import DEV_STRIPE_WEBHOOK_SECRET
from gateway.extensions import db
from gateway.models import User, WebhookEvent
from tests.support.processes import free_port
from tests.support.stripe import add_user
from tests.support.stripe_events import post_stripe, stripe_event, subscription


@pytest.fixture
def dev_app(make_app):
    return make_app(GATEWAY_ENV="development")


@pytest.fixture
def served(dev_app) -> Iterator[str]:
    server = make_server("127.0.0.1", free_port(), dev_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    server.shutdown()


def invoke(app, *args: str):
    return app.test_cli_runner().invoke(args=["dev", "stripe-webhook", *args])


def stored(app) -> list[WebhookEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(WebhookEvent)))
        db.session.expunge_all()
        return rows


def test_dev_stripe_webhook_for_user_links_dev_customer_and_is_stored(dev_app, served):
    with dev_app.app_context():
        add_user(db.session, "user_dev")

    result = invoke(
        dev_app, "customer.subscription.updated", "--user", "user_dev", "--status", "trialing",
        "--url", served,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "linked user_dev to cus_dev_user_dev (development only)" in result.output
    assert "HTTP 200" in result.output
    [row] = stored(dev_app)
    assert (row.source, row.type, row.ordering_key) == (
        "stripe",
        "customer.subscription.updated",
        "cus_dev_user_dev",
    )
    obj = row.payload["data"]["object"]
    assert (obj["customer"], obj["status"]) == ("cus_dev_user_dev", "trialing")
    with dev_app.app_context():
        user = db.session.scalar(select(User).where(User.clerk_user_id == "user_dev"))
        assert user.stripe_customer_id == "cus_dev_user_dev"


def test_dev_stripe_webhook_customer_deleted_by_customer_id(dev_app, served):
    result = invoke(dev_app, "customer.deleted", "--customer", "cus_gone", "--url", served)

    assert result.exit_code == 0, result.output
    [row] = stored(dev_app)
    assert (row.type, row.payload["data"]["object"]["id"]) == ("customer.deleted", "cus_gone")


def test_dev_stripe_webhook_needs_a_customer_and_dev_mode(dev_app, make_app):
    assert "--customer or --user" in invoke(dev_app, "customer.deleted").output
    production = invoke(make_app(), "customer.deleted", "--customer", "cus_1")
    assert production.exit_code != 0
    assert "development mode only" in production.output


def test_dev_secret_only_in_development_mode(make_app):
    body = stripe_event("customer.deleted", {"id": "cus_1", "object": "customer"})
    sub = stripe_event("customer.subscription.created", subscription("sub_1", "cus_1"))

    production = post_stripe(make_app().test_client(), body, secret=DEV_STRIPE_WEBHOOK_SECRET)
    dev = post_stripe(
        make_app(GATEWAY_ENV="development").test_client(), sub, secret=DEV_STRIPE_WEBHOOK_SECRET
    )

    assert (production.status_code, dev.status_code) == (503, 200)
