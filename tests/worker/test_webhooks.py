"""The webhook worker, end to end: signed Clerk samples -> the receiver -> Redis -> a real Celery
worker process -> PostgreSQL. Outcomes are read from the database with a deadline."""

from __future__ import annotations

import dataclasses
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from gateway.extensions import db
from gateway.models import User, WebhookEvent
from gateway.users.service import lock_clerk_user
from tests.support.polling import wait_until
from tests.support.processes import free_port, start_redis_server
from tests.support.svix import SECRET, clerk_event, encode, new_msg_id, new_user_id, post_event
from tests.support.svix import sign as sign_headers

FINAL = ("processed", "failed", "ignored", "invalid")
pytestmark = pytest.mark.slow


@pytest.fixture
def app(make_app, worker):
    return make_app(CLERK_WEBHOOK_SECRET=SECRET)


def event_rows(app) -> dict[str, WebhookEvent]:
    with app.app_context():
        rows = db.session.scalars(select(WebhookEvent)).all()
        db.session.expunge_all()
        return {row.svix_id: row for row in rows}


def user_row(app, clerk_user_id) -> User | None:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.clerk_user_id == clerk_user_id))
        db.session.expunge_all()
        return user


def users_count(app) -> int:
    with app.app_context():
        return len(db.session.scalars(select(User)).all())


def send(client, event, msg_id=None):
    msg_id = msg_id or new_msg_id()
    response = post_event(client, event, msg_id)
    assert response.status_code == 200, response.data
    return msg_id


def wait_final(app, *msg_ids, timeout=30.0):
    def done():
        rows = event_rows(app)
        return all(m in rows and rows[m].status in FINAL for m in msg_ids) and rows

    return wait_until(done, timeout)


def test_process_user_created_mirrors_clerk_user(app, client):
    user_id = new_user_id()
    event = clerk_event(
        "user.created",
        user_id,
        "Ada.Lovelace@Example.COM",
        updated_at=1700000000123,
        first_name="Ada",
        last_name="Lovelace",
        public_metadata={"plan": "pro"},
        private_metadata={"stripe": "x"},
        unsafe_metadata={"theme": "dark"},
    )

    msg_id = send(client, event)
    rows = wait_final(app, msg_id)

    assert rows[msg_id].status == "processed"
    assert rows[msg_id].attempts == 1
    assert rows[msg_id].processed_at is not None
    user = user_row(app, user_id)
    assert user.email == "ada.lovelace@example.com"
    assert (user.first_name, user.last_name) == ("Ada", "Lovelace")
    assert user.image_url == event["data"]["image_url"]
    assert user.clerk_public_metadata == {"plan": "pro"}
    assert user.clerk_private_metadata == {"stripe": "x"}
    assert user.clerk_unsafe_metadata == {"theme": "dark"}
    assert round(user.clerk_updated_at.timestamp() * 1000) == 1700000000123
    assert round(user.clerk_created_at.timestamp() * 1000) == event["data"]["created_at"]
    assert user.is_active is True


def test_process_user_with_several_emails_mirrors_the_primary_one(app, client):
    # CONTRACT 4.5: the primary email is the address whose id is primary_email_address_id, not
    # the first one listed; it is stored lower-cased.
    user_id = new_user_id()
    secondary, primary = (
        {
            "id": f"idn_{name}",
            "object": "email_address",
            "email_address": address,
            "verification": {"status": "verified", "strategy": "email_code"},
        }
        for name, address in (("old", "old@example.com"), ("new", "Primary.New@Example.COM"))
    )
    event = clerk_event(
        "user.created",
        user_id,
        email_addresses=[secondary, primary],
        primary_email_address_id="idn_new",
    )

    msg_id = send(client, event)
    rows = wait_final(app, msg_id)

    assert rows[msg_id].status == "processed"
    assert user_row(app, user_id).email == "primary.new@example.com"


def test_process_user_updated_then_deleted_applies_in_turn(app, client):
    user_id = new_user_id()
    created = send(client, clerk_event("user.created", user_id, "u@example.com", updated_at=1000))
    wait_final(app, created)
    updated = send(
        client,
        clerk_event("user.updated", user_id, "new@example.com", updated_at=2000, first_name="N"),
    )
    wait_final(app, updated)
    assert (user_row(app, user_id).email, user_row(app, user_id).first_name) == (
        "new@example.com",
        "N",
    )

    deleted = send(client, clerk_event("user.deleted", user_id))
    rows = wait_final(app, deleted)

    assert rows[deleted].status == "processed"
    user = user_row(app, user_id)
    assert user.is_active is False
    assert user.deleted_at is not None
    assert user.email == "new@example.com"  # soft delete: the row is kept


def test_process_update_before_create_keeps_newest(app, client):
    user_id = new_user_id()
    update = send(client, clerk_event("user.updated", user_id, "late@example.com", updated_at=2000))
    wait_final(app, update)
    create = send(
        client, clerk_event("user.created", user_id, "early@example.com", updated_at=1000)
    )
    rows = wait_final(app, create)

    assert rows[update].status == rows[create].status == "processed"
    assert user_row(app, user_id).email == "late@example.com"
    assert users_count(app) == 1


def test_process_stale_update_changes_nothing_but_is_processed(app, client):
    user_id = new_user_id()
    fresh = send(client, clerk_event("user.updated", user_id, "fresh@example.com", updated_at=5000))
    wait_final(app, fresh)
    stale = send(client, clerk_event("user.updated", user_id, "stale@example.com", updated_at=4000))
    rows = wait_final(app, stale)

    assert rows[stale].status == "processed"
    assert user_row(app, user_id).email == "fresh@example.com"


def test_process_delete_then_late_update_stays_deleted(app, client):
    user_id = new_user_id()
    created = send(client, clerk_event("user.created", user_id, "d@example.com", updated_at=1000))
    wait_final(app, created)
    deleted = send(client, clerk_event("user.deleted", user_id))
    wait_final(app, deleted)
    late = send(client, clerk_event("user.updated", user_id, "back@example.com", updated_at=9000))
    rows = wait_final(app, late)

    assert rows[late].status == "processed"
    user = user_row(app, user_id)
    assert (user.is_active, user.email) == (False, "d@example.com")


def test_process_delete_of_unknown_user_leaves_tombstone(app, client):
    user_id = new_user_id()
    deleted = send(client, clerk_event("user.deleted", user_id))
    wait_final(app, deleted)
    late_create = send(client, clerk_event("user.created", user_id, "z@example.com"))
    rows = wait_final(app, late_create)

    assert rows[deleted].status == rows[late_create].status == "processed"
    user = user_row(app, user_id)
    assert user.is_active is False
    assert user.deleted_at is not None
    assert user.email is None  # the late create did not revive it


def test_process_no_primary_email_fails_without_retry(app, client):
    user_id = new_user_id()
    event = clerk_event("user.created", user_id, primary_email_address_id=None)

    msg_id = send(client, event)
    rows = wait_final(app, msg_id)

    assert rows[msg_id].status == "failed"
    assert rows[msg_id].last_error == "email_required"
    assert rows[msg_id].attempts == 1
    assert user_row(app, user_id) is None


def test_process_user_locked_by_other_writer_waits_while_other_users_flow(app, client):
    # CONTRACT 4.5: events of one user are applied one at a time, in any worker. Another
    # connection holds the user's lock, as a worker applying another event of that user would.
    waiting_user, other_user = new_user_id(), new_user_id()
    with app.app_context():
        holder = Session(db.engine)
        lock_clerk_user(holder, waiting_user)
        try:
            waiting = send(client, clerk_event("user.created", waiting_user, "w@example.com"))
            wait_until(lambda: event_rows(app)[waiting].status == "processing", 20)
            other = send(client, clerk_event("user.created", other_user, "o@example.com"))
            wait_final(app, other)

            assert event_rows(app)[waiting].status == "processing"
            assert user_row(app, waiting_user) is None
        finally:
            holder.rollback()  # ends the transaction: the lock is released
            holder.close()
    rows = wait_final(app, waiting)

    assert rows[other].status == rows[waiting].status == "processed"
    assert rows[waiting].attempts == 1  # it waited; it was not failed and retried
    assert user_row(app, waiting_user).email == "w@example.com"


def test_process_unknown_type_and_invalid_body_never_reach_worker(app, client):
    ignored = send(client, clerk_event("session.created", "sess_1"))
    invalid = send(client, b"definitely not json")
    marker = send(client, clerk_event("user.created", new_user_id(), "m@example.com"))
    rows = wait_final(app, marker)  # the worker got past both

    assert (rows[ignored].status, rows[ignored].attempts) == ("ignored", 0)
    assert (rows[invalid].status, rows[invalid].attempts) == ("invalid", 0)


def test_process_duplicate_sequential_applied_once(app, client):
    user_id = new_user_id()
    event = clerk_event("user.created", user_id, "dup@example.com")
    msg_id = new_msg_id()

    first = post_event(client, event, msg_id)
    second = post_event(client, event, msg_id)
    rows = wait_final(app, msg_id)

    assert (first.json["duplicate"], second.json["duplicate"]) == (False, True)
    assert len(rows) == 1
    assert rows[msg_id].attempts == 1
    assert users_count(app) == 1


def test_process_duplicate_concurrent_through_threaded_server_applied_once(app):
    user_id = new_user_id()
    body = encode(clerk_event("user.created", user_id, "race@example.com"))
    headers = sign_headers(body)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/webhooks/clerk"
    barrier = threading.Barrier(10)

    def deliver(_):
        barrier.wait(5)
        return requests.post(url, data=body, headers=headers, timeout=10)

    try:
        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(deliver, range(10)))
    finally:
        server.shutdown()
    rows = wait_final(app, headers["svix-id"])

    assert [r.status_code for r in responses] == [200] * 10
    assert sorted(r.json()["duplicate"] for r in responses) == [False] + [True] * 9
    assert len(rows) == 1
    assert rows[headers["svix-id"]].attempts == 1
    assert users_count(app) == 1


def test_replay_processed_event_changes_nothing(app, client):
    user_id = new_user_id()
    msg_id = send(client, clerk_event("user.created", user_id, "r@example.com", updated_at=3000))
    wait_final(app, msg_id)
    newer = send(client, clerk_event("user.updated", user_id, "r2@example.com", updated_at=4000))
    wait_final(app, newer)
    app.config["GATEWAY"] = dataclasses.replace(app.config["GATEWAY"], admin_api_keys=("k",))
    applied_at = event_rows(app)[msg_id].processed_at

    response = client.post(
        f"/admin/webhook-events/{msg_id}/replay", headers={"Authorization": "Bearer k"}
    )
    # Applied again (a fresh start: attempts begin anew), and changed nothing.
    rows = wait_until(lambda: (r := event_rows(app))[msg_id].processed_at != applied_at and r, 30)
    rows = wait_final(app, msg_id)

    assert response.status_code == 202
    assert rows[msg_id].status == "processed"
    assert user_row(app, user_id).email == "r2@example.com"


def test_process_new_user_with_stripe_enqueues_billing_task_by_name(
    make_app, worker_factory, tmp_path
):
    # The billing task lives in another module; its name reaching a worker is the contract here.
    # A private Redis, so the module's Stripe-less worker cannot take the event.
    port = free_port()
    redis_proc = start_redis_server(port, tmp_path / "redis.log")
    broker = f"redis://127.0.0.1:{port}/0"
    try:
        stripe_worker = worker_factory(STRIPE_API_KEY="sk_test_webhooks", REDIS_URL=broker)
        app = make_app(CLERK_WEBHOOK_SECRET=SECRET, REDIS_URL=broker)
        msg_id = send(app.test_client(), clerk_event("user.created", new_user_id(), "s@x.com"))
        wait_final(app, msg_id)

        # The startup banner already names the task; only a received one logs "Task <name>[id]".
        received = re.compile(
            r"Task worker\.billing\.ensure_stripe_customer\[[0-9a-f-]+\] received"
        )
        wait_until(
            lambda: received.search(stripe_worker.output()),
            60,
            describe=lambda: stripe_worker.output()[-3000:],
        )
    finally:
        redis_proc.stop()


def test_process_without_stripe_key_enqueues_no_billing_task(app, client, worker):
    msg_id = send(client, clerk_event("user.created", new_user_id(), "n@example.com"))
    wait_final(app, msg_id)

    # The startup banner lists the registered billing tasks; a received one logs "Task <name>[id]".
    received = [line for line in worker.output().splitlines() if "Task worker.billing." in line]
    assert received == []
