"""The embedded local run (SQLite + filesystem broker): the same inbox and apply work there."""

from __future__ import annotations

from flask_migrate import upgrade
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import User, WebhookEvent
from gateway.webhooks.handoff import wake_ups
from gateway.webhooks.processing import drain
from tests.support.svix import SECRET, clerk_event, new_msg_id, new_user_id, post_event


def test_embedded_sqlite_receive_duplicate_and_apply(make_app, tmp_path):
    app = make_app(
        DATABASE_URL=f"sqlite:///{tmp_path / 'gateway.db'}",
        REDIS_URL="",
        GATEWAY_ENV="development",  # production refuses the embedded broker
        GATEWAY_INSTANCE_PATH=str(tmp_path),
        CLERK_WEBHOOK_SECRET=SECRET,
    )
    with app.app_context():
        upgrade()
    client = app.test_client()
    user_id = new_user_id()
    msg_id = new_msg_id()
    event = clerk_event("user.created", user_id, "Local@Example.com")

    first = post_event(client, event, msg_id)
    second = post_event(client, event, msg_id)

    assert (first.json["duplicate"], second.json["duplicate"]) == (False, True)
    wake_ups(app).flush()
    config = app.config["GATEWAY"]
    with app.app_context():
        row = db.session.scalar(select(WebhookEvent))
        assert row.status == "queued"  # the filesystem broker took the wake-up
        outcome = drain(db.session, config, lambda jobs: None)
        user = db.session.scalar(select(User))
        mirrored = (user.clerk_user_id, user.email)
        again = drain(db.session, config, lambda jobs: None)
        row = db.session.scalar(select(WebhookEvent))
        assert (row.status, row.attempts) == ("processed", 1)
    assert outcome.statuses == {"processed": 1}
    assert mirrored == (user_id, "local@example.com")
    assert again.applied == 0
