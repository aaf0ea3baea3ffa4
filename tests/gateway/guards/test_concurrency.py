"""Concurrent callers through real gunicorn (Procfile config): no token ever crosses users."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest

from tests.gateway.guards.upstream import Upstream
from tests.support.clerk import ISSUER
from tests.support.polling import wait_until
from tests.support.processes import Proc, free_port, start_gunicorn

USERS = ("user_alice", "user_bob", "user_carol")
REQUESTS_PER_USER = 100


@pytest.fixture
def gunicorn(
    base_env: dict[str, str], upstream: Upstream, public_pem: str, tmp_path: Path
) -> Iterator[int]:
    port = free_port()
    env = base_env | {
        "GUARD_SERVICES": f"echo={upstream.url('/echo')}",
        "GUARD_TIMEOUT_SECONDS": "20",
        "CLERK_JWT_KEY": public_pem,
        "CLERK_ISSUER": ISSUER,
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "8",
    }
    proc: Proc = start_gunicorn(env, tmp_path / "gunicorn.log", port)
    yield port
    proc.stop()


def post_as(port: int, token: str, body: dict[str, Any], forged_user: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/api/v1/guards/process",
            body=json.dumps(body),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                # Another user's id: the gateway must forward the token's sub, not this.
                "X-Clerk-User-Id": forged_user,
            },
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_process_concurrent_users_through_gunicorn_never_mix_tokens(
    gunicorn: int, upstream: Upstream, mint: Callable[..., str], database_url: str
) -> None:
    tokens = {user: mint(user) for user in USERS}
    jobs = [
        (user, seq) for seq in range(REQUESTS_PER_USER) for user in USERS
    ]  # interleaved: every user's requests are in flight together

    def send(job: tuple[str, int]) -> tuple[str, int, Any]:
        user, seq = job
        forged = USERS[(USERS.index(user) + 1) % len(USERS)]
        status, body = post_as(
            gunicorn,
            tokens[user],
            {"service": "echo", "payload": {"user": user, "seq": seq}},
            forged,
        )
        return user, status, body

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(send, jobs, timeout=120))

    assert [status for _, status, _ in results] == [200] * len(jobs), results[:3]
    # What each caller got back was sent with its own token.
    reply_mismatches = [
        user
        for user, _, body in results
        if body["data"]["headers"]["authorization"] != f"Bearer {tokens[user]}"
        or body["data"]["headers"]["x-clerk-user-id"] != user
        or body["data"]["payload"]["user"] != user
    ]
    assert reply_mismatches == []
    # And what the upstream saw: every (token, X-Clerk-User-Id) pair belongs to one user.
    assert len(upstream.hits) == len(jobs)
    upstream_mismatches = []
    for hit in upstream.hits:
        token = hit.headers["authorization"].removeprefix("Bearer ")
        sub = jwt.decode(token, options={"verify_signature": False})["sub"]
        if not (sub == hit.headers["x-clerk-user-id"] == hit.json()["user"]):
            upstream_mismatches.append(hit)
    assert upstream_mismatches == []
    seen = {(hit.json()["user"], hit.json()["seq"]) for hit in upstream.hits}
    assert seen == set(jobs)
    # The workers' audit writers record every call, each under its caller.
    assert wait_for_audit_rows(database_url, len(jobs)) == {
        (user, "ok"): REQUESTS_PER_USER for user in USERS
    }


def wait_for_audit_rows(database_url: str, expected: int, timeout: float = 60) -> dict[Any, int]:
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:

        def counts() -> dict[Any, int]:
            rows = conn.execute(
                "SELECT clerk_user_id, outcome, count(*) FROM guard_requests GROUP BY 1, 2"
            ).fetchall()
            return {(user, outcome): n for user, outcome, n in rows}

        wait_until(
            lambda: sum(counts().values()) >= expected, timeout, describe=lambda: str(counts())
        )
        return counts()
