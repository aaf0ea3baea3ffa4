"""Queued guard_requests rows survive a graceful stop of the web process (SIGTERM)."""

from __future__ import annotations

import http.client
import json
import signal
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.gateway.guards.upstream import Upstream
from tests.support.clerk import ISSUER
from tests.support.processes import free_port, start_gunicorn


@pytest.mark.slow
def test_gunicorn_sigterm_flushes_queued_audit_rows_before_exit(
    base_env: dict[str, str],
    database_url: str,
    upstream: Upstream,
    public_pem: str,
    mint: Callable[..., str],
    tmp_path: Path,
) -> None:
    port = free_port()
    env = base_env | {
        "GUARD_SERVICES": f"echo={upstream.url('/echo')}",
        "CLERK_JWT_KEY": public_pem,
        "CLERK_ISSUER": ISSUER,
        "WEB_CONCURRENCY": "1",
    }
    proc = start_gunicorn(env, tmp_path / "gunicorn.log", port)
    dsn = database_url.replace("+psycopg", "")
    token = mint("user_a")
    try:
        with psycopg.connect(dsn) as blocker:
            # A stalled database: the writer thread cannot insert, so the rows stay queued.
            blocker.execute("LOCK TABLE guard_requests IN ACCESS EXCLUSIVE MODE")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(5):
                conn.request(
                    "POST",
                    "/api/v1/guards/process",
                    body=json.dumps({"service": "echo", "payload": {}}),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
                response = conn.getresponse()
                response.read()
                assert response.status == 200  # answered while the database is stuck
            conn.close()
            proc.kill(signal.SIGTERM)
            # gunicorn logs this as the worker leaves its loop, before the interpreter's atexit
            # flush: from here on only that flush can write the rows, once the table is free.
            proc.wait_for_output("Worker exiting", timeout=30)
            blocker.commit()
        proc.popen.wait(15)
    finally:
        proc.stop()

    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM guard_requests").fetchone()
    assert count == (5,), proc.output()[-2000:]
