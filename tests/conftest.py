"""Shared fixtures: a migrated PostgreSQL database, Redis, the app, and real Celery workers.

Each test gets clean tables (TRUNCATE after the test): tests here commit for real, because real
worker processes and concurrent requests must see each other's rows.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from gateway import create_app
from gateway.config import Config
from gateway.extensions import db
from tests.support.processes import (
    ROOT,
    Proc,
    free_port,
    start_celery_worker,
    start_redis_server,
)

# Shared Clerk doubles: clerk_keys, jwks_server, clerk_backend, clerk_env, clerk_app, auth_headers.
pytest_plugins = ["tests.support.clerk", "tests.support.stripe"]

# Where PostgreSQL lives; the Makefile makes sure it answers. Several checkouts on one machine get
# their own database, named after the checkout's path. Redis is a private redis-server per test
# session (the Makefile makes sure it is installed), so parallel runs never share a queue;
# TEST_REDIS_SERVER points the suite at an existing server instead.
PG_SERVER = os.environ.get("TEST_PG_SERVER", "postgresql://root:root@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("TEST_REDIS_SERVER")
_CHECKOUT = zlib.crc32(str(ROOT).encode())
TEST_DB_NAME = f"cg_test_{_CHECKOUT % 100000}"
TABLES = (
    "guard_requests",
    "biasguard_audit_logs",
    "webhook_events",
    "organization_memberships",
    "organizations",
    "users",
)


def _admin_connect() -> psycopg.Connection[Any]:
    return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5)


def recreate_database(name: str) -> str:
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_SERVER}/{name}"


def drop_database(name: str) -> None:
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def upgrade_database(config: Config) -> None:
    from flask_migrate import upgrade

    app = create_app(config)
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def database_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = recreate_database(TEST_DB_NAME)
    instance = tmp_path_factory.mktemp("migrate")
    upgrade_database(
        Config.from_env(
            {"DATABASE_URL": url, "REDIS_URL": redis_url, "GATEWAY_INSTANCE_PATH": str(instance)}
        )
    )
    return url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REDIS_SERVER:
        url = f"{REDIS_SERVER}/{1 + _CHECKOUT % 15}"
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    port = free_port()
    server = start_redis_server(port, tmp_path_factory.mktemp("redis") / "redis.log")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("instance")


@pytest.fixture
def base_env(database_url: str, redis_url: str, instance_dir: Path) -> dict[str, str]:
    """The environment of a production-like gateway on the test services."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GATEWAY_INSTANCE_PATH": str(instance_dir),
    }


@pytest.fixture
def make_config(base_env: dict[str, str]) -> Callable[..., Config]:
    """Config.from_env over base_env plus overrides, exactly as a process would read it."""

    def make(**overrides: str) -> Config:
        return Config.from_env({**base_env, **overrides})

    return make


@pytest.fixture
def make_app(make_config: Callable[..., Config]) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(config: Config | None = None, **overrides: str) -> Flask:
        app = create_app(config or make_config(**overrides))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(autouse=True)
def clean_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that touched the database or the broker leaves them empty.

    The broker too: ids restart with the tables, so a job a test left queued (a login's Stripe
    job) would act on the next test's rows as soon as that test starts a worker. A worker that
    outlives a test keeps receiving: each test's app declares the queue again when it publishes.
    """
    yield
    if "redis_url" in request.fixturenames:
        redis.Redis.from_url(request.getfixturevalue("redis_url")).flushdb()
    if "database_url" not in request.fixturenames:
        return
    url = request.getfixturevalue("database_url")
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")


@pytest.fixture
def worker_factory(
    base_env: dict[str, str], tmp_path: Path, redis_url: str
) -> Iterator[Callable[..., Proc]]:
    """Start real Celery worker processes (prefork) on the test broker and database."""
    started: list[Proc] = []

    def start(concurrency: int = 2, **env: str) -> Proc:
        log_path = tmp_path / f"worker-{len(started)}.log"
        proc = start_celery_worker({**base_env, **env}, log_path, concurrency=concurrency)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
    redis.Redis.from_url(redis_url).flushdb()
