"""A real Celery worker process on Redis runs our tasks inside an app context."""

import uuid

import pytest

from gateway.jobs import PING, enqueue


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
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    assert enqueue(app, PING, "x") is False
    assert time.monotonic() - started < 3
