"""Fixtures shared by the worker tests."""

from __future__ import annotations

import pytest

from tests.support.processes import start_celery_worker


@pytest.fixture(scope="module")
def worker(database_url, redis_url, instance_dir, tmp_path_factory):
    """One real worker for the module: tables and the queue are emptied between tests."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GATEWAY_INSTANCE_PATH": str(instance_dir),
    }
    proc = start_celery_worker(env, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()
