"""The fault suite (`make test-faults`): the Procfile's processes on loopback, faults injected.

Each test starts its own deployment: gunicorn with gunicorn.conf.py (2 processes), real Celery
worker processes, beat where the scenario needs the sweep, a private redis-server (so it can be
stopped and frozen without touching other tests), the test PostgreSQL database (directly or
through a TCP proxy the test can cut), localstripe, the Clerk doubles and a guard upstream.
Outcomes are read straight from PostgreSQL and the worker logs, never through the code under test.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.gateway.guards.upstream import Upstream
from tests.support.clerk import ISSUER, SECRET_KEY, ClerkBackend, ClerkKeys, mint_token
from tests.support.faults import TcpProxy
from tests.support.load import applied_event_ids
from tests.support.processes import (
    BIN,
    Proc,
    free_port,
    start_celery_worker,
    start_gunicorn,
    start_redis_server,
)
from tests.support.svix import SECRET

FINAL = {"processed", "ignored", "invalid", "failed"}


@dataclass
class Deployment:
    env: dict[str, str]
    database_url: str  # direct, for the test's own reads
    tmp: Path
    redis_port: int
    redis: Proc
    web_port: int = 0
    db_proxy: TcpProxy | None = None  # when the processes reach PostgreSQL through a proxy
    procs: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    # Processes -----------------------------------------------------------------------------

    def start_web(self) -> None:
        self.web_port = free_port()
        web = start_gunicorn(
            {**self.env, "WEB_CONCURRENCY": "2"}, self.tmp / "web.log", self.web_port
        )
        self.procs.append(web)

    def start_worker(self, concurrency: int = 2) -> Proc:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        worker = start_celery_worker(self.env, log, concurrency=concurrency)
        self.workers.append(worker)
        self.procs.append(worker)
        return worker

    def start_beat(self) -> Proc:
        argv = [str(BIN / "celery"), "-A", "celery_app", "beat", "--loglevel=INFO",
                f"--schedule={self.tmp / 'beat-schedule'}"]  # fmt: skip
        beat = Proc(argv, self.env, self.tmp / "beat.log")
        self.procs.append(beat)
        return beat

    def stop_redis(self) -> None:
        self.redis.stop()

    def start_redis(self) -> None:
        self.redis = start_redis_server(self.redis_port, self.tmp / "redis-again.log")

    def freeze_redis(self) -> None:
        self.redis.kill(signal.SIGSTOP)

    def thaw_redis(self) -> None:
        self.redis.kill(signal.SIGCONT)

    def stop(self) -> None:
        self.thaw_redis()
        for proc in reversed(self.procs):
            proc.stop()
        self.redis.stop()

    # Reading the outcome ------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            return list(conn.execute(sql, params).fetchall())

    def events(self) -> dict[str, tuple[str, int, str | None]]:
        """svix-id -> (status, attempts, last_error)."""
        rows = self.query("SELECT svix_id, status, attempts, last_error FROM webhook_events")
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

    def unfinished(self) -> int:
        return sum(1 for status, _, _ in self.events().values() if status not in FINAL)

    def users(self) -> dict[str, tuple[str | None, bool, str | None]]:
        """clerk_user_id -> (email, is_active, stripe_customer_id)."""
        rows = self.query("SELECT clerk_user_id, email, is_active, stripe_customer_id FROM users")
        return {row[0]: (row[1], row[2], row[3]) for row in rows}

    def applied_ids(self) -> list[str]:
        """Every event id a worker logged as applied (one line per apply)."""
        return [i for worker in self.workers for i in applied_event_ids(worker.output())]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"


def via(url: str, proxy: TcpProxy) -> str:
    """The database URL with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = proxy.address
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture
def deployment(
    database_url: str,
    tmp_path: Path,
    clerk_keys: ClerkKeys,
    clerk_backend: ClerkBackend,
    upstream: Upstream,
) -> Iterator[Callable[..., Deployment]]:
    """deployment(**env) -> a Deployment with redis started (web, worker, beat on request)."""
    started: list[Deployment] = []
    proxies: list[TcpProxy] = []

    def make(db_proxy: bool = False, **overrides: str) -> Deployment:
        url, proxy = database_url, None
        if db_proxy:
            parts = urlsplit(database_url)
            proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
            proxies.append(proxy)
            url = via(database_url, proxy)
        redis_port = free_port()
        redis = start_redis_server(redis_port, tmp_path / "redis.log")
        env = {
            "DATABASE_URL": url,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "GATEWAY_INSTANCE_PATH": str(tmp_path / "instance"),
            "CLERK_WEBHOOK_SECRET": SECRET,
            "CLERK_JWT_KEY": clerk_keys.primary.public_pem,
            "CLERK_ISSUER": ISSUER,
            "CLERK_SECRET_KEY": SECRET_KEY,
            "CLERK_API_URL": clerk_backend.url,
            "GUARD_SERVICES": f"echo={upstream.url('/echo')},hang={upstream.url('/slow')}",
            # Beat is started only where a scenario needs the sweep; then it runs often.
            "WEBHOOK_SWEEP_SECONDS": "2",
            **overrides,
        }
        deployment = Deployment(env, database_url, tmp_path, redis_port, redis, db_proxy=proxy)
        started.append(deployment)
        return deployment

    yield make
    for deployment in started:
        deployment.stop()
    for proxy in proxies:
        proxy.close()


def bearer(keys: ClerkKeys, user_id: str, **claims: Any) -> dict[str, str]:
    """A session token for `user_id`, valid for a minute (as Clerk's are)."""
    return {"Authorization": f"Bearer {mint_token(keys.primary, user_id=user_id, **claims)}"}
