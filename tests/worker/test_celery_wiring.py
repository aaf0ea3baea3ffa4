"""A real Celery worker process on Redis runs our tasks inside an app context."""

import time
import uuid

import pytest

from gateway.jobs import PING, enqueue
from tests.support.polling import LOAD_SLACK_SECONDS
from tests.support.processes import free_port


@pytest.mark.slow
def test_task_round_trips_through_real_worker_in_app_context(make_app, worker_factory, redis_url):
    # Results are off by default; this test turns the Redis result backend on to read the answer.
    app = make_app(CELERY_RESULT_BACKEND=redis_url)
    worker_factory(CELERY_RESULT_BACKEND=redis_url)
    celery = app.extensions["celery"]
    marker = uuid.uuid4().hex
    result = celery.send_task(PING, args=(marker,))
    assert result.get(timeout=30) == {"marker": marker, "app": "gateway.app"}


def test_enqueue_with_broker_down_returns_false_quickly(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    assert enqueue(app, PING, "x") is False
    bound = app.config["GATEWAY"].broker_publish_timeout_seconds + LOAD_SLACK_SECONDS
    assert time.monotonic() - started < bound
