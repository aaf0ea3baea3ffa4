"""The background writer of guard_requests rows: batching, bounded queue, failures, idle exit."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from flask import Flask
from sqlalchemy import func, select

from gateway.extensions import db
from gateway.guards.audit import GuardAuditWriter, GuardRequestRecord
from gateway.models import GuardRequest
from tests.support.polling import LOAD_SLACK_SECONDS, wait_until
from tests.support.processes import free_port


def record(request_id: str) -> GuardRequestRecord:
    return GuardRequestRecord("user_a", "echo", 200, "ok", 1.0, request_id)


def count_rows(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(GuardRequest)) or 0


def test_audit_writer_writes_many_rows_in_batches(app: Flask) -> None:
    writer = GuardAuditWriter(app, batch_size=50)

    for i in range(500):
        writer.submit(record(f"r{i}"))

    assert writer.flush(10)
    assert count_rows(app) == 500
    assert (writer.written, writer.dropped) == (500, 0)


def test_audit_writer_full_queue_drops_and_counts_instead_of_blocking(
    app: Flask, database_url: str
) -> None:
    # No lingering: the writer takes one row and blocks on the lock with it.
    writer = GuardAuditWriter(app, max_queue=1, linger_seconds=0)
    with psycopg.connect(database_url.replace("+psycopg", "")) as blocker:
        # Hold the table so the writer's INSERT waits: the database is "slow".
        blocker.execute("LOCK TABLE guard_requests IN ACCESS EXCLUSIVE MODE")
        writer.submit(record("taken"))
        wait_until(lambda: writer._queue.empty())  # the writer holds it, blocked on the lock
        writer.submit(record("queued"))
        started = time.monotonic()
        writer.submit(record("dropped"))
        # Never waits on the database (which is held until the end of this block).
        assert time.monotonic() - started < LOAD_SLACK_SECONDS
        assert writer.dropped == 1
        blocker.commit()

    assert writer.flush(10)
    with app.app_context():
        ids = set(db.session.scalars(select(GuardRequest.request_id)))
    assert ids == {"taken", "queued"}


def test_audit_writer_database_down_drops_batch_and_keeps_running(
    make_app: Callable[..., Flask],
) -> None:
    down = make_app(DATABASE_URL=f"postgresql://root:root@127.0.0.1:{free_port()}/nowhere")
    writer = GuardAuditWriter(down)

    writer.submit(record("lost-1"))
    writer.submit(record("lost-2"))

    assert writer.flush(30)
    assert writer.dropped == 2
    assert writer._thread is not None and writer._thread.is_alive()


def test_audit_writer_idle_thread_exits_and_next_row_starts_a_new_one(app: Flask) -> None:
    writer = GuardAuditWriter(app, idle_seconds=0.05)
    writer.submit(record("first"))
    assert writer.flush(10)
    wait_until(lambda: writer._thread is None)

    writer.submit(record("second"))

    assert writer.flush(10)
    assert count_rows(app) == 2


def test_audit_writer_nul_in_client_service_name_loses_no_row_of_its_batch(app: Flask) -> None:
    writer = GuardAuditWriter(app, batch_size=50)
    # An unknown service name is the client's: "bad\0name" posted to /api/v1/guards/process.
    writer.submit(GuardRequestRecord("user_a", "bad\x00name", None, "guard_unknown", 0.0, "r-x"))
    for i in range(9):
        writer.submit(record(f"r{i}"))

    assert writer.flush(10)
    assert (writer.written, writer.dropped) == (10, 0)
    assert count_rows(app) == 10
