"""Schemathesis against /openapi.json on a running gateway (the Procfile's gunicorn).

Every generated request gets no 500, and every answer matches the document (status, media type,
body schema). Bounded for `make test`: a fixed number of derandomized examples per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.gateway.guards.upstream import Upstream
from tests.support.clerk import ISSUER, mint_token
from tests.support.processes import free_port, start_gunicorn
from tests.support.svix import SECRET

ADMIN_KEY = "schemathesis-admin-key-" + "k" * 16
# Not schemathesis' not_a_server_error: a documented 5xx problem is a correct answer here (a guard
# that cannot be reached is 503 guard_unavailable); a 500 is the bug, asserted on its own below.
CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def gateway(
    database_url: str, redis_url: str, clerk_keys: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    upstream = Upstream().start()
    tmp = tmp_path_factory.mktemp("schemathesis")
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GATEWAY_INSTANCE_PATH": str(tmp / "instance"),
        "CLERK_JWT_KEY": clerk_keys.primary.public_pem,
        "CLERK_ISSUER": ISSUER,
        "CLERK_WEBHOOK_SECRET": SECRET,
        "STRIPE_WEBHOOK_SECRET": "whsec_schemathesis",
        "ADMIN_API_KEYS": ADMIN_KEY,
        "GUARD_SERVICES": f"echo={upstream.url('/echo')},strict={upstream.url('/strict')}",
        "GUARD_TIMEOUT_SECONDS": "2",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "4",
    }
    proc = start_gunicorn(env, tmp / "gunicorn.log", port)
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "token": mint_token(clerk_keys.primary, user_id="user_fuzz", exp=2**31 - 1),
        }
    finally:
        proc.stop()
        upstream.stop()
    output = proc.output()
    assert "Traceback" not in output, output[-3000:]


PROFILE = settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.slow
def test_api_no_500_and_every_answer_matches_the_document(gateway: dict[str, Any]) -> None:
    # Driven with Hypothesis directly: schemathesis' from_fixture breaks under pytest 9.
    schema = schemathesis.openapi.from_url(gateway["url"] + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:
        admin = operation.path.startswith(("/admin/", "/webhooks/clerk/users"))
        _fuzz(operation, {"Authorization": f"Bearer {ADMIN_KEY if admin else gateway['token']}"})


def _fuzz(operation: Any, headers: dict[str, str]) -> None:
    @PROFILE
    @given(case=operation.as_strategy())
    def call(case: Any) -> None:
        response = case.call(headers=headers, timeout=10)
        assert response.status_code != 500, (case.method, case.path, response.text[:500])
        case.validate_response(response, checks=CHECKS)

    call()
