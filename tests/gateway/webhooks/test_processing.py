"""The apply service in-process on PostgreSQL: claims, transient faults, the sweep, Stripe hooks."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text

from gateway.extensions import db
from gateway.jobs import ENSURE_STRIPE_CUSTOMER, MARK_CUSTOMER_DELETED, PUSH_CUSTOMER_CHANGES
from gateway.models import User, WebhookEvent
from gateway.models.base import utcnow
from gateway.webhooks.processing import (
    Outcome,
    claim_event,
    process_webhook_event,
    stripe_follow_ups,
)
from gateway.webhooks.service import record_webhook_event, sweep_webhook_events
from tests.support.svix import clerk_event, encode, new_msg_id, new_user_id
from worker.webhooks import retry_countdown


def store(app, event):
    with app.app_context():
        return record_webhook_event(db.session, new_msg_id(), encode(event))


def row(app, event_id) -> WebhookEvent:
    with app.app_context():
        event = db.session.get(WebhookEvent, event_id)
        db.session.expunge_all()
        return event


def test_process_event_twice_second_finds_nothing_to_claim(app):
    recorded = store(app, clerk_event("user.created", new_user_id(), "once@example.com"))
    with app.app_context():
        first = process_webhook_event(db.session, recorded.id, final_attempt=False)
        second = process_webhook_event(db.session, recorded.id, final_attempt=False)

    assert first.status == "processed"
    assert first.created_or_linked is True
    assert second.status is None
    assert row(app, recorded.id).attempts == 1


@pytest.fixture
def user_lock_held(database_url):
    """Another connection holds a user's advisory lock, as a concurrent writer would."""
    conns = []

    def hold(clerk_user_id):
        # The key derivation of gateway.users.service.lock_clerk_user.
        digest = hashlib.blake2b(clerk_user_id.encode(), digest_size=8).digest()
        conn = psycopg.connect(database_url.replace("+psycopg", ""))
        conns.append(conn)
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest, "big", signed=True),)
        )

    yield hold
    for conn in conns:
        conn.close()


@pytest.mark.parametrize(("final", "status"), [(False, "received"), (True, "failed")])
def test_process_event_transient_error_released_or_failed(app, user_lock_held, final, status):
    user_id = new_user_id()
    recorded = store(app, clerk_event("user.created", user_id, "slow@example.com"))
    user_lock_held(user_id)

    with app.app_context():
        # The lock wait times out: PostgreSQL's LockNotAvailable, an OperationalError.
        db.session.execute(text("SET lock_timeout = '200ms'"))
        db.session.commit()
        with pytest.raises(sa_exc.OperationalError):
            process_webhook_event(db.session, recorded.id, final_attempt=final)
        db.session.execute(text("RESET lock_timeout"))
        db.session.commit()

    event = row(app, recorded.id)
    assert event.status == status
    assert event.attempts == 1
    assert event.last_error == "sqlalchemy.OperationalError"
    assert event.claimed_at is None


def test_retry_countdown_grows_and_stays_far_below_visibility_timeout():
    caps = [max(retry_countdown(n) for _ in range(200)) for n in range(5)]

    assert all(1.0 <= cap <= 2.0 ** (n + 1) for n, cap in enumerate(caps))
    assert caps[4] > caps[0]
    assert sum(2.0 ** (n + 1) for n in range(5)) < 3600 / 10


def test_sweep_requeues_waiting_and_expired_claims_only(app):
    waiting = store(app, clerk_event("user.created", new_user_id(), "w@example.com"))
    fresh = store(app, clerk_event("user.created", new_user_id(), "f@example.com"))
    dead = store(app, clerk_event("user.created", new_user_id(), "d@example.com"))
    live = store(app, clerk_event("user.created", new_user_id(), "l@example.com"))
    done = store(app, clerk_event("user.created", new_user_id(), "p@example.com"))
    in_line = store(app, clerk_event("user.created", new_user_id(), "q@example.com"))
    lost = store(app, clerk_event("user.created", new_user_id(), "o@example.com"))
    now = utcnow()
    with app.app_context():
        for event_id, received_ago, claimed_ago, status in (
            (waiting.id, 60, None, "received"),
            (fresh.id, 5, None, "received"),
            (dead.id, 900, 400, "processing"),
            (live.id, 900, 10, "processing"),
            (done.id, 900, None, "processed"),
            (in_line.id, 900, None, "queued"),  # published 60 s ago: still in the broker's line
            (lost.id, 900, None, "queued"),  # published 400 s ago: its message is lost
        ):
            event = db.session.get(WebhookEvent, event_id)
            event.received_at = now - timedelta(seconds=received_ago)
            event.claimed_at = now - timedelta(seconds=claimed_ago) if claimed_ago else None
            event.status = status
        db.session.get(WebhookEvent, in_line.id).queued_at = now - timedelta(seconds=60)
        db.session.get(WebhookEvent, lost.id).queued_at = now - timedelta(seconds=400)
        db.session.commit()
        published: list[int] = []

        result = sweep_webhook_events(
            db.session, lambda i: published.append(i) or True, older_than_seconds=30, now=now
        )

    assert sorted(published) == sorted([waiting.id, dead.id, lost.id])
    assert (result.reclaimed, result.found, result.enqueued) == (1, 3, 3)
    assert row(app, waiting.id).status == row(app, dead.id).status == "queued"
    assert row(app, lost.id).queued_at > row(app, in_line.id).queued_at
    assert row(app, live.id).status == "processing"
    assert row(app, fresh.id).status == "received"


def test_sweep_broker_down_stops_and_leaves_rows_waiting(app):
    first = store(app, clerk_event("user.created", new_user_id(), "a@example.com"))
    with app.app_context():
        result = sweep_webhook_events(
            db.session, lambda i: False, older_than_seconds=0, now=utcnow() + timedelta(seconds=1)
        )

    assert (result.found, result.enqueued) == (1, 0)
    assert row(app, first.id).status == "received"


def test_claim_after_sweep_reclaim_makes_slow_worker_lose_its_claim(app):
    from gateway.webhooks.processing import apply_claimed_event

    recorded = store(app, clerk_event("user.created", new_user_id(), "lost@example.com"))
    with app.app_context():
        slow_attempt = claim_event(db.session, recorded.id)
        sweep_webhook_events(
            db.session,
            lambda i: True,
            older_than_seconds=0,
            claim_ttl_seconds=0,
            now=utcnow() + timedelta(seconds=1),
        )
        fast = process_webhook_event(db.session, recorded.id, final_attempt=False)
        slow = apply_claimed_event(db.session, recorded.id, slow_attempt)
        users = db.session.scalars(select(User)).all()

    assert fast.status == "processed"
    assert slow.status is None
    assert row(app, recorded.id).attempts == 2
    assert len(users) == 1


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome(1, "processed", 7, True, True, frozenset({"email"})), ENSURE_STRIPE_CUSTOMER),
        (Outcome(1, "processed", 7, True, False, frozenset({"last_name"})), PUSH_CUSTOMER_CHANGES),
        (Outcome(1, "processed", 7, True, False, frozenset({"image_url"})), None),
        (
            Outcome(1, "processed", 7, False, False, frozenset(), deleted=True),
            MARK_CUSTOMER_DELETED,
        ),
        (Outcome(1, "processed", 7, False, True, frozenset({"deleted_at"})), None),  # tombstone
        (Outcome(1, "failed"), None),
    ],
)
def test_stripe_follow_ups_by_outcome(outcome, expected):
    assert stripe_follow_ups(outcome, stripe_enabled=True) == ([(expected, 7)] if expected else [])
    assert stripe_follow_ups(outcome, stripe_enabled=False) == []
