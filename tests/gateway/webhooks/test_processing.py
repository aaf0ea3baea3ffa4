"""The batch apply service in-process on PostgreSQL: claims and leases, ordering keys, exhausted
attempts, transient and permanent faults, the sweep, and the Stripe follow-ups."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text, update

from gateway.billing.follow_ups import stripe_follow_ups
from gateway.extensions import db
from gateway.jobs import (
    APPLY_TIME_LIMIT_SECONDS,
    CLAIM_LEASE_SECONDS,
    ENSURE_STRIPE_CUSTOMER,
    MARK_CUSTOMER_DELETED,
    PUSH_CUSTOMER_CHANGES,
)
from gateway.models import User, WebhookEvent
from gateway.models.base import utcnow
from gateway.users.service import UpsertResult
from gateway.webhooks.claims import claim_batch
from gateway.webhooks.processing import DrainResult, apply_batch, drain
from gateway.webhooks.service import record_webhook_event
from gateway.webhooks.sweep import sweep_webhook_events
from tests.support.svix import clerk_event, encode, new_msg_id, new_user_id
from worker.backoff import backoff_seconds
from worker.webhooks import BACKOFF_CAP_SECONDS, MAX_RETRIES


def store(app, event) -> int:
    with app.app_context():
        return record_webhook_event(db.session, new_msg_id(), encode(event)).id


def row(app, event_id) -> WebhookEvent:
    with app.app_context():
        event = db.session.get(WebhookEvent, event_id)
        db.session.expunge_all()
        return event


def run_drain(app, **kwargs) -> tuple[DrainResult, list]:
    follow_ups: list = []
    with app.app_context():
        result = drain(db.session, app.config["GATEWAY"], follow_ups.extend, **kwargs)
    return result, follow_ups


def claim(app, limit=100, max_attempts=8, now=None):
    with app.app_context():
        claimed, exhausted = claim_batch(
            db.session, limit=limit, max_attempts=max_attempts, now=now
        )
        return claimed, exhausted


def set_row(app, event_id, **values):
    with app.app_context():
        db.session.execute(update(WebhookEvent).where(WebhookEvent.id == event_id).values(values))
        db.session.commit()


def test_drain_applies_each_event_once_second_drain_finds_nothing(app):
    user_ids = [new_user_id() for _ in range(5)]
    ids = [store(app, clerk_event("user.created", u, f"{u}@example.com")) for u in user_ids]

    first, _ = run_drain(app)
    second, _ = run_drain(app)

    assert first.statuses == {"processed": 5}
    assert second.applied == 0
    assert all(row(app, i).attempts == 1 and row(app, i).status == "processed" for i in ids)
    with app.app_context():
        assert sorted(db.session.scalars(select(User.clerk_user_id))) == sorted(user_ids)


def test_drain_small_batches_apply_users_events_in_order(app):
    user_id = new_user_id()
    for stamp in (1000, 2000, 3000):
        store(app, clerk_event("user.updated", user_id, f"v{stamp}@example.com", updated_at=stamp))

    result, _ = run_drain(app, batch_size=1)

    assert result.statuses == {"processed": 3}
    with app.app_context():
        user = db.session.scalar(select(User).where(User.clerk_user_id == user_id))
        assert user.email == "v3000@example.com"


def test_claim_skips_keys_another_claim_holds_and_takes_other_keys(app):
    ada, bob, cy = new_user_id(), new_user_id(), new_user_id()
    ada_1 = store(app, clerk_event("user.created", ada, "a1@example.com", updated_at=1))
    bob_1 = store(app, clerk_event("user.created", bob, "b1@example.com", updated_at=1))

    first, _ = claim(app)
    ada_2 = store(app, clerk_event("user.updated", ada, "a2@example.com", updated_at=2))
    cy_1 = store(app, clerk_event("user.created", cy, "c1@example.com", updated_at=1))
    second, _ = claim(app)

    assert [c.event.id for c in first] == [ada_1, bob_1]
    # Ada's next event waits while her first is held: one at a time per user, in order.
    assert [c.event.id for c in second] == [cy_1]
    assert row(app, ada_2).status == "received"
    assert (first[0].event.ordering_key, first[0].attempt) == (ada, 1)


def test_claim_takes_an_event_claimed_before_alone_and_holds_back_its_key(app):
    ada, bob = new_user_id(), new_user_id()
    suspect = store(app, clerk_event("user.created", ada, "a@example.com", updated_at=1))
    ada_later = store(app, clerk_event("user.updated", ada, "a2@example.com", updated_at=2))
    bob_1 = store(app, clerk_event("user.created", bob, "b@example.com"))
    set_row(app, suspect, attempts=3)  # it killed its worker three times, say

    alone, _ = claim(app)
    rest, _ = claim(app)

    assert [c.event.id for c in alone] == [suspect]
    assert [c.event.id for c in rest] == [bob_1]  # ada's later event waits behind the suspect
    assert row(app, ada_later).status == "received"


def test_claim_takes_events_of_a_dead_batch_ten_at_a_time_apart_from_fresh_ones(app):
    dead = [
        store(app, clerk_event("user.created", new_user_id(), f"d{n}@x.com")) for n in range(12)
    ]
    fresh = store(app, clerk_event("user.created", new_user_id(), "f@x.com"))
    for event_id in dead:
        set_row(app, event_id, attempts=1)  # their worker died mid-batch once

    first, _ = claim(app)
    second, _ = claim(app)
    third, _ = claim(app)

    assert [c.event.id for c in first] == dead[:10]
    assert [c.event.id for c in second] == dead[10:]
    assert [c.event.id for c in third] == [fresh]


def test_claim_after_max_attempts_fails_the_event_attempts_exhausted(app):
    event_id = store(app, clerk_event("user.created", new_user_id(), "x@example.com"))
    set_row(app, event_id, attempts=8)

    claimed, exhausted = claim(app, max_attempts=8)

    assert (claimed, exhausted) == ([], 1)
    event = row(app, event_id)
    assert (event.status, event.last_error, event.attempts) == ("failed", "attempts_exhausted", 8)


def test_claim_lease_follows_the_task_time_limit(app):
    assert CLAIM_LEASE_SECONDS > APPLY_TIME_LIMIT_SECONDS  # a live worker never outlives it
    assert CLAIM_LEASE_SECONDS <= 45  # so a dead worker's events apply within the minute
    event_id = store(app, clerk_event("user.created", new_user_id(), "l@example.com"))
    [held], _ = claim(app)
    just_before = utcnow() + timedelta(seconds=CLAIM_LEASE_SECONDS - 5)
    after = utcnow() + timedelta(seconds=CLAIM_LEASE_SECONDS + 1)

    assert claim(app, now=just_before) == ([], 0)
    [again], _ = claim(app, now=after)

    assert (held.event.id, again.event.id) == (event_id, event_id)
    assert (held.attempt, again.attempt) == (1, 2)


def test_slow_worker_whose_lease_was_taken_over_applies_nothing(app):
    event_id = store(app, clerk_event("user.created", new_user_id(), "slow@example.com"))
    slow, _ = claim(app)
    fast, _ = claim(app, now=utcnow() + timedelta(seconds=CLAIM_LEASE_SECONDS + 1))
    config = app.config["GATEWAY"]

    with app.app_context():
        fast_result, slow_result = DrainResult(), DrainResult()
        apply_batch(db.session, fast, config, fast_result)
        apply_batch(db.session, slow, config, slow_result)
        users = db.session.scalars(select(User)).all()

    assert (fast_result.applied, slow_result.applied) == (1, 0)
    assert row(app, event_id).attempts == 2
    assert len(users) == 1


@pytest.fixture
def user_lock_held(database_url):
    """Another connection holds a user's advisory lock, as a login writing that user would."""
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


def test_transient_error_gives_claims_back_and_propagates(app, user_lock_held):
    user_id = new_user_id()
    event_id = store(app, clerk_event("user.created", user_id, "slow@example.com"))
    user_lock_held(user_id)

    with app.app_context():
        # The lock wait times out: PostgreSQL's LockNotAvailable, an OperationalError.
        db.session.execute(text("SET lock_timeout = '200ms'"))
        db.session.commit()
        with pytest.raises(sa_exc.OperationalError):
            drain(db.session, app.config["GATEWAY"], lambda jobs: None)
        db.session.execute(text("RESET lock_timeout"))
        db.session.commit()

    event = row(app, event_id)
    assert (event.status, event.attempts, event.claimed_at) == ("received", 1, None)
    assert event.last_error == "sqlalchemy.OperationalError"


def test_one_bad_event_fails_alone_the_rest_of_its_batch_applies(app):
    good = [store(app, clerk_event("user.created", new_user_id(), f"g{n}@x.com")) for n in range(3)]
    # Longer than users.first_name (255): refused as not storable (CONTRACT 6: never a database
    # error), a fact about this event alone.
    bad = store(app, clerk_event("user.created", new_user_id(), "bad@x.com", first_name="n" * 300))

    result, _ = run_drain(app)

    assert result.statuses == {"processed": 3, "invalid": 1}
    assert [row(app, i).status for i in good] == ["processed"] * 3
    refused = row(app, bad)
    assert (refused.status, refused.last_error) == ("invalid", "not_a_user")


def test_drain_stops_at_its_budget_and_says_more_is_waiting(app):
    for n in range(3):
        store(app, clerk_event("user.created", new_user_id(), f"b{n}@example.com"))
    ticks = iter(range(100))

    result, _ = run_drain(app, batch_size=1, budget_seconds=1, clock=lambda: next(ticks))

    assert (result.applied, result.more) == (1, True)


def test_drain_follow_ups_only_with_stripe_key(make_app):
    app = make_app(STRIPE_API_KEY="sk_test_follow_ups")
    event_id = store(app, clerk_event("user.created", new_user_id(), "s@example.com"))

    _, follow_ups = run_drain(app)

    assert follow_ups == [(ENSURE_STRIPE_CUSTOMER, 1)]
    assert row(app, event_id).status == "processed"


def test_sweep_wakes_once_for_old_waiting_events_and_gives_back_expired_claims(app):
    now = utcnow()
    old = store(app, clerk_event("user.created", new_user_id(), "o@example.com"))
    lost = store(app, clerk_event("user.created", new_user_id(), "q@example.com"))
    fresh = store(app, clerk_event("user.created", new_user_id(), "f@example.com"))
    dead = store(app, clerk_event("user.created", new_user_id(), "d@example.com"))
    live = store(app, clerk_event("user.created", new_user_id(), "l@example.com"))
    set_row(app, old, received_at=now - timedelta(seconds=60))
    set_row(app, lost, status="queued", queued_at=now - timedelta(seconds=60))
    set_row(app, dead, status="processing", claimed_at=now - timedelta(seconds=400), attempts=1)
    set_row(app, live, status="processing", claimed_at=now - timedelta(seconds=5), attempts=1)
    wakes: list[bool] = []

    with app.app_context():
        result = sweep_webhook_events(
            db.session, lambda: wakes.append(True) or True, older_than_seconds=30, now=now
        )

    assert len(wakes) == 1  # one wake-up however many events wait
    assert (result.reclaimed, result.found, result.enqueued) == (1, 3, 3)
    assert row(app, old).status == row(app, dead).status == "queued"
    assert row(app, dead).attempts == 1  # counted when claimed, not when given back
    assert row(app, live).status == "processing"
    assert row(app, fresh).status == "received"


def test_sweep_nothing_waiting_publishes_nothing(app):
    store(app, clerk_event("user.created", new_user_id(), "n@example.com"))
    with app.app_context():
        result = sweep_webhook_events(db.session, lambda: pytest.fail("woke"), 30)
    assert result.found == 0


def test_sweep_broker_down_leaves_rows_waiting(app):
    event_id = store(app, clerk_event("user.created", new_user_id(), "a@example.com"))
    with app.app_context():
        result = sweep_webhook_events(
            db.session, lambda: False, older_than_seconds=0, now=utcnow() + timedelta(seconds=1)
        )

    assert (result.found, result.enqueued) == (1, 0)
    assert row(app, event_id).status == "received"


def test_webhook_retry_backoff_grows_and_stays_far_below_visibility_timeout():
    delays = [[backoff_seconds(n, BACKOFF_CAP_SECONDS) for _ in range(200)] for n in range(5)]

    assert all(2.0**n <= min(d) and max(d) <= 2.0 ** (n + 1) for n, d in enumerate(delays))
    assert max(delays[4]) > max(delays[0])
    worst = sum(min(BACKOFF_CAP_SECONDS, 2.0 ** (n + 1)) for n in range(MAX_RETRIES))
    assert worst < 3600 / 10


@pytest.mark.parametrize(
    ("result", "deleted", "expected"),
    [
        (dict(created=True, changed=frozenset({"email"})), False, ENSURE_STRIPE_CUSTOMER),
        (dict(linked=True), False, ENSURE_STRIPE_CUSTOMER),
        (dict(changed=frozenset({"last_name"})), False, PUSH_CUSTOMER_CHANGES),
        (dict(changed=frozenset({"image_url"})), False, None),
        (dict(skipped="stale"), False, None),
        (dict(changed=frozenset({"is_active", "deleted_at"})), True, MARK_CUSTOMER_DELETED),
        (dict(created=True, changed=frozenset({"deleted_at"})), True, None),  # tombstone
    ],
)
def test_stripe_follow_ups_by_outcome(make_config, result, deleted, expected):
    user = User(id=7, clerk_user_id="user_7", is_active=not deleted)
    upsert = UpsertResult(user, **result)
    with_key = make_config(STRIPE_API_KEY="sk_test_x")

    assert stripe_follow_ups(upsert, with_key, deleted) == (((expected, 7),) if expected else ())
    assert stripe_follow_ups(upsert, dataclasses.replace(with_key, stripe_api_key=None)) == ()


@pytest.mark.parametrize(
    "data",
    [
        {"first_name": "F" * 300},
        {"last_name": "L" * 256},
        {"updated_at": 10**18},  # milliseconds past year 9999: no datetime holds it
        {"image_url": "https://x/\U0001f600"},
    ],
    ids=["first_name_300", "last_name_256", "updated_at_year_31_million", "fine_non_ascii_url"],
)
def test_process_user_event_with_over_length_field_is_invalid_not_retried(app, data):
    """Over-length fields are an `invalid` event, never a database error retried until failed.
    (NUL and unpaired surrogates never get this far: the ledger stores such a body invalid.)"""
    event_id = store(app, clerk_event("user.created", new_user_id(), "long@example.com", **data))
    result, _ = run_drain(app)
    with app.app_context():
        users = db.session.scalars(select(User.clerk_user_id)).all()

    if "image_url" in data:  # the control: long enough checks, nothing refused that fits
        assert result.statuses == {"processed": 1} and len(users) == 1
        return
    assert result.statuses == {"invalid": 1} and users == []
    event = row(app, event_id)
    assert (event.status, event.last_error, event.attempts) == ("invalid", "not_a_user", 1)
