"""POST /api/v1/auth/login and /refresh against a real Backend API server, PostgreSQL and Redis."""

from __future__ import annotations

import base64
import json
import time

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.jobs import ENSURE_STRIPE_CUSTOMER, PING, enqueue
from gateway.models import User
from tests.support.broker import clear_queue, queued_tasks
from tests.support.clerk import AUTHORIZED_PARTY, mint_token
from tests.support.polling import wait_until


@pytest.fixture
def queue(redis_url):
    """The tasks waiting on the broker's `gateway` queue, as (name, args)."""
    clear_queue(redis_url)
    yield lambda: queued_tasks(redis_url)
    clear_queue(redis_url)


def _wait_for(condition, timeout: float = 30.0) -> None:
    wait_until(condition, timeout)


def _login(app, token, path="/api/v1/auth/login", **kwargs):
    return app.test_client().post(path, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def _users(app) -> list[User]:
    with app.app_context():
        users = list(db.session.scalars(select(User).order_by(User.id)))
        db.session.expunge_all()
        return users


@pytest.fixture
def stripe_app(make_app, clerk_env):
    """A gateway with Stripe linking on: new users are announced to the billing worker."""
    return make_app(**clerk_env, STRIPE_API_KEY="sk_test_login")


def test_login_first_time_creates_user_from_backend_api(
    stripe_app, clerk_keys, clerk_backend, queue
):
    clerk_app = stripe_app
    clerk_backend.add_user("user_new", "Ada@Example.com")
    token = mint_token(clerk_keys.primary, user_id="user_new")
    response = _login(clerk_app, token)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    user = body["user"]
    assert user["clerk_user_id"] == "user_new"
    assert user["email"] == "ada@example.com"
    assert user["first_name"] == "Ada" and user["public_metadata"] == {"plan": "pro"}
    assert set(user) == {
        "id", "clerk_user_id", "email", "first_name", "last_name", "image_url", "is_active",
        "stripe_customer_id", "subscription_status", "public_metadata", "unsafe_metadata",
        "created_at", "updated_at",
    }  # fmt: skip
    assert user["subscription_status"] is None  # CONTRACT 4.11: null without a subscription
    assert "never-show-this" not in response.get_data(as_text=True)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert body["session"]["id"] == claims["sid"]
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
    assert body["session"]["expires_at"] == expected
    assert len(clerk_backend.user_requests) == 1
    # The publish may outlive its one-second bound on a loaded machine and land a little later.
    _wait_for(lambda: queue() == [(ENSURE_STRIPE_CUSTOMER, [user["id"]])])
    stored = _users(clerk_app)
    assert len(stored) == 1 and stored[0].clerk_private_metadata == {
        "internal_note": "never-show-this"
    }


def test_login_second_time_uses_local_row_without_api_or_job(
    stripe_app, clerk_keys, clerk_backend, queue
):
    clerk_app = stripe_app
    clerk_backend.add_user("user_again", "again@example.com")
    first = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_again")).get_json()
    _wait_for(lambda: len(queue()) == 1)
    queue_after_first = queue()
    second = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_again"))
    assert second.status_code == 200
    assert second.get_json()["user"]["id"] == first["user"]["id"]
    assert len(clerk_backend.user_requests) == 1
    assert queue() == queue_after_first


def test_login_first_time_without_stripe_key_enqueues_nothing(
    clerk_app, clerk_keys, clerk_backend, queue
):
    clerk_backend.add_user("user_nostripe", "nostripe@example.com")
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_nostripe"))
    assert response.status_code == 200
    # A marker published after the response: the login's own publish would be there before it.
    assert enqueue(clerk_app, PING)
    _wait_for(lambda: queue() != [])
    assert queue() == [(PING, [])]


def test_login_links_existing_user_by_verified_email(clerk_app, clerk_keys, clerk_backend):
    with clerk_app.app_context():
        db.session.add(User(email="old@example.com", first_name="Old"))
        db.session.commit()
    clerk_backend.add_user("user_link", "old@example.com", verified=True)
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_link"))
    assert response.status_code == 200
    users = _users(clerk_app)
    assert len(users) == 1
    assert (
        users[0].clerk_user_id == "user_link" and response.get_json()["user"]["id"] == users[0].id
    )


def test_login_unverified_email_is_not_linked(clerk_app, clerk_keys, clerk_backend):
    with clerk_app.app_context():
        db.session.add(User(email="victim@example.com", first_name="Victim"))
        db.session.commit()
    clerk_backend.add_user("user_attacker", "victim@example.com", verified=False)
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_attacker"))
    assert response.status_code == 200
    users = _users(clerk_app)
    assert len(users) == 2
    victim, attacker = users
    assert victim.clerk_user_id is None and victim.first_name == "Victim"
    assert response.get_json()["user"]["id"] == attacker.id != victim.id


def test_login_deactivated_user_is_403(clerk_app, clerk_keys):
    with clerk_app.app_context():
        db.session.add(User(clerk_user_id="user_gone", email="gone@example.com", is_active=False))
        db.session.commit()
    for path in ("/api/v1/auth/login", "/api/v1/auth/refresh"):
        response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_gone"), path)
        assert response.status_code == 403
        assert response.get_json(force=True)["code"] == "user_deactivated"


def test_login_with_cookie_token_and_listed_origin(clerk_app, clerk_keys, clerk_backend):
    clerk_backend.add_user("user_cookie", "cookie@example.com")
    client = clerk_app.test_client()
    client.set_cookie("__session", mint_token(clerk_keys.primary, user_id="user_cookie"))
    assert client.post("/api/v1/auth/login").get_json(force=True)["code"] == "csrf_origin"
    response = client.post("/api/v1/auth/login", headers={"Origin": AUTHORIZED_PARTY})
    assert response.status_code == 200
    assert response.get_json()["user"]["clerk_user_id"] == "user_cookie"


def test_login_header_wins_over_cookie(clerk_app, clerk_keys, clerk_backend):
    clerk_backend.add_user("user_header", "header@example.com")
    clerk_backend.add_user("user_cookie", "cookie@example.com")
    client = clerk_app.test_client()
    client.set_cookie("__session", mint_token(clerk_keys.primary, user_id="user_cookie"))
    token = mint_token(clerk_keys.primary, user_id="user_header")
    response = client.post("/api/v1/auth/login", headers={"Authorization": f"Bearer {token}"})
    assert response.get_json()["user"]["clerk_user_id"] == "user_header"
    assert [u.clerk_user_id for u in _users(clerk_app)] == ["user_header"]


def test_login_and_refresh_clerk_disabled_is_503(make_app, clerk_env, clerk_keys):
    app = make_app(**(clerk_env | {"CLERK_ENABLED": "false"}))
    for path in ("/api/v1/auth/login", "/api/v1/auth/refresh"):
        response = _login(app, mint_token(clerk_keys.primary), path)
        assert response.status_code == 503
        assert response.get_json(force=True)["code"] == "clerk_disabled"
    assert _users(app) == []


def test_refresh_unknown_user_is_404_and_creates_nothing(clerk_app, clerk_keys, clerk_backend):
    clerk_backend.add_user("user_fresh", "fresh@example.com")
    response = _login(
        clerk_app, mint_token(clerk_keys.primary, user_id="user_fresh"), "/api/v1/auth/refresh"
    )
    assert response.status_code == 404
    assert response.get_json(force=True)["code"] == "user_not_found"
    assert _users(clerk_app) == [] and clerk_backend.user_requests == []


def test_refresh_known_user_same_shape_as_login(clerk_app, clerk_keys, clerk_backend):
    clerk_backend.add_user("user_r", "r@example.com")
    login = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_r")).get_json()
    response = _login(
        clerk_app, mint_token(clerk_keys.primary, user_id="user_r"), "/api/v1/auth/refresh"
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["user"] == login["user"] and set(body["session"]) == {"id", "expires_at"}
    assert "private_metadata" not in response.get_data(as_text=True)


def test_login_without_secret_key_creates_user_from_claims(
    make_app, clerk_env, clerk_keys, httpserver
):
    env = {k: v for k, v in clerk_env.items() if k != "CLERK_SECRET_KEY"}
    app = make_app(**env)
    token = mint_token(clerk_keys.primary, user_id="user_claims", email="Claims@Example.com")
    response = _login(app, token)
    assert response.status_code == 200
    assert response.get_json()["user"]["email"] == "claims@example.com"
    assert not [r for r, _ in httpserver.log if r.path.startswith("/v1/users")]


def test_login_user_unknown_to_clerk_is_404(clerk_app, clerk_keys):
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_nobody"))
    assert response.status_code == 404
    assert response.get_json(force=True)["code"] == "user_not_found"
    assert _users(clerk_app) == []


def test_login_backend_api_429_retry_after_is_honoured(clerk_app, clerk_keys, clerk_backend):
    clerk_backend.add_user("user_busy", "busy@example.com")
    clerk_backend.queued_errors = [(429, {"Retry-After": "1"})]
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_busy"))
    assert response.status_code == 200
    assert len(clerk_backend.user_requests) == 2


def test_login_backend_api_429_long_retry_after_is_503_with_retry_after(
    clerk_app, clerk_keys, clerk_backend
):
    clerk_backend.add_user("user_busy", "busy@example.com")
    clerk_backend.queued_errors = [(429, {"Retry-After": "120"})]
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_busy"))
    assert response.status_code == 503
    assert response.get_json(force=True)["code"] == "clerk_api_unavailable"
    assert response.headers["Retry-After"] == "120"
    assert _users(clerk_app) == []


def test_login_backend_api_unreachable_is_503(make_app, clerk_env, clerk_keys):
    from tests.support.processes import free_port

    app = make_app(**(clerk_env | {"CLERK_API_URL": f"http://127.0.0.1:{free_port()}/v1"}))
    response = _login(app, mint_token(clerk_keys.primary, user_id="user_x"))
    assert response.status_code == 503
    assert response.get_json(force=True)["code"] == "clerk_api_unavailable"


def test_login_user_id_stays_one_path_segment(clerk_app, clerk_keys, clerk_backend):
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="../jwks"))
    assert response.status_code == 404
    assert [r.environ["REQUEST_URI"] for r in clerk_backend.user_requests] == [
        "/v1/users/..%2Fjwks"
    ]


@pytest.mark.parametrize(
    "claims",
    [
        {"first_name": "F" * 300},
        {"last_name": "L" * 256},
        {"email": "e" * 320 + "@example.com"},
        {"first_name": "nul\x00"},
        {"first_name": "lone \ud800"},
    ],
    ids=["first_name_300", "last_name_256", "email_333", "nul", "lone_surrogate"],
)
def test_login_from_claims_with_unstorable_field_is_422_never_500(
    make_app, clerk_env, clerk_keys, claims
):
    env = {k: v for k, v in clerk_env.items() if k != "CLERK_SECRET_KEY"}
    app = make_app(**env)
    response = _login(app, mint_token(clerk_keys.primary, user_id="user_long", **claims))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json(force=True)["code"] == "user_data_invalid"
    assert _users(app) == []


def test_login_backend_api_user_with_unstorable_field_is_422_never_500(
    clerk_app, clerk_keys, clerk_backend
):
    clerk_backend.add_user("user_long", "long@example.com", first_name="F" * 300)
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id="user_long"))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json(force=True)["code"] == "user_data_invalid"
    assert _users(clerk_app) == []


@pytest.mark.parametrize(
    "sub", ["user_" + "x" * 60, "user_\u00e9", "user_\ud800", "user 1", "user_\x00"]
)
def test_login_subject_that_is_no_clerk_id_is_token_invalid(clerk_app, clerk_keys, sub):
    """sub goes into users, guard_requests and upstream headers: printable ASCII, at most 64."""
    response = _login(clerk_app, mint_token(clerk_keys.primary, user_id=sub))
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json(force=True)["code"] == "token_invalid"
    assert _users(clerk_app) == []
