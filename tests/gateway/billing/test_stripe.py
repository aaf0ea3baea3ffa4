"""The Stripe service against localstripe (a real Stripe-compatible server) on loopback."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from gateway.billing.client import client_from_config
from gateway.billing.customers import (
    Outcome,
    ensure_stripe_customer,
    mark_customer_deleted,
    push_customer_changes,
)
from gateway.billing.link import link_user_to_stripe_customer
from gateway.billing.problems import StripeCustomerAlreadyLinked, StripeCustomerNotFound
from gateway.extensions import db
from gateway.models import User
from gateway.users.service import soft_delete_clerk_user
from tests.support.stripe import TEST_KEY, add_user, create_customer, list_customers


@pytest.fixture
def stripe_app(make_app, localstripe):
    return make_app(STRIPE_API_KEY=TEST_KEY, STRIPE_API_BASE=localstripe)


def client_for(app):
    return client_from_config(app.config["GATEWAY"])


def test_ensure_stripe_customer_new_user_creates_linked_customer(stripe_app, localstripe):
    with stripe_app.app_context():
        user_id = add_user(
            db.session, "user_new", "new@example.com", first_name="Ada", last_name="L"
        )
        outcome = ensure_stripe_customer(db.session, client_for(stripe_app), user_id)
        user = db.session.get(User, user_id)

    customers = list_customers(localstripe)
    assert outcome.status == "created"
    assert [c["id"] for c in customers] == [outcome.customer_id]
    assert user.stripe_customer_id == outcome.customer_id
    assert customers[0]["email"] == "new@example.com"
    assert customers[0]["name"] == "Ada L"
    assert customers[0]["metadata"] == {"clerk_user_id": "user_new"}


def test_ensure_stripe_customer_run_twice_keeps_one_customer(stripe_app, localstripe):
    with stripe_app.app_context():
        user_id = add_user(db.session, "user_twice")
        first = ensure_stripe_customer(db.session, client_for(stripe_app), user_id)
        second = ensure_stripe_customer(db.session, client_for(stripe_app), user_id)

    assert (first.status, second.status) == ("created", "already_linked")
    assert second.customer_id == first.customer_id
    assert len(list_customers(localstripe)) == 1


def test_ensure_stripe_customer_ten_threads_one_user_link_exactly_one_customer(
    stripe_app, localstripe
):
    with stripe_app.app_context():
        user_id = add_user(db.session, "user_race")
    barrier = threading.Barrier(10)
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []

    def job() -> None:
        # One app context per thread, as a worker process has: each gets its own db.session.
        with stripe_app.app_context():
            barrier.wait(timeout=10)
            try:
                outcomes.append(ensure_stripe_customer(db.session, client_for(stripe_app), user_id))
            except BaseException as exc:
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=job) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(o.status for o in outcomes) == ["already_linked"] * 9 + ["created"]
    customers = list_customers(localstripe)
    assert len(customers) == 1
    assert {o.customer_id for o in outcomes} == {customers[0]["id"]}
    with stripe_app.app_context():
        assert db.session.get(User, user_id).stripe_customer_id == customers[0]["id"]


def test_ensure_stripe_customer_inactive_user_creates_nothing(stripe_app, localstripe):
    with stripe_app.app_context():
        user_id = add_user(db.session, "user_gone")
        soft_delete_clerk_user(db.session, "user_gone")
        db.session.commit()
        outcome = ensure_stripe_customer(db.session, client_for(stripe_app), user_id)

    assert outcome.status == "skipped_inactive"
    assert list_customers(localstripe) == []


def test_ensure_stripe_customer_old_user_reuses_existing_customer(stripe_app, localstripe):
    # Past the idempotency window a create would duplicate: the lookup (here the list fallback,
    # localstripe has no search endpoint) finds the customer an earlier attempt made.
    existing = create_customer(
        localstripe, email="old@example.com", metadata={"clerk_user_id": "u_old"}
    )
    create_customer(localstripe, email="other@example.com", metadata={"clerk_user_id": "u_other"})
    with stripe_app.app_context():
        user_id = add_user(
            db.session, "u_old", "old@example.com", created_at=datetime(2020, 1, 1, tzinfo=UTC)
        )
        outcome = ensure_stripe_customer(db.session, client_for(stripe_app), user_id)

    assert outcome == Outcome("found", existing["id"])
    assert len(list_customers(localstripe)) == 2


def test_push_customer_changes_changed_email_and_name_reach_customer(stripe_app, localstripe):
    with stripe_app.app_context():
        user_id = add_user(db.session, "user_mail", "before@example.com", first_name="A")
        linked = ensure_stripe_customer(db.session, client_for(stripe_app), user_id)
        user = db.session.get(User, user_id)
        user.email, user.first_name, user.last_name = "after@example.com", "B", "C"
        db.session.commit()
        outcome = push_customer_changes(db.session, client_for(stripe_app), user_id)

    (customer,) = list_customers(localstripe)
    assert outcome == Outcome("updated", linked.customer_id)
    assert (customer["email"], customer["name"]) == ("after@example.com", "B C")


def test_push_customer_changes_unlinked_user_gets_customer(stripe_app, localstripe):
    with stripe_app.app_context():
        user_id = add_user(db.session, "user_late", "late@example.com")
        outcome = push_customer_changes(db.session, client_for(stripe_app), user_id)

    (customer,) = list_customers(localstripe)
    assert outcome == Outcome("created", customer["id"])
    assert customer["email"] == "late@example.com"


def test_mark_customer_deleted_deleted_user_customer_kept_and_marked(stripe_app, localstripe):
    with stripe_app.app_context():
        user_id = add_user(db.session, "user_del")
        linked = ensure_stripe_customer(db.session, client_for(stripe_app), user_id)
        soft_delete_clerk_user(db.session, "user_del")
        db.session.commit()
        outcome = mark_customer_deleted(db.session, client_for(stripe_app), user_id)
        deleted_at = db.session.get(User, user_id).deleted_at

    (customer,) = list_customers(localstripe)
    assert outcome == Outcome("marked", linked.customer_id)
    assert customer["id"] == linked.customer_id
    assert customer["metadata"]["clerk_user_id"] == "user_del"
    marked = datetime.fromisoformat(customer["metadata"]["clerk_deleted_at"])
    assert marked == deleted_at


def test_mark_customer_deleted_active_user_changes_nothing(stripe_app, localstripe):
    with stripe_app.app_context():
        user_id = add_user(db.session, "user_alive")
        ensure_stripe_customer(db.session, client_for(stripe_app), user_id)
        outcome = mark_customer_deleted(db.session, client_for(stripe_app), user_id)

    (customer,) = list_customers(localstripe)
    assert outcome.status == "skipped_active"
    assert "clerk_deleted_at" not in customer["metadata"]


def test_link_user_to_stripe_customer_unowned_customer_linked_and_tagged(stripe_app, localstripe):
    customer = create_customer(localstripe, email="legacy@example.com")
    with stripe_app.app_context():
        user_id = add_user(db.session, "user_legacy")
        user = db.session.get(User, user_id)
        outcome = link_user_to_stripe_customer(
            db.session, client_for(stripe_app), user, customer["id"]
        )
        stored = db.session.get(User, user_id).stripe_customer_id

    assert outcome == Outcome("linked", customer["id"])
    assert stored == customer["id"]
    assert list_customers(localstripe)[0]["metadata"] == {"clerk_user_id": "user_legacy"}


def test_link_user_to_stripe_customer_customer_of_other_user_refused(stripe_app, localstripe):
    with stripe_app.app_context():
        owner_id = add_user(db.session, "user_owner")
        taken = ensure_stripe_customer(db.session, client_for(stripe_app), owner_id)
        other = db.session.get(User, add_user(db.session, "user_thief"))
        with pytest.raises(StripeCustomerAlreadyLinked) as refused:
            link_user_to_stripe_customer(
                db.session, client_for(stripe_app), other, taken.customer_id
            )
        assert db.session.get(User, other.id).stripe_customer_id is None

    assert refused.value.code == "stripe_customer_already_linked"


def test_link_user_to_stripe_customer_metadata_names_other_clerk_user_refused(
    stripe_app, localstripe
):
    customer = create_customer(localstripe, metadata={"clerk_user_id": "user_elsewhere"})
    with stripe_app.app_context():
        user = db.session.get(User, add_user(db.session, "user_here"))
        with pytest.raises(StripeCustomerAlreadyLinked):
            link_user_to_stripe_customer(db.session, client_for(stripe_app), user, customer["id"])


def test_link_user_to_stripe_customer_unknown_customer_not_found(stripe_app, localstripe):
    with stripe_app.app_context():
        user = db.session.get(User, add_user(db.session, "user_x"))
        with pytest.raises(StripeCustomerNotFound):
            link_user_to_stripe_customer(
                db.session, client_for(stripe_app), user, "cus_doesnotexist"
            )


def test_client_from_config_without_key_is_none(make_config):
    assert client_from_config(make_config()) is None
