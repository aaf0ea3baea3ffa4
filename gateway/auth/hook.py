"""The before_request hook: every non-public view needs a verified Clerk session."""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, current_app, g, request

from gateway.auth.bearer import bearer_credential
from gateway.auth.jwks import JwksCache, NoKeySource, StaticKey, fetch_jwks_over_http
from gateway.auth.public import is_public
from gateway.auth.token_problems import CsrfOrigin, TokenMissing
from gateway.auth.tokens import KeySource, VerifierSettings
from gateway.auth.verifier import SessionVerifier
from gateway.config import Config, frontend_api_host
from gateway.per_process import PerProcess

SESSION_COOKIE = "__session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
VERIFIER_KEY = "clerk_verifier"


def register(app: Flask) -> None:
    config: Config = app.config["GATEWAY"]
    app.extensions[VERIFIER_KEY] = PerProcess(lambda: build_verifier(config))
    app.before_request(authenticate)


def authenticate() -> None:
    # Runs on every request: the proxies are resolved once (each access through one is a lookup).
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    ctx_globals = g._get_current_object()  # type: ignore[attr-defined]
    ctx_globals.clerk_token = ctx_globals.clerk_claims = ctx_globals.clerk_user_id = None
    ctx_globals.clerk_session = None
    # Unknown routes fall through to the 404 handler; public views carry their own checks.
    if req.url_rule is None or req.routing_exception is not None:
        return
    if is_public(app.view_functions.get(req.url_rule.endpoint)):
        return
    # CORS preflights carry no credentials and run no view code.
    if req.method == "OPTIONS":
        return
    config: Config = app.config["GATEWAY"]
    if not config.clerk_enabled:
        return
    token, from_cookie = token_from_request(req)
    if token is None:
        raise TokenMissing()
    # A browser sends the cookie on cross-site requests too; only a listed Origin may change state.
    state_changing = req.method not in SAFE_METHODS
    if from_cookie and state_changing and not _origin_allowed(req, config):
        raise CsrfOrigin()
    claims = get_verifier(app).verify(token)
    ctx_globals.clerk_token = token
    ctx_globals.clerk_claims = claims.data
    ctx_globals.clerk_user_id = claims.sub
    # The typed, version-normalised view (gateway.auth.claims.SessionClaims) routes rely on.
    ctx_globals.clerk_session = claims.session


def _origin_allowed(req: Request, config: Config) -> bool:
    return req.headers.get("Origin") in config.clerk_authorized_parties


def token_from_request(req: Request) -> tuple[str | None, bool]:
    """(token, taken_from_cookie). The Authorization header wins over the cookie."""
    token = bearer_credential(req.headers.get("Authorization"))
    if token is not None:
        return token, False
    cookie = req.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, True
    return None, False


def get_verifier(app: Flask) -> SessionVerifier:
    """Built on first use in each process (after gunicorn forks), then shared by its threads."""
    holder: PerProcess[SessionVerifier] = app.extensions[VERIFIER_KEY]
    return holder.get()


def build_verifier(config: Config) -> SessionVerifier:
    if config.dev_mode:
        from gateway.auth.dev import dev_issuer, load_or_create_dev_key

        key = load_or_create_dev_key(config.instance_path).public_key()
        settings = VerifierSettings.from_config(config, dev_issuer=dev_issuer(config))
        return SessionVerifier(settings, StaticKey(key))
    return SessionVerifier(VerifierSettings.from_config(config), build_key_source(config))


def build_key_source(config: Config) -> KeySource:
    """CLERK_JWT_KEY, else a JWKS URL (explicit or derived), else the Backend API's /jwks."""
    if config.clerk_jwt_key:
        return StaticKey.from_pem(config.clerk_jwt_key)
    headers: dict[str, Any] = {}
    if config.clerk_jwks_url:
        url = config.clerk_jwks_url
    elif config.clerk_publishable_key:
        url = f"https://{frontend_api_host(config.clerk_publishable_key)}/.well-known/jwks.json"
    elif config.clerk_secret_key:
        url = f"{config.clerk_api_url}/jwks"
        headers["Authorization"] = f"Bearer {config.clerk_secret_key}"
    else:
        return NoKeySource()
    return JwksCache(
        fetch_jwks_over_http(url, headers),
        cache_seconds=config.clerk_jwks_cache_seconds,
        cooldown_seconds=config.clerk_jwks_refresh_cooldown_seconds,
    )
