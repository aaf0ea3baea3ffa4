"""Through the Procfile's gunicorn: a client still sending an oversized body receives the answer.

The finding: over keep-alive, 14 of 40 oversized webhook posts got a reset connection instead of
the 413; gunicorn drains at most 64 KiB of an unread body, then closes under the client's feet.
"""

from __future__ import annotations

import http.client
import json

import pytest
from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import WebhookEvent
from tests.support.processes import free_port, start_gunicorn
from tests.support.svix import SECRET, sign

MIB = 1024 * 1024


@pytest.fixture
def gunicorn(base_env, tmp_path):
    port = free_port()
    env = base_env | {
        "CLERK_WEBHOOK_SECRET": SECRET,
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "2",
    }
    proc = start_gunicorn(env, tmp_path / "gunicorn.log", port)
    yield port
    proc.stop()
    assert "Traceback" not in proc.output()


def _chunks(body: bytes, size: int = 64 * 1024):
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/webhooks/clerk", 413, "payload_too_large"),
        ("/api/v1/guards/process", 401, "token_missing"),  # refused before its body is read
    ],
)
def test_oversized_posts_over_keep_alive_all_receive_the_answer(
    gunicorn, make_app, path, status, code
):
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn, timeout=30)
    answers = []
    for n in range(12):
        body = b'{"pad": "' + b"x" * (MIB + 200_000 + n * 150_000) + b'"}'
        headers = {"Content-Type": "application/json", **sign(b"{}")}
        chunked = n % 3 == 2  # no Content-Length: the app must count what it reads
        try:
            if chunked:
                conn.request("POST", path, body=_chunks(body), headers=headers, encode_chunked=True)
            else:
                conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            answers.append((response.status, json.loads(response.read())["code"]))
        except (ConnectionError, http.client.HTTPException) as exc:
            answers.append((0, type(exc).__name__))
            conn.close()
    assert answers == [(status, code)] * 12
    app = make_app()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


@pytest.fixture
def werkzeug_server(make_app, clerk_keys):
    """werkzeug's own server, whose wsgi.input is the raw socket: reading past the body blocks."""
    import threading

    from werkzeug.serving import make_server

    from tests.support.clerk import ISSUER

    app = make_app(CLERK_JWT_KEY=clerk_keys.primary.public_pem, CLERK_ISSUER=ISSUER)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.shutdown()
    thread.join(10)


def test_refusal_after_the_body_was_read_answers_at_once_on_any_server(werkzeug_server, clerk_keys):
    """The discard reads through the request's own bounded stream, never the raw socket."""
    from tests.support.clerk import mint_token

    conn = http.client.HTTPConnection("127.0.0.1", werkzeug_server, timeout=5)
    token = mint_token(clerk_keys.primary)
    for headers, status in (({"Authorization": f"Bearer {token}"}, 404), ({}, 401)):
        body = json.dumps({"service": "nope", "payload": {"x": "y" * 1000}})
        conn.request(
            "POST",
            "/api/v1/guards/process",
            body=body,
            headers={"Content-Type": "application/json", **headers},
        )
        response = conn.getresponse()
        assert response.status == status
        response.read()
