"""The one rule for what follows a user change, and the sweep that makes it durable."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.billing.follow_ups import (
    SWEEP_GRACE,
    SWEEP_INTERVAL,
    send_follow_ups,
    sweep_users_without_customer,
)
from gateway.extensions import db
from gateway.jobs import ENSURE_STRIPE_CUSTOMER, PUSH_CUSTOMER_CHANGES
from gateway.models import User
from gateway.models.base import utcnow


class Broker:
    """Records what was enqueued; `up` False refuses everything, as a stopped Redis does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.up = True

    def __call__(self, task: str, user_id: int) -> bool:
        if self.up:
            self.sent.append((task, user_id))
        return self.up


def add_user(clerk_id: str, created_at: datetime, **fields: object) -> int:
    user = User(clerk_user_id=clerk_id, email=f"{clerk_id}@example.com", created_at=created_at)
    for name, value in fields.items():
        setattr(user, name, value)
    db.session.add(user)
    db.session.commit()
    return user.id


@pytest.fixture
def stripe_app(make_app):
    return make_app(STRIPE_API_KEY="sk_test_follow_ups")


def test_sweep_users_without_customer_enqueues_each_waiting_user_once_per_interval(stripe_app):
    now = utcnow()
    old = now - SWEEP_GRACE - timedelta(seconds=1)
    later = now + SWEEP_INTERVAL + timedelta(seconds=1)
    with stripe_app.app_context():
        waiting = add_user("user_waiting", old)
        add_user("user_linked", old, stripe_customer_id="cus_linked")
        add_user("user_new", later)  # created just now at every sweep: the direct path's turn
        add_user("user_inactive", old, is_active=False)
        add_user("user_deleted", old, deleted_at=now)
        add_user("user_customer_deleted", old, stripe_customer_deleted_at=now)  # operator's call
        config = stripe_app.config["GATEWAY"]
        broker = Broker()

        assert sweep_users_without_customer(db.session(), broker, config, now) == 1
        assert (
            sweep_users_without_customer(db.session(), broker, config, now + timedelta(minutes=1))
            == 0
        )
        assert sweep_users_without_customer(db.session(), broker, config, later) == 1

    assert broker.sent == [(ENSURE_STRIPE_CUSTOMER, waiting)] * 2


def test_sweep_users_without_customer_broker_down_asks_again_next_sweep(stripe_app):
    now = utcnow()
    with stripe_app.app_context():
        waiting = add_user("user_waiting", now - SWEEP_GRACE - timedelta(seconds=1))
        config = stripe_app.config["GATEWAY"]
        broker = Broker()
        broker.up = False
        assert sweep_users_without_customer(db.session(), broker, config, now) == 0
        broker.up = True
        assert sweep_users_without_customer(db.session(), broker, config, now) == 1

    assert broker.sent == [(ENSURE_STRIPE_CUSTOMER, waiting)]


def test_sweep_users_without_customer_without_stripe_key_enqueues_nothing(app):
    now = utcnow()
    with app.app_context():
        add_user("user_waiting", now - SWEEP_GRACE - timedelta(seconds=1))
        broker = Broker()
        assert sweep_users_without_customer(db.session(), broker, app.config["GATEWAY"], now) == 0
    assert broker.sent == []


def test_send_follow_ups_reports_a_refused_job_and_still_sends_the_rest():
    broker = Broker()
    refused = iter([False, True])

    def flaky(task: str, user_id: int) -> bool:
        return next(refused) and broker(task, user_id)

    jobs = [(ENSURE_STRIPE_CUSTOMER, 1), (PUSH_CUSTOMER_CHANGES, 2)]
    assert send_follow_ups(flaky, jobs) is False
    assert broker.sent == [(PUSH_CUSTOMER_CHANGES, 2)]
