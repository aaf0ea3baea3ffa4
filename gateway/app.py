"""The application factory: config -> extensions -> celery -> blueprints -> errors."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import sqlalchemy.event
import sqlalchemy.exc
from flask import Flask, Request, Response, g, request
from flask.json.provider import DefaultJSONProvider
from sqlalchemy.engine import Engine

from gateway import cors
from gateway.config import Config
from gateway.errors import BadRequest, register_error_handlers
from gateway.extensions import db, migrate
from gateway.jobs import celery_init_app
from gateway.logs import configure_logging, log_access, new_request_id, request_id_var
from gateway.strict_json import STRICT

log = logging.getLogger(__name__)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    config.validate()
    configure_logging()
    if not config.clerk_enabled and config.env != "development":
        # Every process start says it: an operator must not find out from an incident.
        log.warning(
            "CLERK_ENABLED=false in production: no session token is verified and guard calls "
            "are forwarded without a user"
        )
    Path(config.instance_path).mkdir(parents=True, exist_ok=True)

    # No static folder: the gateway serves JSON only, and an unused route is one more to document.
    app = Flask(__name__, instance_path=config.instance_path, static_folder=None)
    app.json = RequestJSONProvider(app)
    # No slash redirects: werkzeug builds their Location from the request's Host (a forged Host
    # is reflected) and answers them as HTML, outside our error handlers. /api//v1/guards and
    # /healthz/ are plain 404 problems instead (CONTRACT 3). Set before any rule is added.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.config.update(
        GATEWAY=config,
        SQLALCHEMY_DATABASE_URI=config.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(config),
        # Flask answers 413 itself past this; the webhook route has its own, tighter, check.
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    db.init_app(app)
    if config.is_postgres:
        with app.app_context():
            ping_idle_connections(db.engine)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    celery_init_app(app, config)

    register_request_hooks(app)
    cors.init_app(app, config)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    return app


class RequestJSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading only what is JSON: every route's body parser answers its own 400.

    - nested past the recursion limit: json.loads raises RecursionError, which request.get_json
      does not catch (`[[[[...` would be a 500);
    - NaN, Infinity and literals that overflow to infinity (1e999): Python reads them, but they
      are not JSON (RFC 8259); forwarded to a guard, its strict parser answers 5xx (CONTRACT 3).
    """

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs = STRICT | kwargs
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def engine_options(config: Config) -> dict[str, Any]:
    # hide_parameters: a database error's message must not carry row values (names, emails,
    # metadata) into the logs (CONTRACT 6).
    if config.is_postgres:
        return {
            "hide_parameters": True,
            # Not pool_pre_ping: see ping_idle_connections.
            # Sized for Heroku's smallest plans: see Config.database_pool_size.
            "pool_size": config.database_pool_size,
            "max_overflow": config.database_max_overflow,
            "pool_timeout": 5,
            # Bounded waits: a dead database must turn into a 503, not a hung thread.
            "connect_args": {"connect_timeout": 3, "options": "-c statement_timeout=15000"},
        }
    # SQLite (embedded default): several processes share one file; wait for locks briefly.
    return {"hide_parameters": True, "connect_args": {"timeout": 15}}


# A pooled connection used this recently is alive as far as a ping could tell.
IDLE_PING_SECONDS = 5.0


def ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle, instead of on every checkout.

    pool_pre_ping costs a round trip per checkout: a third of a webhook acknowledgement's database
    work (bench/README.md). A connection idle for longer (a database restarted, a proxy's idle
    timeout) is pinged, and a dead one replaced before the request sees it, as pool_pre_ping does.
    """

    @sqlalchemy.event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < IDLE_PING_SECONDS:
            return  # fresh from connect, or in use moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                # The pool drops this connection and checks out another (SQLAlchemy's recipe).
                raise sqlalchemy.exc.DisconnectionError() from exc
            raise


def register_request_hooks(app: Flask) -> None:
    # These run on every request: each resolves the request and g proxies once.
    @app.before_request
    def assign_request_id() -> None:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        ctx_globals = g._get_current_object()  # type: ignore[attr-defined]
        # Always our own: the request id goes into audit rows and to guards, where a value the
        # client chose could collide with or impersonate another request. The client's id is
        # kept only as a correlation id in the access log.
        request_id = new_request_id()
        incoming = req.headers.get("X-Request-ID")
        ctx_globals.correlation_id = (
            incoming if incoming and _REQUEST_ID_RE.match(incoming) else None
        )
        ctx_globals.request_id = request_id
        ctx_globals.request_started = time.perf_counter()
        request_id_var.set(request_id)
        # PostgreSQL text cannot hold NUL: an id or filter carrying one would be a 500. The raw
        # query string is checked rather than request.args, which would parse it on every request.
        query = req.query_string
        if "\x00" in req.path or b"%00" in query or b"\x00" in query:
            raise BadRequest("URLs may not contain NUL (%00) characters.")

    @app.after_request
    def log_request(response: Response) -> Response:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        ctx_globals = g._get_current_object()  # type: ignore[attr-defined]
        request_id = ctx_globals.get("request_id")
        response.headers["X-Request-ID"] = request_id or ""
        started = ctx_globals.get("request_started")
        log_access(
            req.method,
            redact_path(req),
            response.status_code,
            round((time.perf_counter() - started) * 1000, 2) if started else None,
            request_id,
            ctx_globals.get("correlation_id"),
        )
        return response

    # After the request id, so auth failures are logged with it.
    from gateway.auth import hook

    hook.register(app)


# Route arguments that are personal data: a path matched by a rule with one is logged as the
# rule, its value replaced. Unmatched paths keep the logs' email scrubbing (gateway.logs).
_REDACTED_ARGUMENTS = frozenset({"email"})


def redact_path(req: Request) -> str:
    """The path for the access log: by the matched route, never by string prefix."""
    rule = req.url_rule
    if rule is None or not rule.arguments & _REDACTED_ARGUMENTS:
        return req.path
    return _RULE_ARGUMENT_RE.sub(
        lambda m: "[redacted]" if m.group(1) in _REDACTED_ARGUMENTS else m.group(0), rule.rule
    )


_RULE_ARGUMENT_RE = re.compile(r"<(?:[^:<>]+:)?([^:<>]+)>")


def register_blueprints(app: Flask) -> None:
    from gateway import health, metrics, openapi
    from gateway.auth import routes as auth_routes
    from gateway.billing import routes as billing_routes
    from gateway.guards import routes as guards_routes
    from gateway.guards import runtime as guards_runtime
    from gateway.organizations import routes as organizations_admin
    from gateway.webhooks import admin as webhooks_admin
    from gateway.webhooks import handoff as webhooks_handoff
    from gateway.webhooks import routes as webhooks

    app.register_blueprint(health.bp)
    metrics.init_app(app)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(auth_routes.bp)
    guards_runtime.init_app(app)
    app.register_blueprint(guards_routes.bp)
    webhooks_handoff.init_app(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(billing_routes.bp)
    app.register_blueprint(webhooks_admin.bp)
    app.register_blueprint(organizations_admin.bp)
    if app.config["GATEWAY"].dev_mode:
        from gateway.auth import dev

        app.register_blueprint(dev.bp)


def register_commands(app: Flask) -> None:
    # Each feature module attaches its commands to the groups of gateway.cli when imported.
    import gateway.auth.dev
    import gateway.billing.cli
    import gateway.users.backfill_cli
    import gateway.webhooks.cli  # noqa: F401
    from gateway.cli import GROUPS
    from gateway.retention_cli import prune_command

    for group in GROUPS:
        app.cli.add_command(group)
    app.cli.add_command(prune_command)
