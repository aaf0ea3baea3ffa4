"""What the gateway sends Stripe, checked on a recording HTTP server of our own.

localstripe ignores idempotency keys, has no search endpoint and cannot be told to fail, so the
key, the search query, the retry and the error policy are proved here, on the wire.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
from werkzeug import Request, Response

from gateway.billing.client import MAX_NETWORK_RETRIES, client_from_config
from gateway.billing.customers import Outcome, ensure_stripe_customer
from gateway.billing.problems import (
    StripeCustomerAlreadyLinked,
    StripeRequestFailed,
    StripeUnavailable,
)
from gateway.extensions import db
from gateway.models import User
from tests.support.stripe import TEST_KEY, add_user, customer_json, stripe_error

OLD = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def recording_app(make_app, httpserver):
    return make_app(STRIPE_API_KEY=TEST_KEY, STRIPE_API_BASE=httpserver.url_for("").rstrip("/"))


def client_for(app):
    return client_from_config(app.config["GATEWAY"])


def requests_to(httpserver, method, path):
    return [req for req, _ in httpserver.log if req.method == method and req.path == path]


def answers(*responses):
    """A handler that plays `responses` in order, the last one for every later request."""
    queue = list(responses)

    def handle(request: Request) -> Response:
        body, status = queue.pop(0) if len(queue) > 1 else queue[0]
        return Response(body, status=status, content_type="application/json")

    return handle


def test_ensure_stripe_customer_create_sends_key_derived_from_clerk_id(recording_app, httpserver):
    httpserver.expect_request("/v1/customers", method="POST").respond_with_json(
        customer_json("cus_A", "user_key")
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "user_key", "key@example.com", first_name="K")
        outcome = ensure_stripe_customer(db.session, client_for(recording_app), user_id)

    (create,) = requests_to(httpserver, "POST", "/v1/customers")
    assert outcome == Outcome("created", "cus_A")
    assert create.headers["Idempotency-Key"] == "clerk-user-user_key-customer-v1"
    assert create.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert create.form.to_dict() == {
        "email": "key@example.com",
        "name": "K",
        "metadata[clerk_user_id]": "user_key",
    }
    # A new user is inside the key's window: no lookup before the create.
    assert requests_to(httpserver, "GET", "/v1/customers/search") == []


def test_ensure_stripe_customer_after_customer_deleted_sends_a_new_key(recording_app, httpserver):
    # Within Stripe's 24-hour window the first key would replay the deleted customer.
    httpserver.expect_request("/v1/customers", method="POST").respond_with_json(
        customer_json("cus_B", "user_again")
    )
    deleted_at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    with recording_app.app_context():
        user_id = add_user(db.session, "user_again", stripe_customer_deleted_at=deleted_at)
        outcome = ensure_stripe_customer(db.session, client_for(recording_app), user_id)

    (create,) = requests_to(httpserver, "POST", "/v1/customers")
    assert outcome == Outcome("created", "cus_B")
    expected = f"clerk-user-user_again-customer-after-{int(deleted_at.timestamp())}"
    assert create.headers["Idempotency-Key"] == expected


def test_ensure_stripe_customer_stripe_500_then_success_same_key_one_link(
    recording_app, httpserver
):
    httpserver.expect_request("/v1/customers", method="POST").respond_with_handler(
        answers(stripe_error(500, "api_error"), (json.dumps(customer_json("cus_B", "u5")), 200))
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "u5")
        outcome = ensure_stripe_customer(db.session, client_for(recording_app), user_id)
        stored = db.session.get(User, user_id).stripe_customer_id

    creates = requests_to(httpserver, "POST", "/v1/customers")
    assert len(creates) == 2
    assert {req.headers["Idempotency-Key"] for req in creates} == {"clerk-user-u5-customer-v1"}
    assert (outcome.customer_id, stored) == ("cus_B", "cus_B")


def test_ensure_stripe_customer_stripe_keeps_500_transient_error(recording_app, httpserver):
    httpserver.expect_request("/v1/customers", method="POST").respond_with_handler(
        answers(stripe_error(503, "api_error"))
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "u503")
        with pytest.raises(StripeUnavailable) as raised:
            ensure_stripe_customer(db.session, client_for(recording_app), user_id)
        assert db.session.get(User, user_id).stripe_customer_id is None

    # stripe-python's own retries: one try and MAX_NETWORK_RETRIES more, then it is the task's.
    assert len(requests_to(httpserver, "POST", "/v1/customers")) == 1 + MAX_NETWORK_RETRIES
    assert raised.value.code == "stripe_unavailable"


def test_ensure_stripe_customer_rate_limited_transient_error(recording_app, httpserver):
    httpserver.expect_request("/v1/customers", method="POST").respond_with_handler(
        answers(stripe_error(429, "invalid_request_error", "rate_limit"))
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "u429")
        with pytest.raises(StripeUnavailable):
            ensure_stripe_customer(db.session, client_for(recording_app), user_id)


def test_ensure_stripe_customer_stripe_400_permanent_error_one_request(recording_app, httpserver):
    httpserver.expect_request("/v1/customers", method="POST").respond_with_handler(
        answers(stripe_error(400, "invalid_request_error", "email_invalid"))
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "u400", "someone@example.com")
        with pytest.raises(StripeRequestFailed) as raised:
            ensure_stripe_customer(db.session, client_for(recording_app), user_id)
        assert db.session.get(User, user_id).stripe_customer_id is None

    assert len(requests_to(httpserver, "POST", "/v1/customers")) == 1
    assert raised.value.code == "stripe_request_failed"
    assert "email_invalid" in raised.value.detail
    assert "someone" not in raised.value.detail  # never Stripe's message (it may echo the email)


def test_ensure_stripe_customer_old_user_found_by_search_without_create(recording_app, httpserver):
    httpserver.expect_request("/v1/customers/search", method="GET").respond_with_json(
        {"object": "search_result", "data": [customer_json("cus_S", "user_old")], "has_more": False}
    )
    httpserver.expect_request("/v1/customers/cus_S", method="POST").respond_with_json(
        customer_json("cus_S", "user_old")
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "user_old", "now@example.com", created_at=OLD)
        outcome = ensure_stripe_customer(db.session, client_for(recording_app), user_id)

    (search,) = requests_to(httpserver, "GET", "/v1/customers/search")
    assert search.args["query"] == "metadata['clerk_user_id']:'user_old'"
    assert outcome == Outcome("found", "cus_S")
    assert requests_to(httpserver, "POST", "/v1/customers") == []
    # The found customer may hold the email of back then: it gets today's.
    (refresh,) = requests_to(httpserver, "POST", "/v1/customers/cus_S")
    assert refresh.form["email"] == "now@example.com"


def test_ensure_stripe_customer_search_unsupported_falls_back_to_listing(recording_app, httpserver):
    httpserver.expect_request("/v1/customers/search").respond_with_data(
        *stripe_error(404, "invalid_request_error", "resource_missing")
    )
    httpserver.expect_request("/v1/customers", method="GET").respond_with_json(
        {
            "object": "list",
            "url": "/v1/customers",
            "has_more": False,
            "data": [customer_json("cus_other", "user_else"), customer_json("cus_L", "user_list")],
        }
    )
    httpserver.expect_request("/v1/customers/cus_L", method="POST").respond_with_json(
        customer_json("cus_L", "user_list")
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "user_list", created_at=OLD)
        outcome = ensure_stripe_customer(db.session, client_for(recording_app), user_id)

    assert outcome == Outcome("found", "cus_L")
    assert requests_to(httpserver, "POST", "/v1/customers") == []


def test_ensure_stripe_customer_old_user_nothing_found_creates_with_key(recording_app, httpserver):
    httpserver.expect_request("/v1/customers/search").respond_with_json(
        {"object": "search_result", "data": [], "has_more": False}
    )
    httpserver.expect_request("/v1/customers", method="POST").respond_with_json(
        customer_json("cus_N", "user_none")
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "user_none", created_at=OLD)
        outcome = ensure_stripe_customer(db.session, client_for(recording_app), user_id)

    assert outcome == Outcome("created", "cus_N")
    (create,) = requests_to(httpserver, "POST", "/v1/customers")
    assert create.headers["Idempotency-Key"] == "clerk-user-user_none-customer-v1"


def test_ensure_stripe_customer_key_reused_with_other_params_finds_first_customer(
    recording_app, httpserver
):
    # The email changed between two attempts inside the window: Stripe refuses the key with new
    # parameters; the customer the first attempt made is found and linked, none is made.
    httpserver.expect_request("/v1/customers", method="POST").respond_with_data(
        *stripe_error(400, "idempotency_error")
    )
    httpserver.expect_request("/v1/customers/search").respond_with_json(
        {
            "object": "search_result",
            "data": [customer_json("cus_F", "user_idem")],
            "has_more": False,
        }
    )
    httpserver.expect_request("/v1/customers/cus_F", method="POST").respond_with_json(
        customer_json("cus_F", "user_idem")
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "user_idem")
        outcome = ensure_stripe_customer(db.session, client_for(recording_app), user_id)

    assert outcome == Outcome("found", "cus_F")


def test_ensure_stripe_customer_customer_linked_elsewhere_refused(recording_app, httpserver):
    httpserver.expect_request("/v1/customers", method="POST").respond_with_json(
        customer_json("cus_TAKEN", "user_two")
    )
    with recording_app.app_context():
        add_user(db.session, "user_one", stripe_customer_id="cus_TAKEN")
        user_id = add_user(db.session, "user_two")
        with pytest.raises(StripeCustomerAlreadyLinked):
            ensure_stripe_customer(db.session, client_for(recording_app), user_id)
        assert db.session.get(User, user_id).stripe_customer_id is None


def test_ensure_stripe_customer_link_won_elsewhere_during_create_not_overwritten(
    recording_app, httpserver, database_url
):
    # Another writer (a job on a server without the lock, an operator's link) stores a customer
    # while our create is in flight: the guarded UPDATE leaves theirs in place.
    def create_while_other_links(request: Request) -> Response:
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(
                "UPDATE users SET stripe_customer_id = 'cus_FIRST' WHERE clerk_user_id = 'u_race'"
            )
        return Response(json.dumps(customer_json("cus_SECOND", "u_race")), 200)

    httpserver.expect_request("/v1/customers", method="POST").respond_with_handler(
        create_while_other_links
    )
    with recording_app.app_context():
        user_id = add_user(db.session, "u_race")
        outcome = ensure_stripe_customer(db.session, client_for(recording_app), user_id)
        stored = db.session.get(User, user_id).stripe_customer_id

    assert outcome == Outcome("already_linked", "cus_FIRST")
    assert stored == "cus_FIRST"
