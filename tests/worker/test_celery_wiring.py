"""A real Celery worker process on Redis runs our tasks inside an app context."""

import threading
import time
import uuid
from typing import Any

import pytest

from gateway.jobs import PING, enqueue
from tests.support.polling import LOAD_SLACK_SECONDS, wait_until
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


@pytest.mark.slow
def test_task_events_reach_an_event_receiver_as_flower_sees_them(make_app, worker_factory):
    """worker_send_task_events and task_send_sent_event are on (CONTRACT 4.7): what Flower and
    Celery exporters consume. A receiver sees the publisher's task-sent and the worker's
    task-received and task-succeeded of the same task, whose arguments are the id we sent."""
    app = make_app()
    worker_factory(concurrency=1)
    celery = app.extensions["celery"]
    events: list[dict[str, Any]] = []
    receivers: list[Any] = []

    def listen() -> None:
        with celery.connection_for_read() as conn:
            receiver = celery.events.Receiver(conn, handlers={"*": events.append})
            receivers.append(receiver)
            # Runs until should_stop, checked every second (kombu's safety interval).
            receiver.capture(limit=None, timeout=None, wakeup=False)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    sent: list[str] = []

    wanted = {"task-sent", "task-received", "task-succeeded"}

    def seen_whole() -> dict[str, dict[str, Any]] | None:
        # The receiver's queue exists only once it consumes, and a task published before that
        # has its first events lost: publish until one task is seen from sent to succeeded.
        sent.append(celery.send_task(PING, args=(f"marker-{len(sent)}",)).id)
        for task_id in sent:
            by_type = {e["type"]: e for e in list(events) if e.get("uuid") == task_id}
            if wanted <= set(by_type):
                return by_type
        return None

    try:
        seen = wait_until(seen_whole, timeout=60, interval=1.0)
    finally:
        for receiver in receivers:
            receiver.should_stop = True
        listener.join(10)
    assert seen["task-sent"]["name"] == PING
    assert seen["task-received"]["args"].startswith("('marker-")
