"""Stripe tasks through a real Celery worker process, against localstripe or a recording server."""

from __future__ import annotations

import json

import pytest
from werkzeug import Request, Response

from gateway.extensions import db
from gateway.jobs import (
    ENSURE_STRIPE_CUSTOMER,
    MARK_CUSTOMER_DELETED,
    PUSH_CUSTOMER_CHANGES,
    enqueue,
)
from gateway.models import User
from gateway.users.service import soft_delete_clerk_user
from tests.support.stripe import (
    TEST_KEY,
    add_user,
    customer_json,
    list_customers,
    log_lines,
    stripe_error,
    wait_for_lines,
)

pytestmark = pytest.mark.slow


def outcome_of(line: str) -> str:
    """'ensure_stripe_customer user=3: created cus_x' -> 'created'."""
    message = json.loads(line)["msg"]
    return message.split(": ", 1)[1].split()[0]


def test_ensure_stripe_customer_ten_concurrent_jobs_and_late_duplicates_one_customer(
    make_app, worker_factory, localstripe
):
    app = make_app()
    with app.app_context():
        user_id = add_user(db.session, "user_burst")
    worker = worker_factory(concurrency=4, STRIPE_API_KEY=TEST_KEY, STRIPE_API_BASE=localstripe)
    needle = f"ensure_stripe_customer user={user_id}: "

    for _ in range(10):
        assert enqueue(app, ENSURE_STRIPE_CUSTOMER, user_id)
    lines = wait_for_lines(worker, needle, 10)
    # Duplicate deliveries long after the first (a Svix retry, a replay): still nothing new.
    for _ in range(2):
        assert enqueue(app, ENSURE_STRIPE_CUSTOMER, user_id)
    lines = wait_for_lines(worker, needle, 12)

    customers = list_customers(localstripe)
    assert len(customers) == 1
    assert sorted(outcome_of(line) for line in lines) == ["already_linked"] * 11 + ["created"]
    with app.app_context():
        assert db.session.get(User, user_id).stripe_customer_id == customers[0]["id"]


def test_push_customer_changes_task_email_change_reaches_customer(
    make_app, worker_factory, localstripe
):
    app = make_app()
    with app.app_context():
        user_id = add_user(db.session, "user_move", "old@example.com")
    worker = worker_factory(STRIPE_API_KEY=TEST_KEY, STRIPE_API_BASE=localstripe)
    assert enqueue(app, ENSURE_STRIPE_CUSTOMER, user_id)
    wait_for_lines(worker, f"ensure_stripe_customer user={user_id}: created")

    with app.app_context():
        user = db.session.get(User, user_id)
        user.email = "new@example.com"
        db.session.commit()
    assert enqueue(app, PUSH_CUSTOMER_CHANGES, user_id)
    wait_for_lines(worker, f"push_customer_changes user={user_id}: updated")

    (customer,) = list_customers(localstripe)
    assert customer["email"] == "new@example.com"


def test_mark_customer_deleted_task_keeps_customer_and_marks_it(
    make_app, worker_factory, localstripe
):
    app = make_app()
    with app.app_context():
        user_id = add_user(db.session, "user_leave")
    worker = worker_factory(STRIPE_API_KEY=TEST_KEY, STRIPE_API_BASE=localstripe)
    assert enqueue(app, ENSURE_STRIPE_CUSTOMER, user_id)
    wait_for_lines(worker, f"ensure_stripe_customer user={user_id}: created")

    with app.app_context():
        soft_delete_clerk_user(db.session, "user_leave")
        db.session.commit()
    assert enqueue(app, MARK_CUSTOMER_DELETED, user_id)
    assert enqueue(app, MARK_CUSTOMER_DELETED, user_id)  # idempotent
    wait_for_lines(worker, f"mark_customer_deleted user={user_id}: marked", 2)

    (customer,) = list_customers(localstripe)
    assert customer["metadata"]["clerk_user_id"] == "user_leave"
    assert customer["metadata"]["clerk_deleted_at"]


def test_ensure_stripe_customer_task_stripe_500s_retried_with_same_key_then_linked(
    make_app, worker_factory, httpserver
):
    # Three 500s exhaust stripe-python's own retries (one try + 2); the task's backoff retry
    # then succeeds with the same idempotency key.
    answers = [stripe_error(500, "api_error")] * 3 + [
        (json.dumps(customer_json("cus_R", "u_r")), 200)
    ]

    def handle(request: Request) -> Response:
        body, status = answers.pop(0) if len(answers) > 1 else answers[0]
        return Response(body, status=status, content_type="application/json")

    httpserver.expect_request("/v1/customers", method="POST").respond_with_handler(handle)
    app = make_app()
    with app.app_context():
        user_id = add_user(db.session, "u_r")
    worker = worker_factory(
        STRIPE_API_KEY=TEST_KEY, STRIPE_API_BASE=httpserver.url_for("").rstrip("/")
    )
    assert enqueue(app, ENSURE_STRIPE_CUSTOMER, user_id)
    wait_for_lines(worker, f"ensure_stripe_customer user={user_id}: created cus_R", timeout=60)

    creates = [req for req, _ in httpserver.log if req.method == "POST"]
    assert len(creates) == 4
    assert {req.headers["Idempotency-Key"] for req in creates} == {"clerk-user-u_r-customer-v1"}
    assert len(log_lines(worker, "transient failure (Stripe: APIError, HTTP 500")) == 1
    with app.app_context():
        assert db.session.get(User, user_id).stripe_customer_id == "cus_R"


def test_ensure_stripe_customer_task_stripe_400_recorded_not_retried(
    make_app, worker_factory, httpserver
):
    httpserver.expect_request("/v1/customers", method="POST").respond_with_data(
        *stripe_error(400, "invalid_request_error", "email_invalid")
    )
    app = make_app()
    with app.app_context():
        user_id = add_user(db.session, "u_bad")
    worker = worker_factory(
        STRIPE_API_KEY=TEST_KEY, STRIPE_API_BASE=httpserver.url_for("").rstrip("/")
    )
    assert enqueue(app, ENSURE_STRIPE_CUSTOMER, user_id)
    (line,) = wait_for_lines(worker, f"ensure_stripe_customer user={user_id}: failed permanently")

    record = json.loads(line)
    assert record["level"] == "error"
    assert record["code"] == "stripe_request_failed"
    assert "email_invalid" in record["msg"]
    # The decision not to retry is taken with the failure: no retry was scheduled.
    assert log_lines(worker, "transient failure") == []
    assert len([req for req, _ in httpserver.log if req.method == "POST"]) == 1
    with app.app_context():
        assert db.session.get(User, user_id).stripe_customer_id is None


def test_billing_tasks_without_stripe_key_do_nothing(make_app, worker_factory):
    app = make_app()
    with app.app_context():
        user_id = add_user(db.session, "u_off")
    worker = worker_factory()
    for task in (ENSURE_STRIPE_CUSTOMER, PUSH_CUSTOMER_CHANGES, MARK_CUSTOMER_DELETED):
        assert enqueue(app, task, user_id)
    wait_for_lines(worker, "skipped, STRIPE_API_KEY is not set", 3)

    with app.app_context():
        assert db.session.get(User, user_id).stripe_customer_id is None
