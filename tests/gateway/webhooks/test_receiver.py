"""POST /webhooks/clerk: verification, the ledger row, and the answer (no worker needed here)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import sqlalchemy.event
from sqlalchemy import select

from gateway.extensions import db
from gateway.jobs import APPLY_WEBHOOK_EVENTS
from gateway.models import WebhookEvent
from gateway.webhooks.handoff import wake_ups
from tests.support.broker import queued_tasks
from tests.support.polling import LOAD_SLACK_SECONDS, wait_until
from tests.support.processes import free_port
from tests.support.svix import (
    OTHER_SECRET,
    SECRET,
    clerk_event,
    encode,
    new_msg_id,
    new_user_id,
    post_event,
    sign,
)


@pytest.fixture
def app(make_app):
    return make_app(CLERK_WEBHOOK_SECRET=SECRET)


def rows(app):
    with app.app_context():
        return list(db.session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def test_receive_valid_user_created_stores_row_and_acknowledges(app, client, redis_url):
    user_id = new_user_id()
    event = clerk_event("user.created", user_id, "ada@example.com", updated_at=1700000000000)
    msg_id = new_msg_id()

    response = post_event(client, event, msg_id)

    assert response.status_code == 200
    assert response.json == {"received": True, "event_id": msg_id, "duplicate": False}
    [row] = rows(app)
    assert row.svix_id == msg_id
    assert row.type == "user.created"
    assert row.clerk_user_id == user_id
    assert row.event_timestamp == event["timestamp"]
    assert row.data_updated_at == 1700000000000
    assert row.payload == event
    assert row.raw_body is None
    assert row.attempts == 0
    # The hand-off publishes after the answer; the test broker (Redis) takes it, and the row
    # says so.
    [row] = wait_until(lambda: [r for r in rows(app) if r.status == "queued"], 10)
    assert row.queued_at is not None
    assert queued_tasks(redis_url) == [(APPLY_WEBHOOK_EVENTS, [])]


def test_receive_new_event_is_one_insert_and_one_commit(app, client):
    # The hot path: no SELECT, no UPDATE, no publish in the request (STYLE: statement counts).
    event = clerk_event("user.updated", new_user_id(), "count@example.com")
    post_event(client, clerk_event("user.updated", new_user_id()))  # pool and caches warm
    request_thread = threading.get_ident()  # the hand-off thread's own statements do not count
    seen: list[str] = []

    def statement(conn, cursor, sql, *args):
        if threading.get_ident() == request_thread:
            seen.append(sql.split()[0])

    def commit(conn):
        if threading.get_ident() == request_thread:
            seen.append("COMMIT")

    with app.app_context():
        engine = db.engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", statement)
    sqlalchemy.event.listen(engine, "commit", commit)
    try:
        response = post_event(client, event)
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", statement)
        sqlalchemy.event.remove(engine, "commit", commit)

    assert response.status_code == 200
    assert seen == ["INSERT", "COMMIT"]


def test_receive_burst_is_handed_off_as_few_wake_ups(app, client, redis_url):
    user_ids = [new_user_id() for _ in range(20)]
    for user_id in user_ids:
        assert post_event(client, clerk_event("user.created", user_id)).status_code == 200

    wait_until(lambda: all(r.status == "queued" for r in rows(app)), 10)
    wakes = queued_tasks(redis_url)
    assert 1 <= len(wakes) < len(user_ids)
    assert {(name, tuple(args)) for name, args in wakes} == {(APPLY_WEBHOOK_EVENTS, ())}


def test_receive_same_svix_id_twice_answers_duplicate_and_stores_once(app, client):
    event = clerk_event("user.updated", new_user_id(), "b@example.com")
    msg_id = new_msg_id()

    first = post_event(client, event, msg_id)
    second = post_event(client, event, msg_id)

    assert first.json["duplicate"] is False
    assert second.status_code == 200
    assert second.json == {"received": True, "event_id": msg_id, "duplicate": True}
    assert len(rows(app)) == 1


def test_receive_standard_webhook_header_names_accepted(app, client):
    event = clerk_event("user.updated", new_user_id(), "c@example.com")

    response = post_event(client, event, prefix="webhook")

    assert response.status_code == 200
    assert len(rows(app)) == 1


def test_receive_unknown_type_stored_ignored_and_acknowledged(app, client):
    event = clerk_event("session.created", new_user_id())

    response = post_event(client, event)

    assert response.status_code == 200
    [row] = rows(app)
    assert (row.type, row.status, row.queued_at) == ("session.created", "ignored", None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not json", "not_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'{"type": "user.created", "value": NaN}', "not_json"),
        (b"[" * 100_000 + b"]" * 100_000, "not_json"),  # nested past Python's recursion limit
        (b'{"data": {"id": "user_x"}}', "no_type"),
        (b'{"type": "user.updated", "data": {}}', "no_user_id"),
    ],
)
def test_receive_signed_unusable_body_stored_invalid_with_evidence(app, client, body, reason):
    response = post_event(client, body)

    assert response.status_code == 200
    assert response.json["duplicate"] is False
    [row] = rows(app)
    assert row.status == "invalid"
    assert row.last_error == reason
    if reason in ("no_user_id",):
        assert row.payload == json.loads(body)
    else:
        assert row.raw_body == body.decode()


def test_receive_json_postgres_cannot_store_kept_as_invalid_raw_body(app, client):
    # Valid JSON, but JSONB refuses \u0000: the row keeps the text instead of a 500.
    body = b'{"type": "user.updated", "data": {"id": "user_nul", "first_name": "a\\u0000b"}}'

    response = post_event(client, body)

    assert response.status_code == 200
    [row] = rows(app)
    assert (row.status, row.last_error, row.raw_body) == (
        "invalid",
        "unstorable_json",
        body.decode(),
    )


def test_receive_without_secret_answers_503(make_app):
    client = make_app().test_client()

    response = post_event(client, clerk_event("user.updated", new_user_id()))

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "webhooks_not_configured"


def test_receive_rotated_secrets_either_verifies(make_app):
    app = make_app(CLERK_WEBHOOK_SECRET=f"{OTHER_SECRET} {SECRET}")
    client = app.test_client()

    old = post_event(client, clerk_event("user.updated", new_user_id()), secret=SECRET)
    new = post_event(client, clerk_event("user.updated", new_user_id()), secret=OTHER_SECRET)
    unknown = post_event(
        client,
        clerk_event("user.updated", new_user_id()),
        secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
    )

    assert (old.status_code, new.status_code, unknown.status_code) == (200, 200, 400)
    assert len(rows(app)) == 2


@pytest.mark.parametrize("age", [310, -310, 3600, -86400])
def test_receive_timestamp_outside_tolerance_rejected(app, client, age):
    response = post_event(
        client, clerk_event("user.updated", new_user_id()), timestamp=time.time() - age
    )

    assert response.status_code == 400
    assert response.json["code"] == "webhook_signature_invalid"
    assert rows(app) == []


@pytest.mark.parametrize("age", [290, -290])
def test_receive_timestamp_inside_tolerance_accepted(app, client, age):
    response = post_event(
        client, clerk_event("user.updated", new_user_id()), timestamp=time.time() - age
    )

    assert response.status_code == 200


def test_receive_over_one_mib_refused_before_storing(app, client):
    event = clerk_event("user.updated", new_user_id(), padding="x" * (1024 * 1024))
    body = encode(event)

    response = client.post("/webhooks/clerk", data=body, headers=sign(body))

    assert response.status_code == 413
    assert response.json["code"] == "payload_too_large"
    assert rows(app) == []


def test_receive_oversize_chunked_body_without_length_refused(app):
    # No Content-Length: the limit must hold on the bytes actually read.
    from werkzeug.serving import make_server

    body = b"{" + b" " * (1024 * 1024 + 10) + b"}"
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    import threading

    import requests

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:

        def chunks():
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        response = requests.post(
            f"http://127.0.0.1:{port}/webhooks/clerk",
            data=chunks(),
            headers=sign(body),
            timeout=10,
        )
    finally:
        server.shutdown()
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert rows(app) == []


def test_receive_exactly_one_mib_accepted(app, client):
    event = clerk_event("user.updated", new_user_id())
    text = json.dumps(event)
    body = (text[:-1] + ', "pad": "' + "x" * (1024 * 1024 - len(text) - 11) + '"}').encode()
    assert len(body) == 1024 * 1024

    response = client.post("/webhooks/clerk", data=body, headers=sign(body))

    assert response.status_code == 200


def test_receive_database_down_answers_503(make_app):
    # A port nothing listens on: connecting fails at once, as when PostgreSQL is down.
    app = make_app(
        CLERK_WEBHOOK_SECRET=SECRET,
        DATABASE_URL=f"postgresql://root:root@127.0.0.1:{free_port()}/nowhere",
    )

    response = post_event(app.test_client(), clerk_event("user.updated", new_user_id()))

    assert response.status_code == 503
    assert response.json["code"] == "database_unavailable"


def test_receive_broker_down_still_acknowledges_quickly_row_received(make_app):
    app = make_app(CLERK_WEBHOOK_SECRET=SECRET, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()

    started = time.monotonic()
    response = post_event(client, clerk_event("user.updated", new_user_id()))
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    # CONTRACT 4.5: acknowledged at once even when the broker is down (it is never waited on).
    assert elapsed < LOAD_SLACK_SECONDS, elapsed
    wake_ups(app).flush()  # what the hand-off thread does: the broker refuses
    [row] = rows(app)
    assert row.status == "received"


def test_receive_duplicate_of_unqueued_row_publishes_again(make_app, app, client):
    down = make_app(CLERK_WEBHOOK_SECRET=SECRET, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    event = clerk_event("user.updated", new_user_id())
    msg_id = new_msg_id()
    assert post_event(down.test_client(), event, msg_id).status_code == 200
    wake_ups(down).flush()
    assert rows(app)[0].status == "received"

    # Svix retries the delivery after the broker is back: the duplicate gets it queued.
    response = post_event(client, event, msg_id)

    assert response.json["duplicate"] is True
    wait_until(lambda: rows(app)[0].status == "queued", 10)


def test_receive_get_not_allowed_problem(client):
    response = client.get("/webhooks/clerk")

    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
