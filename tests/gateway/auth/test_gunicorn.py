"""Through the Procfile's gunicorn: an oversized token gets the app's 401, not the server's 400."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.support.clerk import mint_token
from tests.support.processes import free_port, start_gunicorn


@pytest.mark.slow
def test_gunicorn_20kb_token_gets_app_401_problem(base_env, clerk_env, clerk_keys, tmp_path):
    port = free_port()
    env = base_env | clerk_env | {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2"}
    proc = start_gunicorn(env, tmp_path / "gunicorn.log", port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        big = mint_token(clerk_keys.primary, pad="x" * 20_000)
        assert len(big) > 20_000
        conn.request("GET", "/api/v1/auth/me", headers={"Authorization": f"Bearer {big}"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 401
        assert response.getheader("Content-Type") == "application/problem+json"
        assert json.loads(body)["code"] == "token_invalid"
        assert response.getheader("WWW-Authenticate") == 'Bearer error="invalid_token"'

        conn.request(
            "GET",
            "/api/v1/auth/me",
            headers={"Authorization": f"Bearer {mint_token(clerk_keys.primary)}"},
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert json.loads(response.read())["user_id"] == "user_123"
    finally:
        proc.stop()
    assert "Traceback" not in proc.output()
    assert big not in proc.output()
