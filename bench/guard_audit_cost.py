"""What recording a guard call costs a request: inline INSERT + COMMIT vs the background writer.

    .venv/bin/python bench/guard_audit_cost.py --rows 2000

Needs PostgreSQL: a `cg_bench_<n>` database is created and migrated on TEST_PG_SERVER, then
dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.common import migrated_database, percentile  # noqa: E402
from gateway import create_app  # noqa: E402
from gateway.config import Config  # noqa: E402
from gateway.extensions import db  # noqa: E402
from gateway.guards.audit import GuardAuditWriter, GuardRequestRecord, write_guard_requests  # noqa: E402
from gateway.models import User  # noqa: E402


def record(i: int) -> GuardRequestRecord:
    return GuardRequestRecord("user_bench", "echo", 200, "ok", 1.5, f"req-{i}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    with migrated_database("audit-cost") as database_url:
        measure(args.rows, database_url)


def measure(rows: int, database_url: str) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": "redis://127.0.0.1:1/0",  # required in production; nothing here publishes
        "GATEWAY_INSTANCE_PATH": tempfile.mkdtemp(),
    }
    app = create_app(Config.from_env(env))
    with app.app_context():
        db.session.add(User(clerk_user_id="user_bench", email="bench@example.com"))
        db.session.commit()

        inline: list[float] = []
        for i in range(rows):
            started = time.perf_counter()
            write_guard_requests(db.session, [record(i)])
            db.session.commit()
            inline.append((time.perf_counter() - started) * 1000)

    writer = GuardAuditWriter(app)
    submit: list[float] = []
    started_all = time.perf_counter()
    for i in range(rows):
        started = time.perf_counter()
        writer.submit(record(i))
        submit.append((time.perf_counter() - started) * 1000)
    assert writer.flush(60)
    drained = time.perf_counter() - started_all
    with app.app_context():
        stored = db.session.scalar(text("SELECT count(*) FROM guard_requests"))
        db.session.execute(text("TRUNCATE guard_requests, users RESTART IDENTITY CASCADE"))
        db.session.commit()

    print(f"rows per method: {rows} (table holds {stored}; {writer.dropped} dropped)")
    print(
        f"inline insert+commit per request: p50 {statistics.median(inline):.3f} ms,"
        f" p99 {percentile(inline, 99):.3f} ms"
    )
    print(
        f"background writer, on the request: p50 {statistics.median(submit) * 1000:.1f} us,"
        f" p99 {percentile(submit, 99) * 1000:.1f} us;"
        f" drained {rows / drained:.0f} rows/s in batches"
    )


if __name__ == "__main__":
    main()
