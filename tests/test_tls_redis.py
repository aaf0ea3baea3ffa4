"""A rediss:// broker as Heroku Redis gives it: a real redis-server speaking TLS with a self-signed
certificate (CONTRACT 2). Web, worker, beat, /readyz and /metrics all use it; certificate checking
is what the URL, else REDIS_SSL_CERT_REQS, else `required` says, never a silent fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from gateway.extensions import db
from gateway.models import WebhookEvent
from tests.gateway.test_metrics import samples
from tests.support.polling import wait_until
from tests.support.processes import BIN, Proc, free_port
from tests.support.svix import SECRET, clerk_event, new_user_id, post_event
from tests.support.tls import start_tls_redis_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    server = start_tls_redis_server(port, tmp_path_factory.mktemp("tls-redis"))
    try:
        yield port
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def empty_tls_broker(tls_port: int) -> Iterator[None]:
    yield
    redis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_cert_reqs="none").flushall()


# kombu keeps publishing connections in a process-wide pool keyed by host, port and database but
# not by TLS settings: each test uses its own database so no test publishes on another's
# connection (a process has one configuration, so production never meets this).


def event_status(app, svix_id: str) -> str | None:
    with app.app_context():
        try:
            return db.session.scalar(
                db.select(WebhookEvent.status).where(WebhookEvent.svix_id == svix_id)
            )
        finally:
            db.session.remove()


def test_tls_broker_without_checking_carries_webhooks_through_web_worker_and_beat(
    make_app, worker_factory, base_env, tls_port, tmp_path
):
    """Heroku's setting (ssl_cert_reqs=none): the whole path works over TLS."""
    url = f"rediss://127.0.0.1:{tls_port}/1?ssl_cert_reqs=none"
    app = make_app(REDIS_URL=url, CLERK_WEBHOOK_SECRET=SECRET, WEBHOOK_SWEEP_SECONDS="1")
    client = app.test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert found[("gateway_queue_depth", (("queue", "gateway"),))] == 0

    worker_factory(concurrency=1, REDIS_URL=url, CLERK_WEBHOOK_SECRET=SECRET)
    user_id = new_user_id()
    response = post_event(client, clerk_event("user.created", user_id, "tls@example.com"))
    assert response.status_code == 200
    svix_id = response.get_json()["event_id"]
    wait_until(lambda: event_status(app, svix_id) == "processed", timeout=60, interval=0.25)

    # Beat publishes its sweep over the same TLS connection settings, and a worker runs it.
    beat = Proc(
        [str(BIN / "celery"), "-A", "celery_app", "beat", "--loglevel=INFO"],
        base_env | {"REDIS_URL": url, "WEBHOOK_SWEEP_SECONDS": "1",
                    "CELERY_BEAT_SCHEDULE": str(tmp_path / "schedule")},
        tmp_path / "beat.log",
    )  # fmt: skip
    try:
        beat.wait_for_output("Sending due task sweep-webhook-events", timeout=60)
        # What beat said while it ran; stopping it may log celery's own "closed shelf" shutdown
        # traceback (a known beat quirk on SIGTERM), which says nothing about the TLS broker.
        running = beat.output()
    finally:
        beat.stop()
    assert "Error" not in running and "Traceback" not in running


@pytest.mark.parametrize(("checking", "database"), [("url-default", 2), ("variable", 3)])
def test_tls_broker_self_signed_with_required_checking_is_a_broker_error(
    make_app, tls_port, checking, database
):
    """The default is `required`: a self-signed broker fails the check, loudly, in /readyz;
    webhooks are still stored and acknowledged (the sweep publishes them once fixed)."""
    env = {
        "REDIS_URL": f"rediss://127.0.0.1:{tls_port}/{database}",
        "CLERK_WEBHOOK_SECRET": SECRET,
    }
    if checking == "variable":
        env |= {"REDIS_URL": env["REDIS_URL"] + "?ssl_cert_reqs=optional",
                "REDIS_SSL_CERT_REQS": "none"}  # fmt: skip  # the URL's wins
    app = make_app(**env)
    client = app.test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "error"}
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert not any(name == "gateway_queue_depth" for name, _ in found)

    response = post_event(client, clerk_event("user.created", new_user_id(), "x@example.com"))
    assert response.status_code == 200
    assert event_status(app, response.get_json()["event_id"]) == "received"


def test_tls_broker_checking_off_by_variable(make_app, tls_port):
    app = make_app(REDIS_URL=f"rediss://127.0.0.1:{tls_port}/4", REDIS_SSL_CERT_REQS="none")
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200, ready.get_json()
