"""Admin routes (CONTRACT 4.6) and the webhook/user commands (CONTRACT 4.8)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway.extensions import db
from gateway.models import User, WebhookEvent
from gateway.models.base import utcnow
from gateway.webhooks.service import record_webhook_event
from tests.support.processes import free_port
from tests.support.svix import SECRET, clerk_event, encode, new_msg_id, new_user_id

KEYS = "first-admin-key-0123456789abcdefgh,second-admin-key-0123456789abcdefgh"
AUTH = {"Authorization": "Bearer second-admin-key-0123456789abcdefgh"}
ROUTES = [
    ("GET", "/webhooks/clerk/users/user_1"),
    ("GET", "/webhooks/clerk/users/email/a@example.com"),
    ("GET", "/admin/webhook-events"),
    ("POST", "/admin/webhook-events/msg_1/replay"),
]


@pytest.fixture
def app(make_app):
    return make_app(ADMIN_API_KEYS=KEYS, CLERK_WEBHOOK_SECRET=SECRET)


def add_user(app, **fields) -> None:
    with app.app_context():
        db.session.add(User(**fields))
        db.session.commit()


def add_events(app, count, event_type="user.updated") -> list[str]:
    ids = []
    with app.app_context():
        for _ in range(count):
            msg_id = new_msg_id()
            record_webhook_event(db.session, msg_id, encode(clerk_event(event_type, new_user_id())))
            ids.append(msg_id)
    return ids


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_admin_route_without_configured_keys_is_404(make_app, method, path):
    client = make_app().test_client()

    response = client.open(path, method=method, headers={"Authorization": "Bearer anything"})

    assert response.status_code == 404
    assert response.json["code"] == "not_found"


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong",
        "Bearer first-admin-key-0123456789abcdefg",
        "Basic second-admin-key-0123456789abcdefgh",
        "Bearer ",
    ],
)
def test_admin_route_wrong_or_missing_key_is_401(client, method, path, header):
    headers = {"Authorization": header} if header else {}

    response = client.open(path, method=method, headers=headers)

    assert response.status_code == 401
    assert response.json["code"] == "admin_key_invalid"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    key_given = header is not None and header.startswith("Bearer ") and header.strip() != "Bearer"
    assert ('error="invalid_token"' in challenge) == key_given


def test_admin_show_user_returns_full_record(app, client):
    add_user(
        app,
        clerk_user_id="user_full",
        email="full@example.com",
        clerk_private_metadata={"tier": "gold"},
        clerk_updated_at=utcnow(),
        stripe_customer_id="cus_full",
        subscription_status="trialing",
        subscription_price_id="price_pro",
    )

    response = client.get("/webhooks/clerk/users/user_full", headers=AUTH)

    assert response.status_code == 200
    user = response.json["user"]
    assert user["clerk_user_id"] == "user_full"
    assert user["private_metadata"] == {"tier": "gold"}
    assert {"deleted_at", "clerk_created_at", "clerk_updated_at", "is_active"} <= set(user)
    assert (user["subscription_status"], user["subscription_price_id"]) == ("trialing", "price_pro")
    assert user["subscription_current_period_end"] is None


def test_admin_show_user_tombstone_is_inactive(app, client):
    add_user(app, clerk_user_id="user_gone", is_active=False, deleted_at=utcnow())

    user = client.get("/webhooks/clerk/users/user_gone", headers=AUTH).json["user"]

    assert user["is_active"] is False
    assert user["deleted_at"] is not None


@pytest.mark.parametrize(
    "path", ["/webhooks/clerk/users/user_nobody", "/webhooks/clerk/users/email/no@example.com"]
)
def test_admin_show_unknown_user_is_404(app, client, path):
    add_user(app, clerk_user_id="user_other", email="other@example.com")

    response = client.get(path, headers=AUTH)

    assert response.status_code == 404
    assert response.json["code"] == "user_not_found"


def test_admin_show_user_by_email_found_and_path_redacted_in_log(app, client, caplog):
    add_user(app, clerk_user_id="user_mail", email="grace.hopper@example.com")
    caplog.set_level(logging.INFO, logger="gateway.access")

    response = client.get("/webhooks/clerk/users/email/Grace.Hopper@Example.com", headers=AUTH)

    assert response.status_code == 200
    assert response.json["user"]["clerk_user_id"] == "user_mail"
    [record] = [r for r in caplog.records if r.name == "gateway.access"]
    assert record.path == "/webhooks/clerk/users/email/[redacted]"
    assert "hopper" not in record.getMessage().lower()


def test_admin_list_events_newest_first_default_limit_50(app, client):
    ids = add_events(app, 55)
    with app.app_context():
        base = utcnow()
        for n, event in enumerate(
            db.session.scalars(select(WebhookEvent).order_by(WebhookEvent.id))
        ):
            event.received_at = base + timedelta(seconds=n)
        db.session.commit()

    events = client.get("/admin/webhook-events", headers=AUTH).json["events"]

    assert [e["event_id"] for e in events] == list(reversed(ids))[:50]
    assert {e["source"] for e in events} == {"clerk"}
    assert set(events[0]) == {
        "event_id",
        "source",
        "type",
        "clerk_user_id",
        "status",
        "attempts",
        "last_error",
        "received_at",
        "processed_at",
    }


def test_admin_list_events_filters_by_status_type_and_limit(app, client):
    updated = add_events(app, 3, "user.updated")
    ignored = add_events(app, 2, "email.created")

    by_status = client.get("/admin/webhook-events?status=ignored", headers=AUTH).json["events"]
    by_type = client.get("/admin/webhook-events?type=user.updated&limit=2", headers=AUTH).json

    assert sorted(e["event_id"] for e in by_status) == sorted(ignored)
    assert len(by_type["events"]) == 2
    assert {e["event_id"] for e in by_type["events"]} <= set(updated)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=ten", "status=done", "limit=-1"])
def test_admin_list_events_invalid_query_is_400(client, query):
    response = client.get(f"/admin/webhook-events?{query}", headers=AUTH)

    assert response.status_code == 400
    assert response.json["code"] == "invalid_query"


def test_admin_list_events_limit_500_accepted(client):
    assert client.get("/admin/webhook-events?limit=500", headers=AUTH).status_code == 200


def test_admin_replay_unknown_event_is_404(client):
    response = client.post("/admin/webhook-events/msg_unknown/replay", headers=AUTH)

    assert response.status_code == 404
    assert response.json["code"] == "webhook_event_not_found"


def test_admin_replay_waiting_event_is_202_and_queued(app, client):
    [msg_id] = add_events(app, 1)

    response = client.post(f"/admin/webhook-events/{msg_id}/replay", headers=AUTH)

    assert response.status_code == 202
    assert response.json["event"]["event_id"] == msg_id
    assert response.json["event"]["status"] == "queued"


def test_cli_webhooks_list_filters_by_status(app):
    ignored = add_events(app, 1, "email.created")
    add_events(app, 2)

    result = app.test_cli_runner().invoke(args=["webhooks", "list", "--status", "ignored"])

    assert result.exit_code == 0, result.output
    assert ignored[0] in result.output
    assert "1 event(s)" in result.output


def test_cli_webhooks_list_bad_status_exits_nonzero(app):
    result = app.test_cli_runner().invoke(args=["webhooks", "list", "--status", "nope"])

    assert result.exit_code != 0
    assert "invalid_query" in result.output


def test_cli_webhooks_replay_queues_and_unknown_fails(app):
    [msg_id] = add_events(app, 1)
    runner = app.test_cli_runner()

    ok = runner.invoke(args=["webhooks", "replay", msg_id])
    missing = runner.invoke(args=["webhooks", "replay", "msg_missing"])

    assert (ok.exit_code, ok.output.strip()) == (0, f"{msg_id}: queued")
    assert missing.exit_code != 0
    assert "webhook_event_not_found" in missing.output


def test_cli_webhooks_requeue_runs_sweep(app):
    add_events(app, 3)

    result = app.test_cli_runner().invoke(args=["webhooks", "requeue", "--older-than", "0"])

    assert result.exit_code == 0, result.output
    assert "3 waiting (0 from dead workers), 3 queued" in result.output


def test_cli_webhooks_replay_and_requeue_broker_down_exit_nonzero_rows_wait(make_app, app):
    # CONTRACT 4.8: each command exits non-zero on failure; the events stay for the sweep.
    down = make_app(ADMIN_API_KEYS=KEYS, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    [replayed, swept] = add_events(app, 2)
    runner = down.test_cli_runner()

    replay = runner.invoke(args=["webhooks", "replay", replayed])
    requeue = runner.invoke(args=["webhooks", "requeue", "--older-than", "0"])

    assert replay.exit_code != 0
    assert "broker unavailable" in replay.output
    assert requeue.exit_code != 0
    assert "2 waiting (0 from dead workers), 0 queued" in requeue.output
    with app.app_context():
        statuses = dict(db.session.execute(select(WebhookEvent.svix_id, WebhookEvent.status)).all())
    assert statuses == {replayed: "received", swept: "received"}


def test_cli_users_show_prints_user_and_unknown_fails(app):
    add_user(app, clerk_user_id="user_cli", email="cli@example.com")
    runner = app.test_cli_runner()

    found = runner.invoke(args=["users", "show", "user_cli"])
    missing = runner.invoke(args=["users", "show", "user_nobody"])

    assert found.exit_code == 0
    assert '"clerk_user_id": "user_cli"' in found.output
    assert missing.exit_code != 0


def test_cli_dev_webhook_posts_signed_event_to_local_gateway(make_app):
    # Development mode without a configured secret: both sides use the published dev secret.
    app = make_app(GATEWAY_ENV="development")
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = app.test_cli_runner().invoke(
            args=[
                "dev", "webhook", "user.created", "--user", "user_dev", "--email", "d@example.com",
                "--url", f"http://127.0.0.1:{server.server_port}/webhooks/clerk",
            ]
        )  # fmt: skip
    finally:
        server.shutdown()

    assert result.exit_code == 0, result.output
    assert "HTTP 200" in result.output
    with app.app_context():
        event = db.session.scalar(select(WebhookEvent))
    assert (event.type, event.clerk_user_id) == ("user.created", "user_dev")


def test_cli_dev_webhook_refused_outside_dev_mode(app):
    result = app.test_cli_runner().invoke(
        args=["dev", "webhook", "user.deleted", "--user", "user_x"]
    )

    assert result.exit_code != 0
    assert "development mode only" in result.output


def test_receive_production_without_secret_has_no_dev_fallback(make_app):
    from gateway.webhooks.signatures import DEV_WEBHOOK_SECRET
    from tests.support.svix import post_event

    client = make_app().test_client()

    response = post_event(
        client, clerk_event("user.updated", new_user_id()), secret=DEV_WEBHOOK_SECRET
    )

    assert response.status_code == 503


@pytest.mark.parametrize(
    "endpoint",
    [
        "webhooks.receive_clerk_webhook",
        "webhooks_admin.show_user",
        "webhooks_admin.show_user_by_email",
        "webhooks_admin.list_webhook_events",
        "webhooks_admin.replay_webhook_event",
    ],
)
def test_webhook_and_admin_views_marked_public_for_clerk_hook(app, endpoint):
    from gateway.auth.public import is_public

    # The Clerk session hook skips these: they authenticate by signature or admin key.
    assert is_public(app.view_functions[endpoint])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/webhooks/clerk/users/user%00x"),
        ("GET", "/webhooks/clerk/users/email/a%00b@example.com"),
        ("GET", "/admin/webhook-events?type=user.%00created"),
        ("POST", "/admin/webhook-events/msg%00x/replay"),
    ],
)
def test_admin_route_nul_in_url_is_400_not_500(client, method, path):
    response = client.open(path, method=method, headers=AUTH)

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "bad_request"
