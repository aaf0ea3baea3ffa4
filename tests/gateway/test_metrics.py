"""GET /metrics: request and token-failure counters, webhook events by status, queue depth."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from gateway.extensions import db
from gateway.jobs import PING, enqueue
from gateway.models import WebhookEvent
from tests.support.broker import queued_tasks
from tests.support.clerk import ISSUER
from tests.support.polling import wait_until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_counts_requests_token_failures_events_and_queue(make_app, clerk_keys, redis_url):
    app = make_app(
        CLERK_JWT_KEY=clerk_keys.primary.public_pem, CLERK_ISSUER=ISSUER, ADMIN_API_KEYS="k1"
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
        "/webhooks/clerk/users/email/ada@example.com", headers={"Authorization": "Bearer k1"}
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


def test_metrics_broker_down_still_answers_without_queue_depth(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")

    response = app.test_client().get("/metrics")

    assert response.status_code == 200
    found = samples(response.get_data(as_text=True))
    assert not any(name == "gateway_queue_depth" for name, _ in found)
