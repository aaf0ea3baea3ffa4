"""Organizations end to end: Clerk's signed samples -> the receiver -> Redis -> a real Celery
worker process -> PostgreSQL -> the admin view. Every order of each lifecycle converges.

Each order is a separate organization; the n-th event of every order is sent together, and the
next step waits until all of them are final, so each organization sees exactly its order."""

from __future__ import annotations

import copy
from itertools import permutations
from typing import Any

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import WebhookEvent
from tests.support.organizations import T0, membership_event, new_org_id, org_event
from tests.support.polling import wait_until
from tests.support.processes import start_celery_worker
from tests.support.svix import SECRET, new_msg_id, new_user_id, post_event

ADMIN_KEY = "k" * 40
FINAL = ("processed", "failed", "ignored", "invalid")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(database_url, redis_url, instance_dir, tmp_path_factory):
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GATEWAY_INSTANCE_PATH": str(instance_dir),
    }
    proc = start_celery_worker(env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()


@pytest.fixture
def app(make_app, worker):
    return make_app(CLERK_WEBHOOK_SECRET=SECRET, ADMIN_API_KEYS=ADMIN_KEY)


def statuses(app) -> dict[str, str]:
    with app.app_context():
        return dict(db.session.execute(select(WebhookEvent.svix_id, WebhookEvent.status)).all())


def run_orders(app, client, orders: list[list[dict[str, Any]]]) -> list[str]:
    """Send every order step by step; returns the ledger statuses of all events."""
    sent: list[str] = []
    for step in range(len(orders[0])):
        batch = []
        for order in orders:
            msg_id = new_msg_id()
            assert post_event(client, order[step], msg_id).status_code == 200
            batch.append(msg_id)
        wait_until(lambda b=batch: all(statuses(app).get(m) in FINAL for m in b), timeout=60)
        sent += batch
    final = statuses(app)
    return [final[m] for m in sent]


def admin_view(client, org_id: str) -> dict[str, Any]:
    response = client.get(
        f"/admin/organizations/{org_id}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["organization"]


def for_each_order(events: list[dict[str, Any]]) -> tuple[list[str], list[list[dict]]]:
    """One organization id per permutation of `events` (copies with that id set)."""
    org_ids, orders = [], []
    for order in permutations(events):
        org_id = new_org_id()
        order = copy.deepcopy(list(order))
        for event in order:
            data = event["data"]
            data.get("organization", data)["id"] = org_id
        org_ids.append(org_id)
        orders.append(order)
    return org_ids, orders


def test_worker_organization_lifecycle_in_every_order(app, client):
    org_ids, orders = for_each_order(
        [
            org_event("organization.created", "org_x", T0, name="Acme"),
            org_event("organization.updated", "org_x", T0 + 1000, name="Acme Renamed"),
            org_event("organization.deleted", "org_x"),
        ]
    )

    assert set(run_orders(app, client, orders)) == {"processed"}

    for org_id in org_ids:
        org = admin_view(client, org_id)
        assert org["id"] == org_id
        assert org["is_active"] is False and org["deleted_at"] is not None
        assert org["members"] == []


def test_worker_organization_created_and_updated_in_both_orders(app, client):
    org_ids, orders = for_each_order(
        [
            org_event("organization.created", "org_x", T0, name="Acme"),
            org_event("organization.updated", "org_x", T0 + 1000, name="Acme Renamed"),
        ]
    )

    run_orders(app, client, orders)

    for org_id in org_ids:
        org = admin_view(client, org_id)
        assert (org["name"], org["slug"], org["is_active"]) == ("Acme Renamed", "slug-org_x", True)


def test_worker_membership_events_in_every_order(app, client):
    alice, bob = new_user_id(), new_user_id()
    org_ids, orders = for_each_order(
        [
            # alice: invited as member, promoted to admin
            membership_event("organizationMembership.created", "org_x", alice, "orgmem_a"),
            membership_event(
                "organizationMembership.updated",
                "org_x",
                alice,
                "orgmem_a",
                role="org:admin",
                updated_at=T0 + 1000,
            ),
            # bob: invited, removed, invited again later (a new membership id)
            membership_event("organizationMembership.created", "org_x", bob, "orgmem_b1"),
            membership_event("organizationMembership.deleted", "org_x", bob, "orgmem_b1"),
            membership_event(
                "organizationMembership.created",
                "org_x",
                bob,
                "orgmem_b2",
                role="org:billing",
                created_at=T0 + 60_000,
            ),
        ]
    )
    # 120 orders of 5 events is more than a worker test needs: a spread of 18 (every 7th) runs
    # here; tests/gateway/organizations/test_service.py runs all 120 in process.
    orders, org_ids = orders[::7], org_ids[::7]

    assert set(run_orders(app, client, orders)) == {"processed"}

    for org_id in org_ids:
        members = admin_view(client, org_id)["members"]
        assert sorted(members, key=lambda m: m["role"]) == [
            {"clerk_user_id": alice, "role": "org:admin"},
            {"clerk_user_id": bob, "role": "org:billing"},
        ], org_id


def test_worker_organization_deleted_with_membership_events_in_every_order(app, client):
    user = new_user_id()
    org_ids, orders = for_each_order(
        [
            org_event("organization.created", "org_x"),
            membership_event("organizationMembership.created", "org_x", user),
            org_event("organization.deleted", "org_x"),
        ]
    )

    run_orders(app, client, orders)

    for org_id in org_ids:
        org = admin_view(client, org_id)
        assert org["is_active"] is False and org["members"] == []


def test_worker_organization_event_without_member_is_invalid(app, client):
    event = membership_event("organizationMembership.created", new_org_id(), new_user_id())
    del event["data"]["public_user_data"]

    (status,) = run_orders(app, client, [[event]])

    assert status == "invalid"
    with app.app_context():
        row = db.session.scalar(select(WebhookEvent))
        assert row.last_error == "no_membership_user"
