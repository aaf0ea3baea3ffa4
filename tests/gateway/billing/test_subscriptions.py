"""Applying Stripe events to users (gateway.billing.subscriptions) on PostgreSQL: every handled
type, ordering by the event's `created`, unknown customers, several subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import current_app

from gateway.billing.entitlement import subscription_status_of
from gateway.billing.subscriptions import apply_stripe_event, customer_key
from gateway.extensions import db
from gateway.models import User
from gateway.webhooks.events import Outcome, StoredEvent
from gateway.webhooks.service import DatabaseUnavailable
from tests.support.processes import free_port
from tests.support.stripe import add_user
from tests.support.stripe_events import customer, stripe_event, subscription

T0 = 1_800_000_000


PROCESSED, IGNORED, INVALID = "processed", "ignored", "invalid"


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield db.session


def run(session, payload) -> Outcome:
    """As the worker calls the handler: a StoredEvent keyed by the event's customer."""
    stored = StoredEvent(1, payload.get("id", "evt_t"), payload["type"], customer_key(payload),
                         payload, source="stripe")  # fmt: skip
    outcome = apply_stripe_event(session, stored, current_app.config["GATEWAY"])
    session.commit()
    return outcome


def apply(session, event_type, obj, created) -> Outcome:
    return run(session, stripe_event(event_type, obj, created=created))


def user(session, clerk_user_id="user_a") -> User:
    session.expire_all()
    return session.scalar(db.select(User).where(User.clerk_user_id == clerk_user_id))


def fields(u: User):
    return (
        u.stripe_subscription_id,
        u.subscription_status,
        u.subscription_price_id,
        u.subscription_current_period_end,
    )


def test_apply_created_sets_status_price_and_period_end(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")

    outcome = apply(
        ctx,
        "customer.subscription.created",
        subscription("sub_1", "cus_a", "trialing", "price_pro", T0 + 86400),
        T0,
    )

    assert (outcome.status, outcome.last_error) == (PROCESSED, None)
    u = user(ctx)
    assert fields(u) == (
        "sub_1",
        "trialing",
        "price_pro",
        datetime.fromtimestamp(T0 + 86400, UTC),
    )
    assert u.subscription_event_at == datetime.fromtimestamp(T0, UTC)
    assert u.to_public_dict()["subscription_status"] == "trialing"
    assert u.to_admin_dict()["subscription_price_id"] == "price_pro"


def test_apply_period_end_read_from_items_on_new_api_versions(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")

    apply(
        ctx,
        "customer.subscription.updated",
        subscription("sub_1", "cus_a", period_end=T0 + 99, period_on_items=True),
        T0,
    )

    assert user(ctx).subscription_current_period_end == datetime.fromtimestamp(T0 + 99, UTC)


def test_apply_legacy_plan_without_price_uses_plan_id(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    obj = subscription("sub_1", "cus_a")
    obj["items"]["data"][0] = {"id": "si_1", "plan": {"id": "gold", "object": "plan"}}

    apply(ctx, "customer.subscription.created", obj, T0)

    assert user(ctx).subscription_price_id == "gold"


def test_apply_updated_then_deleted_ends_canceled(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    apply(ctx, "customer.subscription.created", subscription("sub_1", "cus_a", "incomplete"), T0)
    apply(ctx, "customer.subscription.updated", subscription("sub_1", "cus_a", "active"), T0 + 1)
    assert user(ctx).subscription_status == "active"

    # Stripe's deleted event carries status canceled; the gateway stores canceled whatever it says.
    apply(ctx, "customer.subscription.deleted", subscription("sub_1", "cus_a", "active"), T0 + 2)

    assert user(ctx).subscription_status == "canceled"
    assert user(ctx).stripe_subscription_id == "sub_1"


def test_apply_older_event_after_newer_changes_nothing(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    apply(
        ctx,
        "customer.subscription.updated",
        subscription("sub_1", "cus_a", "past_due", "price_new"),
        T0 + 10,
    )
    before = fields(user(ctx))

    late = apply(
        ctx,
        "customer.subscription.updated",
        subscription("sub_1", "cus_a", "active", "price_old"),
        T0 + 5,
    )

    assert (late.status, late.last_error) == (PROCESSED, "stale")
    assert fields(user(ctx)) == before
    assert user(ctx).subscription_event_at == datetime.fromtimestamp(T0 + 10, UTC)


def test_apply_late_created_after_deleted_does_not_revive(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    apply(ctx, "customer.subscription.deleted", subscription("sub_1", "cus_a", "canceled"), T0)

    # Same second (Stripe's created has one-second resolution), delivered after the delete.
    same_second = apply(
        ctx, "customer.subscription.created", subscription("sub_1", "cus_a", "active"), T0
    )
    older = apply(
        ctx, "customer.subscription.updated", subscription("sub_1", "cus_a", "active"), T0 - 1
    )

    assert (same_second.last_error, older.last_error) == ("stale", "stale")
    assert user(ctx).subscription_status == "canceled"


def test_apply_same_second_updates_later_delivery_wins(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    apply(ctx, "customer.subscription.created", subscription("sub_1", "cus_a", "incomplete"), T0)

    apply(ctx, "customer.subscription.updated", subscription("sub_1", "cus_a", "active"), T0)

    assert user(ctx).subscription_status == "active"


def test_apply_unknown_customer_ignored_and_nothing_changes(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")

    outcome = apply(ctx, "customer.subscription.created", subscription("sub_9", "cus_nobody"), T0)
    deleted = apply(ctx, "customer.deleted", customer("cus_nobody"), T0)

    assert (outcome.status, outcome.last_error) == (IGNORED, "customer_not_linked")
    assert deleted.status == IGNORED
    assert fields(user(ctx)) == (None, None, None, None)


def test_apply_expanded_customer_object_is_read_by_id(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    obj = subscription("sub_1", "cus_a")
    obj["customer"] = customer("cus_a", "user_a")

    apply(ctx, "customer.subscription.created", obj, T0)

    assert user(ctx).subscription_status == "active"


def test_apply_customer_deleted_clears_link_and_subscription(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    add_user(ctx, "user_b", stripe_customer_id="cus_b")
    apply(ctx, "customer.subscription.created", subscription("sub_1", "cus_a"), T0)
    apply(ctx, "customer.subscription.created", subscription("sub_2", "cus_b"), T0)

    outcome = apply(ctx, "customer.deleted", customer("cus_a", "user_a"), T0 + 5)

    assert outcome.status == PROCESSED
    a = user(ctx, "user_a")
    assert a.stripe_customer_id is None
    assert fields(a) == (None, None, None, None)
    assert a.subscription_event_at is None
    assert a.stripe_customer_deleted_at == datetime.fromtimestamp(T0 + 5, UTC)
    assert a.is_active is True  # the Clerk user is untouched
    assert user(ctx, "user_b").subscription_status == "active"
    # A late event of the deleted customer's subscription finds no user any more.
    late = apply(ctx, "customer.subscription.updated", subscription("sub_1", "cus_a"), T0 + 1)
    assert late.status == IGNORED
    assert user(ctx, "user_a").subscription_status is None


def test_apply_other_subscription_cancel_does_not_hide_active_one(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    apply(ctx, "customer.subscription.created", subscription("sub_new", "cus_a", "active"), T0)

    old_cancel = apply(
        ctx, "customer.subscription.deleted", subscription("sub_old", "cus_a", "canceled"), T0 + 5
    )
    incomplete = apply(
        ctx, "customer.subscription.created", subscription("sub_3", "cus_a", "incomplete"), T0 + 6
    )

    assert (old_cancel.last_error, incomplete.last_error) == (
        "other_subscription",
        "other_subscription",
    )
    assert (user(ctx).stripe_subscription_id, user(ctx).subscription_status) == (
        "sub_new",
        "active",
    )


def test_apply_other_subscription_replaces_an_ended_one(ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    apply(ctx, "customer.subscription.deleted", subscription("sub_old", "cus_a"), T0)

    apply(ctx, "customer.subscription.created", subscription("sub_new", "cus_a", "trialing"), T0)

    assert (user(ctx).stripe_subscription_id, user(ctx).subscription_status) == (
        "sub_new",
        "trialing",
    )


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "customer.deleted", "created": T0, "data": {}}, "no_object"),
        ({"type": "customer.deleted", "created": "x", "data": {"object": {}}}, "no_created"),
        ({"type": "customer.deleted", "created": 2**62, "data": {"object": {}}}, "no_created"),
        ({"type": "customer.deleted", "created": T0, "data": {"object": {"id": 5}}}, "no_customer"),
        (
            {
                "type": "customer.subscription.updated",
                "created": T0,
                "data": {"object": {"customer": "cus_a", "status": "active"}},
            },
            "no_subscription_id",
        ),
        (
            {
                "type": "customer.subscription.updated",
                "created": T0,
                "data": {"object": {"id": "sub_1", "customer": "cus_a", "status": 7}},
            },
            "no_status",
        ),
    ],
)
def test_apply_malformed_event_invalid(ctx, event, reason):
    outcome = run(ctx, event)

    assert (outcome.status, outcome.last_error) == (INVALID, reason)


def test_subscription_status_of_reads_by_clerk_id(app, ctx):
    add_user(ctx, "user_a", stripe_customer_id="cus_a")
    apply(ctx, "customer.subscription.created", subscription("sub_1", "cus_a", "past_due"), T0)

    assert subscription_status_of(db.engine, "user_a") == "past_due"
    assert subscription_status_of(db.engine, "user_nobody") is None
    assert subscription_status_of(db.engine, None) is None


def test_subscription_status_of_database_down_raises_problem(make_app):
    app = make_app(DATABASE_URL=f"postgresql://root:root@127.0.0.1:{free_port()}/nowhere")

    with app.app_context(), pytest.raises(DatabaseUnavailable):
        subscription_status_of(db.engine, "user_a")
