"""GET /metrics: request counters and latency, token failures, guard calls, the ledger and the
queue; summed over gunicorn's processes; behind METRICS_BEARER_TOKEN when set."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import requests
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from gateway.extensions import db
from gateway.jobs import PING, enqueue
from gateway.models import WebhookEvent
from gateway.models.base import utcnow
from tests.gateway.guards.upstream import Upstream
from tests.support.broker import queued_tasks
from tests.support.clerk import ISSUER
from tests.support.polling import wait_until
from tests.support.processes import free_port, start_gunicorn


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


ADMIN_KEY = "metrics-test-admin-key-" + "x" * 16


def test_metrics_counts_requests_token_failures_events_and_queue(make_app, clerk_keys, redis_url):
    app = make_app(
        CLERK_JWT_KEY=clerk_keys.primary.public_pem, CLERK_ISSUER=ISSUER, ADMIN_API_KEYS=ADMIN_KEY
    )
    client = app.test_client()
    with app.app_context():
        for n, status in enumerate(["processed", "processed", "failed"]):
            db.session.add(WebhookEvent(svix_id=f"msg_{n}", status=status))
        db.session.commit()
    assert enqueue(app, PING)
    wait_until(lambda: queued_tasks(redis_url), timeout=10)
    client.get("/healthz")
    client.get("/healthz")
    client.get("/api/v1/auth/me")
    client.open("/healthz", method="BREW")
    client.open("/healthz", method="MAKECOFFEE")
    client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not-a-jwt"})
    client.get(
        "/webhooks/clerk/users/email/ada@example.com",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = response.get_data(as_text=True)
    assert "ada@example.com" not in text  # route templates, never paths
    found = samples(text)
    request = "gateway_requests_total"
    assert found[(request, (("method", "GET"), ("route", "/healthz"), ("status", "200")))] == 2
    assert (
        found[(request, (("method", "GET"), ("route", "/api/v1/auth/me"), ("status", "401")))] == 2
    )
    by_email = "/webhooks/clerk/users/email/<path:email>"
    assert found[(request, (("method", "GET"), ("route", by_email), ("status", "404")))] == 1
    assert found[(request, (("method", "other"), ("route", "unmatched"), ("status", "405")))] == 2
    assert found[("gateway_token_failures_total", (("code", "token_missing"),))] == 1
    assert found[("gateway_token_failures_total", (("code", "token_invalid"),))] == 1
    assert found[("gateway_webhook_events", (("status", "processed"),))] == 2
    assert found[("gateway_webhook_events", (("status", "failed"),))] == 1
    assert found[("gateway_queue_depth", (("queue", "gateway"),))] == 1
    # The latency histogram counts every request of a route, in seconds.
    healthz = (("route", "/healthz"),)
    assert found[("gateway_request_duration_seconds_count", healthz)] == 2
    assert 0 < found[("gateway_request_duration_seconds_sum", healthz)] < 10
    assert found[("gateway_request_duration_seconds_bucket", (("le", "+Inf"), *healthz))] == 2
    # Nothing waits (processed and failed only).
    assert found[("gateway_oldest_waiting_event_seconds", ())] == 0


def test_metrics_broker_down_still_answers_without_queue_depth(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")

    response = app.test_client().get("/metrics")

    assert response.status_code == 200
    found = samples(response.get_data(as_text=True))
    assert not any(name == "gateway_queue_depth" for name, _ in found)


def test_metrics_oldest_waiting_event_age_counts_received_and_queued_only(make_app):
    app = make_app()
    now = utcnow()
    with app.app_context():
        db.session.add_all(
            [
                WebhookEvent(
                    svix_id="old_done", status="processed", received_at=now - timedelta(hours=5)
                ),
                WebhookEvent(
                    svix_id="queued", status="queued", received_at=now - timedelta(seconds=300)
                ),
                WebhookEvent(
                    svix_id="fresh", status="received", received_at=now - timedelta(seconds=5)
                ),
            ]
        )
        db.session.commit()

    found = samples(app.test_client().get("/metrics").get_data(as_text=True))

    assert 300 <= found[("gateway_oldest_waiting_event_seconds", ())] < 400


def test_metrics_guard_calls_by_configured_service_and_outcome(make_app):
    upstream = Upstream().start()
    closed = free_port()
    try:
        app = make_app(
            CLERK_ENABLED="false",
            GUARD_SERVICES=f"echo={upstream.url('/echo')},down=http://127.0.0.1:{closed}/x",
        )
        client = app.test_client()
        for service in ("echo", "echo", "down", "made-up-name", "Échec\ud800"):
            client.post("/api/v1/guards/process", json={"service": service, "payload": {}})
        client.post("/api/v1/guards/process", json={"service": 7})  # not a call: bad body

        found = samples(client.get("/metrics").get_data(as_text=True))
    finally:
        upstream.stop()
    calls = {
        labels: value
        for (name, labels), value in found.items()
        if name == "gateway_guard_calls_total"
    }
    assert calls == {
        (("outcome", "ok"), ("service", "echo")): 2,
        (("outcome", "guard_unavailable"), ("service", "down")): 1,
        # A name the client made up is never a series of its own.
        (("outcome", "guard_unknown"), ("service", "unknown")): 2,
    }


def test_metrics_bearer_token_required_when_set(make_app):
    client = make_app(METRICS_BEARER_TOKEN="scrape-secret-0123456789").test_client()

    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-x"})
    right = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-0123456789"})

    assert missing.status_code == wrong.status_code == 401
    assert missing.content_type == "application/problem+json"
    assert missing.get_json()["code"] == "metrics_token_invalid"
    assert "scrape-secret" not in wrong.get_data(as_text=True)
    assert right.status_code == 200
    assert "gateway_requests_total" in right.get_data(as_text=True)


@pytest.mark.slow
def test_metrics_sum_every_gunicorn_process_dead_ones_included(base_env, tmp_path):
    """Two gunicorn workers, each replaced after 15 requests: every scrape, whichever process
    answers it, counts all 60 requests of all of them (CONTRACT 4.7)."""
    port = free_port()
    env = base_env | {"GATEWAY_INSTANCE_PATH": str(tmp_path), "WEB_CONCURRENCY": "2"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # A master killed before it could clean up (pid 2**22 + 1 is above Linux's pid_max).
    stale = tmp_path / "metrics" / f"gunicorn-{2**22 + 1}" / "counter_1.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a previous run")
    proc = start_gunicorn(
        env, tmp_path / "gunicorn.log", port, max_requests="15", max_requests_jitter="0"
    )
    try:
        assert not stale.parent.exists()  # the new master removed it at start
        (metrics_dir,) = (tmp_path / "metrics").glob("gunicorn-*")  # this master's own
        base = f"http://127.0.0.1:{port}"
        errors: list[BaseException] = []

        def hit(count: int) -> None:
            try:
                for _ in range(count):
                    # A fresh connection each time, so the processes share the load. Generous:
                    # while both workers restart, a request waits for a new one to boot.
                    response = requests.get(f"{base}/healthz", timeout=60)
                    assert response.status_code == 200
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=hit, args=(15,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        assert not errors, errors

        def counted() -> dict | None:
            found = samples(requests.get(f"{base}/metrics", timeout=10).text)
            key = (
                "gateway_requests_total",
                (("method", "GET"), ("route", "/healthz"), ("status", "200")),
            )
            return found if found.get(key) == 60 else None

        for _ in range(3):  # each scrape may land on another process
            found = wait_until(counted, timeout=30, interval=0.5)
            assert found[("gateway_request_duration_seconds_count", (("route", "/healthz"),))] == 60
        pids = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
        assert len(pids) >= 4, pids  # 60 requests, 15 per process: at least four processes
    finally:
        proc.stop()
    assert "Traceback" not in proc.output()
    assert not metrics_dir.exists()  # removed by the master on a graceful stop
