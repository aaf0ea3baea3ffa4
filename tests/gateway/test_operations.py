"""The operator's tools (CONTRACT 4.6, 4.8, 2): retention, bulk replay, the queues page, and the
progress of long commands."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from gateway.cli import Progress
from gateway.extensions import db
from gateway.jobs import APPLY_WEBHOOK_EVENTS, PRUNE_OLD_RECORDS, SWEEP_WEBHOOK_EVENTS
from gateway.models import GuardRequest, WebhookEvent
from gateway.models.base import utcnow
from gateway.retention import prune_old_records
from tests.support.broker import queued_tasks
from tests.support.polling import wait_until
from tests.support.svix import SECRET, clerk_event, new_user_id

KEY = "ops-admin-key-0123456789abcdef0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def app(make_app):
    return make_app(ADMIN_API_KEYS=KEY, CLERK_WEBHOOK_SECRET=SECRET)


def add_event(app, svix_id, status, age=timedelta(0), event_type="user.updated", payload=True):
    with app.app_context():
        db.session.add(
            WebhookEvent(
                svix_id=svix_id,
                status=status,
                type=event_type,
                clerk_user_id="user_ops",
                attempts=3 if status == "failed" else 1,
                last_error="boom" if status == "failed" else None,
                payload=clerk_event(event_type, new_user_id(), "ops@example.com")
                if payload
                else None,
                raw_body=None if payload else "not json",  # as the receiver stores such a body
                received_at=utcnow() - age,
            )
        )
        db.session.commit()


def add_guard_request(app, age):
    with app.app_context():
        db.session.add(
            GuardRequest(service="echo", outcome="ok", latency_ms=1.0, created_at=utcnow() - age)
        )
        db.session.commit()


def statuses(app) -> dict[str, str]:
    with app.app_context():
        rows = db.session.execute(select(WebhookEvent.svix_id, WebhookEvent.status)).all()
        db.session.remove()
    return dict(rows)


def guard_rows(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(GuardRequest))
        db.session.remove()
    return int(count or 0)


def seed_retention(app) -> None:
    old, recent = timedelta(days=31), timedelta(days=29)
    for n in range(5):  # more than one batch of 2
        add_event(app, f"old_processed_{n}", "processed", old)
    add_event(app, "old_ignored", "ignored", old, event_type="session.created")
    add_event(app, "old_invalid", "invalid", old, payload=False)
    add_event(app, "old_failed", "failed", old)  # kept: failed events wait for an operator
    add_event(app, "old_received", "received", old)  # kept: still on its way
    add_event(app, "recent_processed", "processed", recent)
    for _ in range(3):
        add_guard_request(app, timedelta(days=91))
    add_guard_request(app, timedelta(days=89))


KEPT = {"old_failed": "failed", "old_received": "received", "recent_processed": "processed"}


def test_prune_deletes_settled_events_and_old_audit_rows_in_batches_failed_kept(app):
    seed_retention(app)
    batches = []
    with app.app_context():
        dry = prune_old_records(db.session(), app.config["GATEWAY"], dry_run=True)
        assert (dry.webhook_events, dry.guard_requests) == (7, 3)
        assert len(statuses(app)) == 10  # a dry run deletes nothing

        result = prune_old_records(
            db.session(),
            app.config["GATEWAY"],
            batch_size=2,
            progress=lambda table, count: batches.append((table, count)),
        )

    assert (result.webhook_events, result.guard_requests) == (7, 3)
    assert statuses(app) == KEPT
    assert guard_rows(app) == 1
    assert batches == [("webhook_events", 2)] * 3 + [("webhook_events", 1)] + [
        ("guard_requests", 2),
        ("guard_requests", 1),
    ]


def test_prune_command_dry_run_then_run_prints_one_line_summaries(make_app):
    app = make_app(WEBHOOK_RETENTION_DAYS="30", GUARD_AUDIT_RETENTION_DAYS="90")
    seed_retention(app)
    runner = app.test_cli_runner()

    dry = runner.invoke(args=["prune", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would delete 7 webhook event(s) and 3 guard_requests row(s)" in dry.output
    assert len(statuses(app)) == 10

    run = runner.invoke(args=["prune"])
    assert run.exit_code == 0, run.output
    assert run.output.splitlines()[-1] == (
        "prune: deleted 7 webhook event(s) and 3 guard_requests row(s)"
    )
    assert "\r" not in run.output  # not a terminal: no progress line
    assert statuses(app) == KEPT


def test_beat_schedule_prunes_daily_at_a_fixed_time(app):
    schedule = app.extensions["celery"].conf.beat_schedule
    prune = schedule["prune-old-records"]
    assert prune["task"] == PRUNE_OLD_RECORDS
    # A time of day survives beat restarts (Heroku's daily one); an interval would not.
    assert prune["schedule"].hour == {3} and prune["schedule"].minute == {17}


def seed_replay(app) -> None:
    add_event(app, "failed_updated_1", "failed", timedelta(hours=3))
    add_event(app, "failed_updated_2", "failed", timedelta(hours=1))
    add_event(app, "failed_created", "failed", timedelta(hours=1), event_type="user.created")
    add_event(app, "failed_not_json", "failed", payload=False)
    add_event(app, "done", "processed")


def test_bulk_replay_route_queues_failed_events_of_a_type_since(app, redis_url):
    seed_replay(app)
    client = app.test_client()
    since = (utcnow() - timedelta(hours=2)).isoformat()

    response = client.post(
        "/admin/webhook-events/replay",
        json={"status": "failed", "type": "user.updated", "since": since},
        headers=AUTH,
    )

    assert response.status_code == 202, response.get_json()
    assert response.get_json() == {"queued": 1}
    found = statuses(app)
    assert found["failed_updated_2"] == "queued"
    with app.app_context():
        attempts = db.session.scalar(
            select(WebhookEvent.attempts).where(WebhookEvent.svix_id == "failed_updated_2")
        )
        db.session.remove()
    assert attempts == 0  # a fresh start, as a single replay gives (attempts_exhausted)
    assert found["failed_updated_1"] == found["failed_created"] == "failed"
    # One wake-up: a worker claims waiting events from the table itself.
    assert queued_tasks(redis_url) == [(APPLY_WEBHOOK_EVENTS, [])]

    everything = client.post(
        "/admin/webhook-events/replay", json={"status": "failed"}, headers=AUTH
    )
    assert everything.get_json() == {"queued": 2}  # a body that is not JSON stays failed
    assert statuses(app)["failed_not_json"] == "failed"
    assert len(queued_tasks(redis_url)) == 2


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {},
        {"status": "received"},
        {"status": "failed", "since": "yesterday"},
        {"status": "failed", "since": "2026-01-01T00:00:00"},
        {"status": "failed", "type": 7},
    ],
)
def test_bulk_replay_route_bad_body_is_400_invalid_body(app, body):
    response = app.test_client().post("/admin/webhook-events/replay", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_body"


def test_bulk_replay_route_needs_the_admin_key(app):
    response = app.test_client().post(
        "/admin/webhook-events/replay",
        json={"status": "failed"},
        headers={"Authorization": "Bearer x"},
    )
    assert response.status_code == 401


def test_bulk_replay_command_status_and_type(app, redis_url):
    seed_replay(app)
    result = app.test_cli_runner().invoke(
        args=["webhooks", "replay", "--status", "failed", "--type", "user.created"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "replay: 1 event(s) queued"
    assert statuses(app)["failed_created"] == "queued"
    assert queued_tasks(redis_url) == [(APPLY_WEBHOOK_EVENTS, [])]


def test_bulk_replay_command_broker_down_exits_non_zero_rows_wait_for_sweep(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    seed_replay(app)
    result = app.test_cli_runner().invoke(args=["webhooks", "replay", "--status", "failed"])
    assert result.exit_code != 0
    assert "replay: 3 event(s) queued; broker unavailable, the sweep wakes" in result.output
    found = statuses(app)
    assert found["failed_updated_1"] == found["failed_created"] == "received"


def test_replay_command_needs_an_id_or_a_status(app):
    result = app.test_cli_runner().invoke(args=["webhooks", "replay"])
    assert result.exit_code == 2
    assert "--status" in result.output


@pytest.mark.slow
def test_queues_page_broker_depth_events_oldest_sweep_and_answering_workers(app, worker_factory):
    add_event(app, "waiting", "received", timedelta(minutes=10))
    add_event(app, "failed_one", "failed")
    add_event(app, "old_done", "processed", timedelta(days=40))
    client = app.test_client()

    before = client.get("/admin/queues", headers=AUTH).get_json()
    assert before["broker"] == "ok"
    assert before["queue_depth"] == 0
    assert before["events"] == {"received": 1, "failed": 1, "processed": 1}
    assert 600 <= before["oldest_waiting_seconds"] < 700
    assert before["last_sweep_at"] is None
    assert before["workers"] == []

    worker = worker_factory(concurrency=1)
    celery = app.extensions["celery"]
    celery.send_task(SWEEP_WEBHOOK_EVENTS)  # as beat does
    celery.send_task(PRUNE_OLD_RECORDS)

    def swept() -> dict | None:
        page = client.get("/admin/queues", headers=AUTH).get_json()
        return page if page["last_sweep_at"] and "old_done" not in statuses(app) else None

    page = wait_until(swept, timeout=60, interval=0.5)
    assert page["last_sweep_at"].endswith("Z")
    assert len(page["workers"]) == 1 and page["workers"][0].startswith("celery@")
    worker.stop()


def test_queues_page_broker_down_is_error_with_no_depth_or_workers(make_app):
    app = make_app(ADMIN_API_KEYS=KEY, REDIS_URL="redis://127.0.0.1:1/0")
    add_event(app, "waiting", "queued", timedelta(seconds=30))

    response = app.test_client().get("/admin/queues", headers=AUTH)

    assert response.status_code == 200
    page = response.get_json()
    assert page["broker"] == "error"
    assert page["queue_depth"] is None and page["workers"] == [] and page["last_sweep_at"] is None
    assert page["events"] == {"queued": 1}
    assert page["oldest_waiting_seconds"] >= 30


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal_and_is_silent_otherwise():
    terminal, pipe = _Terminal(), io.StringIO()
    with Progress("prune", total=3, stream=terminal) as shown:
        for _ in range(3):
            shown.advance(1, "webhook_events")
    with Progress("prune", total=3, stream=pipe) as silent:
        silent.advance(3)
    assert "\rprune" in terminal.getvalue() or "\r\x1b[Kprune: " in terminal.getvalue()
    assert "prune: 3/3 webhook_events" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\x1b[K")  # erased: the summary line follows alone
    assert pipe.getvalue() == ""
