"""`flask stripe reconcile|link` against localstripe; --fix through a real Celery worker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.billing.reconcile import DRIFT_KINDS
from gateway.extensions import db
from gateway.models import User
from gateway.users.service import soft_delete_clerk_user
from tests.support.stripe import (
    TEST_KEY,
    add_user,
    create_customer,
    create_free_plan,
    list_customers,
    stripe_call,
    wait_for_lines,
)

OLD = datetime(2020, 1, 1, tzinfo=UTC)
FIXABLE = ("user_without_customer", "customer_deleted", "email_mismatch", "deleted_not_marked")


@pytest.fixture
def stripe_env(localstripe):
    return {"STRIPE_API_KEY": TEST_KEY, "STRIPE_API_BASE": localstripe}


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def drift_counts(output: str) -> dict[str, int]:
    """The summary table: '<kind> <count> <repair...>' after the header line."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and parts[0] in DRIFT_KINDS:
            counts[parts[0]] = int(parts[1])
    return counts


def seed_drift(localstripe: str) -> dict[str, int]:
    """One case of every kind of drift, plus a user and a customer that are in order."""
    ids = {}
    ids["nocust"] = add_user(db.session, "u_nocust")
    # An old user whose customer exists but was never linked (a job that died before the link).
    ids["unlinked"] = add_user(db.session, "u_unlinked", created_at=OLD)
    unlinked = create_customer(localstripe, metadata={"clerk_user_id": "u_unlinked"})
    good = create_customer(
        localstripe, email="u_good@example.com", metadata={"clerk_user_id": "u_good"}
    )
    ids["good"] = add_user(db.session, "u_good", stripe_customer_id=good["id"])
    moved = create_customer(
        localstripe, email="was@example.com", metadata={"clerk_user_id": "u_moved"}
    )
    ids["moved"] = add_user(
        db.session, "u_moved", "now@example.com", stripe_customer_id=moved["id"]
    )
    gone = create_customer(
        localstripe, email="u_gone@example.com", metadata={"clerk_user_id": "u_gone"}
    )
    ids["gone"] = add_user(db.session, "u_gone", stripe_customer_id=gone["id"])
    soft_delete_clerk_user(db.session, "u_gone")
    ids["lost"] = add_user(db.session, "u_lost", stripe_customer_id="cus_deletedinstripe")
    create_customer(localstripe, metadata={"clerk_user_id": "u_ghost"})  # no such user
    create_customer(localstripe, metadata={"clerk_user_id": "u_good"})  # a second for u_good
    create_customer(localstripe, email="shop@example.com")  # not ours: no clerk_user_id
    # A customer.deleted event unlinked this one (CONTRACT 4.11).
    ids["cdel"] = add_user(db.session, "u_cdel", stripe_customer_deleted_at=OLD)
    # A live subscription on a customer linked to no user, and one that is in order.
    create_free_plan(localstripe, "plan_reconcile")
    stray = create_customer(localstripe)
    for owner in (stray["id"], good["id"]):
        stripe_call(
            localstripe, "POST", "/v1/subscriptions",
            customer=owner, **{"items[0][plan]": "plan_reconcile"},
        )  # fmt: skip
    ids["stray_customer"] = stray["id"]  # type: ignore[assignment]
    db.session.commit()
    ids["unlinked_customer"] = unlinked["id"]  # type: ignore[assignment]
    return ids


def test_stripe_reconcile_each_kind_of_drift_found(make_app, stripe_env, localstripe):
    app = make_app(**stripe_env)
    with app.app_context():
        ids = seed_drift(localstripe)
    result = run(app, "stripe", "reconcile")

    assert result.exit_code == 0, result.output
    assert drift_counts(result.output) == {
        "user_without_customer": 2,
        "customer_deleted": 1,
        "email_mismatch": 1,
        "deleted_not_marked": 1,
        "missing_customer": 1,
        "orphan_customer": 1,
        "duplicate_customer": 1,
        "orphan_subscription": 1,
    }
    assert (
        "checked 7 users, 8 customers and 2 live subscriptions (2 without metadata.clerk_user_id"
        in result.output
    )
    assert "customer_deleted: user u_cdel customer - (deleted at 2020-01-01T00:00:00Z)" in (
        result.output
    )
    assert f"orphan_subscription: user - customer {ids['stray_customer']} (sub_" in result.output
    assert f"unlinked customer exists: {ids['unlinked_customer']}" in result.output
    assert "user u_ghost" in result.output
    assert "cus_deletedinstripe" in result.output
    assert "was@example.com" not in result.output  # ids only, never emails


@pytest.mark.slow
def test_stripe_reconcile_fix_repairs_fixable_drift(
    make_app, worker_factory, stripe_env, localstripe
):
    app = make_app(**stripe_env)
    with app.app_context():
        ids = seed_drift(localstripe)
    worker = worker_factory(**stripe_env)
    result = run(app, "stripe", "reconcile", "--fix")
    assert result.exit_code == 0, result.output
    assert "fix: 5 jobs queued, 0 not queued" in result.output

    wait_for_lines(worker, f"ensure_stripe_customer user={ids['nocust']}: created")
    wait_for_lines(worker, f"ensure_stripe_customer user={ids['unlinked']}: found")
    wait_for_lines(worker, f"push_customer_changes user={ids['moved']}: updated")
    wait_for_lines(worker, f"mark_customer_deleted user={ids['gone']}: marked")
    wait_for_lines(worker, f"ensure_stripe_customer user={ids['cdel']}: created")
    after = run(app, "stripe", "reconcile")

    counts = drift_counts(after.output)
    assert {kind: counts[kind] for kind in FIXABLE} == dict.fromkeys(FIXABLE, 0), after.output
    # What needs an operator is left alone: nothing is deleted or relinked behind their back.
    assert (counts["missing_customer"], counts["orphan_customer"]) == (1, 1)
    assert (counts["duplicate_customer"], counts["orphan_subscription"]) == (1, 1)
    with app.app_context():
        assert db.session.get(User, ids["unlinked"]).stripe_customer_id == ids["unlinked_customer"]
    by_id = {c["id"]: c for c in list_customers(localstripe)}
    with app.app_context():
        moved = db.session.get(User, ids["moved"])
        assert by_id[moved.stripe_customer_id]["email"] == "now@example.com"


def test_stripe_reconcile_without_key_exits_nonzero(make_app):
    result = run(make_app(), "stripe", "reconcile")

    assert result.exit_code == 1
    assert "STRIPE_API_KEY is not set" in result.output


def test_stripe_reconcile_stripe_refuses_key_exits_nonzero(make_app, httpserver):
    httpserver.expect_request("/v1/customers").respond_with_json(
        {"error": {"type": "invalid_request_error", "message": "bad key"}}, status=401
    )
    app = make_app(
        STRIPE_API_KEY="sk_test_wrong", STRIPE_API_BASE=httpserver.url_for("").rstrip("/")
    )
    result = run(app, "stripe", "reconcile")

    assert result.exit_code == 1
    assert "stripe_request_failed" in result.output
    assert "AuthenticationError" in result.output


def test_stripe_link_free_customer_linked(make_app, stripe_env, localstripe):
    app = make_app(**stripe_env)
    customer = create_customer(localstripe, email="legacy@example.com")
    with app.app_context():
        user_id = add_user(db.session, "u_link")
    result = run(app, "stripe", "link", "u_link", customer["id"])

    assert result.exit_code == 0, result.output
    assert f"linked: u_link -> {customer['id']}" in result.output
    with app.app_context():
        assert db.session.get(User, user_id).stripe_customer_id == customer["id"]


def test_stripe_link_customer_of_other_user_refused(make_app, stripe_env, localstripe):
    app = make_app(**stripe_env)
    customer = create_customer(localstripe, metadata={"clerk_user_id": "u_a"})
    with app.app_context():
        add_user(db.session, "u_a", stripe_customer_id=customer["id"])
        other = add_user(db.session, "u_b")
    result = run(app, "stripe", "link", "u_b", customer["id"])

    assert result.exit_code == 1
    assert "stripe_customer_already_linked" in result.output
    with app.app_context():
        assert db.session.get(User, other).stripe_customer_id is None


def test_stripe_link_user_already_linked_needs_replace(make_app, stripe_env, localstripe):
    app = make_app(**stripe_env)
    first = create_customer(localstripe, metadata={"clerk_user_id": "u_c"})
    second = create_customer(localstripe)
    with app.app_context():
        user_id = add_user(db.session, "u_c", stripe_customer_id=first["id"])
    refused = run(app, "stripe", "link", "u_c", second["id"])
    replaced = run(app, "stripe", "link", "u_c", second["id"], "--replace")

    assert refused.exit_code == 1
    assert "stripe_user_already_linked" in refused.output
    assert replaced.exit_code == 0, replaced.output
    with app.app_context():
        assert db.session.get(User, user_id).stripe_customer_id == second["id"]


def test_stripe_link_unknown_user_exits_nonzero(make_app, stripe_env):
    result = run(make_app(**stripe_env), "stripe", "link", "u_nobody", "cus_x")

    assert result.exit_code == 1
    assert "user_not_found" in result.output
