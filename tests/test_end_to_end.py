"""Across features, as Clerk, Svix and Stripe would drive them: the gateway app takes a signed
webhook or a first login, a real Celery worker process applies it, and the user ends up linked to
exactly one customer in localstripe (a Stripe-compatible server on loopback)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from gateway.extensions import db
from gateway.jobs import QUEUE
from gateway.models import User, WebhookEvent
from tests.support.polling import wait_until
from tests.support.processes import Proc
from tests.support.stripe import TEST_KEY, list_customers
from tests.support.svix import SECRET, clerk_event, new_msg_id, new_user_id, post_event

pytestmark = pytest.mark.slow


@pytest.fixture
def stripe_env(localstripe: str) -> dict[str, str]:
    """Every process of a deployment shares one environment: web and worker both see Stripe."""
    return {"STRIPE_API_KEY": TEST_KEY, "STRIPE_API_BASE": localstripe}


@pytest.fixture
def stripe_worker(worker_factory: Any, stripe_env: dict[str, str]) -> Proc:
    """A real worker process with Stripe linking on, talking to localstripe."""
    return worker_factory(**stripe_env)


def user_row(app: Flask, clerk_user_id: str) -> dict[str, Any] | None:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.clerk_user_id == clerk_user_id))
        row = user.to_admin_dict() if user else None
        db.session.remove()
        return row


def event_statuses(app: Flask) -> dict[str, str]:
    with app.app_context():
        rows = db.session.scalars(select(WebhookEvent)).all()
        statuses = {row.svix_id: row.status for row in rows}
        db.session.remove()
        return statuses


def wait_processed(app: Flask, *msg_ids: str) -> None:
    def done() -> bool:
        statuses = event_statuses(app)
        return all(statuses.get(msg_id) == "processed" for msg_id in msg_ids)

    wait_until(done, timeout=30)


def customers_of(localstripe: str, clerk_user_id: str) -> list[dict[str, Any]]:
    return [
        customer
        for customer in list_customers(localstripe)
        if customer["metadata"].get("clerk_user_id") == clerk_user_id
    ]


def wait_idle(redis_url: str) -> None:
    """Until no message waits in the queue or in a worker (acks_late: a task's message is acked
    only after it ran, and any follow-up it enqueues is published before that ack)."""
    broker = redis.Redis.from_url(redis_url)
    wait_until(lambda: broker.llen(QUEUE) == 0 and broker.hlen("unacked") == 0, timeout=30)


def billing_lines(worker: Proc) -> list[str]:
    """The outcome line each billing task logs, e.g. 'ensure_stripe_customer user=1: created'."""
    lines = []
    for line in worker.output().splitlines():
        try:
            message = json.loads(line).get("msg", "")
        except ValueError:
            continue
        if message.split(" ", 1)[0] in {
            "ensure_stripe_customer",
            "push_customer_changes",
            "mark_customer_deleted",
        }:
            lines.append(message)
    return lines


@pytest.fixture
def deployed_app(make_app: Any, clerk_env: dict[str, str], stripe_env: dict[str, str]) -> Flask:
    """The web process as deployed: Clerk sessions, signed webhooks and Stripe all configured."""
    return make_app(CLERK_WEBHOOK_SECRET=SECRET, **clerk_env, **stripe_env)


def test_clerk_webhooks_created_updated_deleted_mirror_user_and_one_stripe_customer(
    deployed_app, stripe_worker, localstripe, redis_url, auth_headers, clerk_backend
):
    client = deployed_app.test_client()
    clerk_id = new_user_id()

    # Created, delivered three times before the worker is done: Svix's retry of the same message
    # (same svix-id) and a second message carrying the same user (another svix-id).
    created = clerk_event(
        "user.created", clerk_id, "First@Example.com", updated_at=1_700_000_000_000
    )
    created_id, other_id = new_msg_id(), new_msg_id()
    answers = [
        post_event(client, created, created_id),
        post_event(client, created, created_id),
        post_event(client, created, other_id),
    ]
    assert [(a.status_code, a.json["duplicate"]) for a in answers] == [
        (200, False),
        (200, True),
        (200, False),
    ]
    wait_processed(deployed_app, created_id, other_id)
    linked = wait_until(lambda: (user_row(deployed_app, clerk_id) or {}).get("stripe_customer_id"))
    wait_idle(redis_url)

    [customer] = list_customers(localstripe)
    assert customer["id"] == linked
    assert customer["metadata"]["clerk_user_id"] == clerk_id
    assert customer["email"] == "first@example.com"

    # A new primary email reaches the customer.
    updated = clerk_event(
        "user.updated", clerk_id, "Second@Example.com", updated_at=1_700_000_100_000
    )
    updated_id = new_msg_id()
    assert post_event(client, updated, updated_id).status_code == 200
    wait_processed(deployed_app, updated_id)
    wait_until(lambda: list_customers(localstripe)[0]["email"] == "second@example.com")
    assert user_row(deployed_app, clerk_id)["email"] == "second@example.com"
    # The user signs in: found locally (no Backend API call), already linked by the worker.
    login = client.post("/api/v1/auth/login", headers=auth_headers(clerk_id))
    assert login.status_code == 200, login.get_data(as_text=True)
    assert login.json["user"]["stripe_customer_id"] == linked
    assert login.json["user"]["email"] == "second@example.com"

    # Deleted: the user is kept inactive, the customer is kept and marked.
    deleted = clerk_event("user.deleted", clerk_id)
    deleted_id = new_msg_id()
    assert post_event(client, deleted, deleted_id).status_code == 200
    wait_processed(deployed_app, deleted_id)
    marked = wait_until(
        lambda: list_customers(localstripe)[0]["metadata"].get("clerk_deleted_at"), timeout=30
    )
    wait_idle(redis_url)

    user = user_row(deployed_app, clerk_id)
    assert user["is_active"] is False and user["deleted_at"]
    assert user["stripe_customer_id"] == linked
    [customer] = list_customers(localstripe)
    assert customer["id"] == linked and not customer.get("deleted")
    assert customer["metadata"]["clerk_user_id"] == clerk_id
    assert marked
    # A session token still within its minute no longer signs the deleted user in.
    refused = client.post("/api/v1/auth/login", headers=auth_headers(clerk_id))
    assert (refused.status_code, refused.json["code"]) == (403, "user_deactivated")
    assert clerk_backend.user_requests == []
    outcomes = [line.split(": ", 1)[1].split()[0] for line in billing_lines(stripe_worker)]
    assert outcomes.count("created") == 1, billing_lines(stripe_worker)


def test_first_login_with_worker_links_user_to_one_stripe_customer(
    deployed_app, clerk_backend, auth_headers, stripe_worker, localstripe, redis_url
):
    clerk_id = new_user_id()
    clerk_backend.add_user(clerk_id, "Ada@Example.com")
    client = deployed_app.test_client()

    first = client.post("/api/v1/auth/login", headers=auth_headers(clerk_id))
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.json["user"]["stripe_customer_id"] is None  # linked by the worker, after
    linked = wait_until(lambda: (user_row(deployed_app, clerk_id) or {}).get("stripe_customer_id"))
    again = client.post("/api/v1/auth/login", headers=auth_headers(clerk_id))
    wait_idle(redis_url)

    assert again.status_code == 200
    assert again.json["user"]["stripe_customer_id"] == linked
    [customer] = list_customers(localstripe)
    assert customer["id"] == linked
    assert customer["metadata"]["clerk_user_id"] == clerk_id
    assert customer["email"] == "ada@example.com"
    assert len(clerk_backend.user_requests) == 1  # the second login found the user locally


def test_first_login_then_newer_user_created_webhook_one_customer_with_new_name(
    deployed_app, clerk_backend, auth_headers, stripe_worker, localstripe, redis_url
):
    # Clerk sends user.created around sign-up; the first login may well come before it lands.
    # Here the event is newer than what the login fetched (a name was set meanwhile): the login's
    # ensure job and the event's push job race for the same user in a two-process worker.
    app = deployed_app
    client = app.test_client()
    clerk_id = new_user_id()
    clerk_backend.add_user(clerk_id, "grace@example.com")
    later = int(time.time() * 1000) + 60_000

    assert client.post("/api/v1/auth/login", headers=auth_headers(clerk_id)).status_code == 200
    msg_id = new_msg_id()
    event = clerk_event(
        "user.created",
        clerk_id,
        "grace@example.com",
        updated_at=later,
        first_name="Grace",
        last_name="Hopper",
    )
    assert post_event(client, event, msg_id).status_code == 200
    wait_processed(app, msg_id)
    linked = wait_until(lambda: (user_row(app, clerk_id) or {}).get("stripe_customer_id"))
    wait_idle(redis_url)

    [customer] = list_customers(localstripe)
    assert customer["id"] == linked
    assert customer["metadata"]["clerk_user_id"] == clerk_id
    assert customer["name"] == "Grace Hopper"
