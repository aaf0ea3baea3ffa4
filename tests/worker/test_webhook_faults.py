"""Faults: Redis stopped while events arrive, and a worker SIGKILLed mid-batch."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import time

import psycopg
import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import User, WebhookEvent
from gateway.webhooks.sweep import sweep_now
from tests.support.load import applied_event_ids
from tests.support.polling import LOAD_SLACK_SECONDS, wait_until
from tests.support.processes import BIN, Proc, free_port, start_redis_server
from tests.support.svix import SECRET, clerk_event, new_msg_id, new_user_id, post_event

pytestmark = pytest.mark.slow


def statuses(app) -> dict[str, WebhookEvent]:
    with app.app_context():
        rows = db.session.scalars(select(WebhookEvent)).all()
        db.session.expunge_all()
        return {row.svix_id: row for row in rows}


def count_users(app) -> int:
    with app.app_context():
        return len(db.session.scalars(select(User)).all())


def test_redis_down_events_acknowledged_then_applied_by_beat_sweep(
    make_app, worker_factory, base_env, tmp_path
):
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    redis_proc = start_redis_server(port, tmp_path / "redis-1.log")
    app = make_app(CLERK_WEBHOOK_SECRET=SECRET, REDIS_URL=broker, WEBHOOK_SWEEP_SECONDS="1")
    client = app.test_client()
    redis_proc.stop()

    sent = []
    for n in range(5):
        msg_id = new_msg_id()
        started = time.monotonic()
        response = post_event(
            client, clerk_event("user.created", new_user_id(), f"r{n}@example.com"), msg_id
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert elapsed < LOAD_SLACK_SECONDS, f"event {n} took {elapsed:.2f}s with Redis down"
        sent.append(msg_id)
    assert {statuses(app)[m].status for m in sent} == {"received"}

    redis_proc = start_redis_server(port, tmp_path / "redis-2.log")
    try:
        worker_factory(REDIS_URL=broker, WEBHOOK_SWEEP_SECONDS="1")
        beat = Proc(
            [str(BIN / "celery"), "-A", "celery_app", "beat", "--loglevel=INFO",
             f"--schedule={tmp_path / 'beat-schedule'}"],
            {**base_env, "REDIS_URL": broker, "WEBHOOK_SWEEP_SECONDS": "1"},
            tmp_path / "beat.log",
        )  # fmt: skip
        try:
            rows = wait_until(lambda: all_processed(app), timeout=60)
        finally:
            beat.stop()
    finally:
        redis_proc.stop()

    assert sorted(rows) == sorted(sent)
    assert all(row.attempts == 1 for row in rows.values())
    assert count_users(app) == 5


def all_processed(app) -> dict[str, WebhookEvent] | None:
    rows = statuses(app)
    return rows if all(row.status == "processed" for row in rows.values()) else None


def applied_lines(*procs: Proc) -> list[str]:
    return [event_id for proc in procs for event_id in applied_event_ids(proc.output())]


def test_worker_sigkilled_mid_batch_every_event_applied_exactly_once(
    make_app, worker_factory, database_url
):
    app = make_app(CLERK_WEBHOOK_SECRET=SECRET)
    client = app.test_client()
    sent = []
    user_ids = [new_user_id() for _ in range(30)]
    # Two events per user (create, then a newer update) so per-user ordering is exercised too.
    for n, user_id in enumerate(user_ids):
        for kind, stamp in (("user.created", 1000), ("user.updated", 2000)):
            msg_id = new_msg_id()
            event = clerk_event(kind, user_id, f"k{n}-{stamp}@example.com", updated_at=stamp)
            assert post_event(client, event, msg_id).status_code == 200
            sent.append(msg_id)
    # Another writer holds one user's lock, so the worker's batch is claimed and stuck half way
    # through when it is killed: a kill mid-batch, deterministically.
    with held_user_lock(database_url, user_ids[10]):
        first = worker_factory(concurrency=2)
        wait_until(lambda: any(r.status == "processing" for r in statuses(app).values()), 30)
        first.kill(signal.SIGKILL)
        first.popen.wait(10)
    at_kill = statuses(app)
    assert any(r.status == "processing" for r in at_kill.values()), "nothing held at the kill"

    second = worker_factory(concurrency=2)

    def swept_and_processed():
        # What `flask webhooks requeue --claim-ttl 0` does after a known crash: no lease wait.
        with app.app_context():
            sweep_now(app, older_than_seconds=1, claim_ttl_seconds=1)
        return all_processed(app)

    rows = wait_until(swept_and_processed, timeout=90, interval=1.0)

    assert sorted(rows) == sorted(sent)
    applied = applied_lines(first, second)
    assert len(applied) == len(set(applied)), "an event was applied twice"
    assert set(applied) <= set(sent)
    assert count_users(app) == 30
    with app.app_context():
        emails = set(db.session.scalars(select(User.email)))
    assert emails == {f"k{n}-2000@example.com" for n in range(30)}


@contextlib.contextmanager
def held_user_lock(database_url, clerk_user_id):
    """Hold a user's advisory lock on another connection (gateway.users.service's key)."""
    digest = hashlib.blake2b(clerk_user_id.encode(), digest_size=8).digest()
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest, "big", signed=True),)
        )
        yield
        conn.rollback()


def test_worker_database_down_retries_with_backoff(make_app, worker_factory):
    # The worker's database is a port nothing listens on: every claim is an OperationalError.
    worker = worker_factory(DATABASE_URL=f"postgresql://root:root@127.0.0.1:{free_port()}/down")
    app = make_app(CLERK_WEBHOOK_SECRET=SECRET)

    msg_id = new_msg_id()
    response = post_event(app.test_client(), clerk_event("user.created", new_user_id()), msg_id)
    assert response.status_code == 200

    worker.wait_for_output("Retry in", timeout=20)
    assert "OperationalError" in worker.output()
    # Untouched: the worker never reached the row; the sweep still owns it.
    assert statuses(app)[msg_id].status in ("received", "queued")
    assert statuses(app)[msg_id].attempts == 0
