"""The app shell: problem+json everywhere, request ids, health and readiness."""

import json
import logging
import re
import socket
import threading
import time

import pytest

from gateway.errors import PROBLEM_CONTENT_TYPE
from gateway.logs import JsonFormatter
from tests.support.polling import LOAD_SLACK_SECONDS


def test_unknown_route_is_problem_json_404(client):
    response = client.get("/no-such-route")
    assert response.status_code == 404
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    body = response.get_json(force=True)
    assert body["code"] == "not_found"
    assert body["status"] == 404
    assert "<html" not in response.get_data(as_text=True).lower()


def test_wrong_method_is_problem_json_405(client):
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    assert response.get_json(force=True)["code"] == "method_not_allowed"


def test_unexpected_exception_is_500_problem_without_stack(app, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret-detail eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig")

    from gateway.auth.public import public

    public(boom)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/boom", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    body = response.get_json(force=True)
    assert body["code"] == "internal_error"
    assert body["request_id"] == response.headers["X-Request-ID"] != "req-123"
    text = response.get_data(as_text=True)
    assert "secret-detail" not in text and "Traceback" not in text


def test_request_id_is_the_gateways_client_value_only_a_logged_correlation_id(client, caplog):
    """A client-chosen X-Request-ID never becomes the request id (audit rows, guards, logs)."""
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        given = client.get("/healthz", headers={"X-Request-ID": "abc-1"})
        spaces = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    ids = [given.headers["X-Request-ID"], spaces.headers["X-Request-ID"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids) and ids[0] != ids[1]
    entries = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert [(e["request_id"], e.get("correlation_id")) for e in entries] == [
        (ids[0], "abc-1"),
        (ids[1], None),
    ]


def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_ok_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_broker_refusing_is_503(make_app):
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "broker": "error"}


@pytest.fixture
def black_hole():
    """A TCP server that accepts and never answers: a hung Redis or PostgreSQL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_readyz_hung_broker_answers_503_within_bound(make_app, black_hole):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{black_hole}/0")
    started = time.monotonic()
    response = app.test_client().get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.get_json()["checks"]["broker"] == "error"
    # CONTRACT 3: a hung dependency makes /readyz answer 503 after its check timeout, not hang.
    assert elapsed < app.config["GATEWAY"].readiness_timeout_seconds + LOAD_SLACK_SECONDS, elapsed


def test_readyz_hung_database_answers_503_within_bound(make_app, black_hole):
    app = make_app(DATABASE_URL=f"postgresql://root@127.0.0.1:{black_hole}/x")
    started = time.monotonic()
    response = app.test_client().get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "error", "broker": "ok"}
    # CONTRACT 3: a hung dependency makes /readyz answer 503 after its check timeout, not hang.
    assert elapsed < app.config["GATEWAY"].readiness_timeout_seconds + LOAD_SLACK_SECONDS, elapsed


def test_logs_are_json_lines_with_request_id_and_no_secrets(client, caplog):
    with caplog.at_level(logging.INFO):
        client.get(
            "/webhooks/clerk/users/email/alice@example.com",
            headers={"X-Request-ID": "rid-42", "Authorization": "Bearer eyJabcdefgh.eyJpay.sig"},
        )
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    entries = [json.loads(line) for line in lines]
    access = [e for e in entries if e["logger"] == "gateway.access"]
    assert access and access[-1]["correlation_id"] == "rid-42"
    assert re.fullmatch(r"[0-9a-f]{32}", access[-1]["request_id"])
    assert access[-1]["status"] == 404
    text = "\n".join(lines)
    assert "alice@example.com" not in text
    assert "eyJpay" not in text


def test_access_log_by_email_path_is_redacted_not_just_masked(client, caplog):
    # The scrubber alone would leave "a***@example.com"; the contract wants the path redacted.
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        client.get("/webhooks/clerk/users/email/alice@example.com")
    access = [r for r in caplog.records if r.name == "gateway.access"]
    assert access, "no access log line"
    entry = json.loads(JsonFormatter().format(access[-1]))
    assert entry["path"] == "/webhooks/clerk/users/email/[redacted]"
    assert "example.com" not in entry["msg"] and "alice" not in entry["msg"]


def test_problem_body_has_every_rfc9457_member(client):
    response = client.get("/no-such-route", headers={"X-Request-ID": "rid-shape"})
    body = response.get_json(force=True)
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["type"].endswith("/" + body["code"])
    assert body["title"] == "Not found" and body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"] != "rid-shape"


def test_unmapped_werkzeug_error_keeps_its_status_as_problem_json(app):
    from werkzeug.exceptions import UnsupportedMediaType

    from gateway.auth.public import public

    @app.post("/needs-json")
    @public
    def needs_json():
        raise UnsupportedMediaType()

    response = app.test_client().post(
        "/needs-json", data="x", content_type="text/plain", headers={"X-Request-ID": "rid-415"}
    )
    assert response.status_code == 415
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    body = response.get_json(force=True)
    assert body["status"] == 415
    assert body["code"] == "unsupported_media_type"
    assert body["title"] == "Unsupported Media Type"
    assert body["type"].endswith("/unsupported_media_type")
    assert body["request_id"] == response.headers["X-Request-ID"] != "rid-415"
    assert "<html" not in response.get_data(as_text=True).lower()


@pytest.mark.parametrize(
    "path", ["/api//v1/guards", "//healthz", "/api/v1//auth/me", "/webhooks//clerk/users/u1"]
)
def test_doubled_slash_is_no_redirect_and_never_reflects_host(client, path):
    """The finding: /api//v1/guards gave a 308 text/html whose Location was built from Host."""
    response = client.get(path, headers={"Host": "evil.example"})
    assert not 300 <= response.status_code < 400, response.status_code
    assert "Location" not in response.headers
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    assert "evil.example" not in response.get_data(as_text=True)


def test_trailing_slash_is_no_redirect(client):
    response = client.get("/healthz/", headers={"Host": "evil.example"})
    assert "Location" not in response.headers
    assert response.status_code in (200, 404)
    assert "evil.example" not in response.get_data(as_text=True)


def _log_text(caplog) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


@pytest.mark.parametrize(
    "path",
    [
        "/webhooks/clerk/users/email/jos\u00e9.garcia@b\u00fccher.de",
        "//webhooks/clerk/users/email/jos\u00e9.garcia@b\u00fccher.de",
        "/webhooks/clerk/users/email/jos%C3%A9.garcia%40b%C3%BCcher.de",
        "/webhooks/clerk//users/email/alice@example.com",
    ],
)
def test_access_log_never_shows_an_email_whatever_its_characters_or_slashes(client, caplog, path):
    with caplog.at_level(logging.INFO):
        client.get(path)
    text = _log_text(caplog)
    assert "gateway.access" in text
    for fragment in ("garcia", "jos\\u00e9", "alice", "jos%C3%A9"):
        assert fragment not in text, text


def test_scrubbed_log_line_hides_non_ascii_email_in_any_field(caplog):
    log = logging.getLogger("gateway.test")
    with caplog.at_level(logging.INFO):
        log.info("user %s signed in", "jos\u00e9.garcia@b\u00fccher.de")
        log.info("path", extra={"path": "/x/\u00fcser.n\u00e4me@\u00e9xample.org"})
        address = "stra\u00dfe.m\u00fcller@m\u00fcnchen.de"
        try:
            raise ValueError("no user " + address)
        except ValueError:
            log.exception("failed")
    text = _log_text(caplog)
    for fragment in ("garcia", "ser.n", "mller", "ller@", "m\\u00fcller"):
        assert fragment not in text, text
    assert "b\\u00fccher.de" in text  # the domain stays, for triage


def test_database_error_logs_carry_no_sql_parameters_or_row_values(app, caplog):
    """The finding: names and metadata reached the logs with any database error."""
    from gateway.auth.public import public
    from gateway.extensions import db
    from gateway.models import User

    @app.post("/dup")
    @public
    def dup():
        for _ in range(2):  # the second violates users.clerk_user_id's unique constraint
            db.session.add(
                User(
                    clerk_user_id="user_dup_7f3",
                    email="zaphod.secret@example.com",
                    first_name="Zaphod-Private-Name",
                    clerk_private_metadata={"ssn": "078-05-1120"},
                )
            )
            db.session.flush()
        return "unreachable"

    with caplog.at_level(logging.INFO):
        response = app.test_client().post("/dup")
    assert response.status_code == 500
    text = _log_text(caplog)
    assert "IntegrityError" in text and "23505" in text  # the class and SQLSTATE stay
    for value in ("user_dup_7f3", "Zaphod", "078-05-1120", "zaphod.secret", "[parameters:"):
        assert value not in text, text
