"""Development mode: own key under instance/, JWKS under /dev/, `flask dev token`."""

from __future__ import annotations

import jwt
import pytest

from gateway.auth.dev import KEY_FILE
from gateway.config import ConfigError
from tests.support.clerk import PUBLISHABLE_KEY


@pytest.fixture
def dev_app(make_app, tmp_path):
    return make_app(GATEWAY_ENV="development", GATEWAY_INSTANCE_PATH=str(tmp_path), PORT="8123")


def _mint(app, *args: str):
    return app.test_cli_runner().invoke(args=["dev", "token", *args])


def test_dev_token_logs_in_with_no_network(dev_app, httpserver):
    result = _mint(dev_app, "--user", "user_123", "--email", "a@example.com")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    client = dev_app.test_client()
    response = client.post("/api/v1/auth/login", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    user = response.get_json()["user"]
    assert user["clerk_user_id"] == "user_123" and user["email"] == "a@example.com"
    assert (
        jwt.decode(token, options={"verify_signature": False})["iss"] == "http://127.0.0.1:8123/dev"
    )
    assert len(httpserver.log) == 0


def test_dev_jwks_serves_the_key_that_signs_tokens(dev_app):
    token = _mint(dev_app, "--user", "user_1").output.strip()
    jwks = dev_app.test_client().get("/dev/.well-known/jwks.json")
    assert jwks.status_code == 200
    [jwk] = jwks.get_json()["keys"]
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    key = jwt.PyJWK(jwk).key
    assert (
        jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False})["sub"]
        == "user_1"
    )


def test_dev_key_created_once_and_reused(make_app, tmp_path):
    first = make_app(GATEWAY_ENV="development", GATEWAY_INSTANCE_PATH=str(tmp_path))
    kid = first.test_client().get("/dev/.well-known/jwks.json").get_json()["keys"][0]["kid"]
    pem = (tmp_path / KEY_FILE).read_bytes()
    assert oct((tmp_path / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    second = make_app(GATEWAY_ENV="development", GATEWAY_INSTANCE_PATH=str(tmp_path))
    assert (
        second.test_client().get("/dev/.well-known/jwks.json").get_json()["keys"][0]["kid"] == kid
    )
    assert (tmp_path / KEY_FILE).read_bytes() == pem


def test_dev_token_refused_outside_dev_mode(make_app, tmp_path):
    app = make_app(GATEWAY_INSTANCE_PATH=str(tmp_path))  # production
    result = _mint(app, "--user", "user_1")
    assert result.exit_code != 0
    assert "development mode is off" in result.output
    assert app.test_client().get("/dev/.well-known/jwks.json").status_code == 404
    assert not (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize(
    "env",
    [
        {"CLERK_PUBLISHABLE_KEY": PUBLISHABLE_KEY},
        {"CLERK_JWKS_URL": "https://x.example/.well-known/jwks.json"},
        {"CLERK_SECRET_KEY": "sk_live_" + "x" * 20},
        {"STRIPE_API_KEY": "rk_live_" + "x" * 20},
    ],
    ids=["publishable_key", "jwks_url", "clerk_secret_key", "stripe_live_key"],
)
def test_dev_mode_beside_production_secret_never_starts(make_app, tmp_path, env):
    """The finding: with sk_live_ set, the dev issuer served its JWKS and dev-signed webhooks
    were accepted. Now the app is not built at all, so neither route exists."""
    with pytest.raises(ConfigError) as excinfo:
        make_app(GATEWAY_ENV="development", GATEWAY_INSTANCE_PATH=str(tmp_path), **env)
    assert excinfo.value.variable == next(iter(env))
    assert not (tmp_path / KEY_FILE).exists()


def test_dev_mode_rejects_token_signed_by_another_key(dev_app, clerk_keys):
    from tests.support.clerk import mint_token

    token = mint_token(clerk_keys.primary, iss="http://127.0.0.1:8123/dev")
    response = dev_app.test_client().get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.get_json(force=True)["code"] == "token_invalid_signature"


def test_dev_token_with_organization_is_read_back_by_me(dev_app):
    result = _mint(
        dev_app,
        *("--user", "user_1", "--org", "org_acme", "--org-slug", "acme", "--role", "admin"),
        *("--permission", "org:billing:read", "--permission", "org:billing:manage"),
        *("--permission", "reports:read", "--actor", "user_support"),
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["v"] == 2 and "org_id" not in claims
    assert claims["fea"] == "o:billing,o:reports"
    assert claims["o"] == {
        "id": "org_acme",
        "rol": "admin",
        "slg": "acme",
        "per": "read,manage",
        "fpm": "3,1",
    }
    response = dev_app.test_client().get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.get_json()["org"] == {
        "id": "org_acme",
        "slug": "acme",
        "role": "org:admin",
        "permissions": ["org:billing:read", "org:billing:manage", "org:reports:read"],
    }
    assert response.get_json()["actor"] == {"sub": "user_support"}


def test_dev_token_without_org_has_no_organization(dev_app):
    token = _mint(dev_app, "--user", "user_1").output.strip()

    response = dev_app.test_client().get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.get_json()["org"] is None and response.get_json()["actor"] is None


@pytest.mark.parametrize(
    "args",
    [
        ("--permission", "org:billing:read"),  # no --org
        ("--org", "org_1", "--permission", "billing"),
        ("--org", "org_1", "--permission", "org:a:b:c"),
    ],
)
def test_dev_token_bad_organization_options_fail(dev_app, args):
    result = _mint(dev_app, "--user", "user_1", *args)
    assert result.exit_code != 0
