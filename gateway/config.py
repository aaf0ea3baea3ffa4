"""Configuration: every environment variable of CONTRACT section 2, read once, typed, validated."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gateway.env_reader import ConfigError, EnvReader, require_url

DEFAULT_INSTANCE_PATH = Path(__file__).resolve().parent.parent / "instance"


_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:\d{1,5})?$")


SSL_CERT_REQS = ("none", "optional", "required")
_LIVE_STRIPE_PREFIXES = ("sk_live_", "rk_live_")
# An operator key guards every user's private metadata: long enough that guessing is hopeless.
MIN_ADMIN_KEY_LENGTH = 32


@dataclass(frozen=True)
class Config:
    database_url: str
    broker_url: str  # "" means the embedded filesystem broker under instance/
    # Off by default: tasks report through the database. Set for `celery inspect`-style debugging.
    result_backend: str | None = None
    instance_path: str = str(DEFAULT_INSTANCE_PATH)
    env: str = "production"  # GATEWAY_ENV: "production" or "development"
    clerk_enabled: bool = True
    clerk_publishable_key: str | None = None
    clerk_jwks_url: str | None = None
    clerk_issuer: str | None = None
    clerk_jwt_key: str | None = None
    clerk_authorized_parties: tuple[str, ...] = ()
    clerk_audience: tuple[str, ...] = ()
    clerk_clock_skew_seconds: int = 5
    clerk_secret_key: str | None = None
    clerk_api_url: str = "https://api.clerk.com/v1"
    clerk_webhook_secrets: tuple[str, ...] = ()
    clerk_jwks_cache_seconds: int = 300
    clerk_jwks_refresh_cooldown_seconds: int = 30
    webhook_sweep_seconds: int = 30
    # Claims of one event (retries and crashed workers together) before it is failed.
    webhook_max_attempts: int = 8
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secrets: tuple[str, ...] = ()
    guard_services: tuple[tuple[str, str], ...] = ()
    # GUARD_PERMISSIONS: (guard name, organization permission) pairs (CONTRACT 4.10).
    guard_permissions: tuple[tuple[str, str], ...] = ()
    # CORS_ORIGINS, defaulting to CLERK_AUTHORIZED_PARTIES (CONTRACT 4.9); never "*".
    cors_origins: tuple[str, ...] = ()
    guard_timeout_seconds: float = 10.0
    guard_circuit_failures: int = 5
    guard_circuit_reset_seconds: float = 30.0
    # Guards called only for users whose Stripe subscription is active or trialing (CONTRACT 4.11).
    guard_requires_subscription: frozenset[str] = frozenset()
    biasguard_on_login: bool = False
    biasguard_fail_closed: bool = False
    admin_api_keys: tuple[str, ...] = ()
    port: int = 8000
    # WEB_CONCURRENCY: gunicorn worker processes (gunicorn.conf.py reads it from here).
    web_concurrency: int = 2
    # GUNICORN_THREADS: threads per web process; pools shared by those threads are sized to it.
    web_threads: int = 8
    # Publishing must never hang a request: a stopped-but-open Redis otherwise blocks forever.
    broker_publish_timeout_seconds: float = 1.0
    readiness_timeout_seconds: float = 2.0
    # SQLAlchemy's pool per process: at most pool_size + max_overflow connections. The defaults
    # keep the Procfile's processes within 20 connections (Heroku's smallest plans):
    #   web    2 processes (WEB_CONCURRENCY on a 1X dyno) x 3 =  6
    #   worker 4 pool children (WORKER_CONCURRENCY)       x 3 = 12
    #   beat (publishes only, never queries)                  =  0
    #   release (flask db upgrade, beside the running ones)   =  1
    #   flask one-offs (heroku run ...)                        =  1
    # A worker child runs one task at a time, so in practice it holds one connection; the web's
    # 8 threads share 3 (requests hold one only while they touch the database).
    database_pool_size: int = 2
    database_max_overflow: int = 1
    # rediss:// certificate checking: "none", "optional" or "required" (CONTRACT 2). The URL's
    # own ssl_cert_reqs wins over this; see broker_ssl_cert_reqs.
    redis_ssl_cert_reqs: str = "required"
    # Celery beat's schedule file; None: <instance>/celerybeat-schedule.
    celery_beat_schedule: str | None = None
    metrics_bearer_token: str | None = None
    webhook_retention_days: int = 30
    guard_audit_retention_days: int = 90

    @property
    def dev_mode(self) -> bool:
        """The app acts as its own Clerk-like issuer (make run). Never with real keys: validate()
        refuses development mode beside any production secret."""
        return self.env == "development" and not self.production_secrets()

    def production_secrets(self) -> list[str]:
        """The variables set here that only a real deployment has (CONTRACT 5)."""
        named = {
            "CLERK_PUBLISHABLE_KEY": self.clerk_publishable_key,
            "CLERK_JWKS_URL": self.clerk_jwks_url,
            "CLERK_JWT_KEY": self.clerk_jwt_key,
            "CLERK_SECRET_KEY": self.clerk_secret_key,
        }
        found = [name for name, value in named.items() if value]
        if (self.stripe_api_key or "").startswith(_LIVE_STRIPE_PREFIXES):
            found.append("STRIPE_API_KEY")
        return found

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def broker_ssl_cert_reqs(self) -> str | None:
        """Certificate checking for a rediss:// broker; None for any other broker."""
        return ssl_cert_reqs_for(self.broker_url, self.redis_ssl_cert_reqs)

    @property
    def beat_schedule_path(self) -> str:
        return self.celery_beat_schedule or str(Path(self.instance_path) / "celerybeat-schedule")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def guard_urls(self) -> dict[str, str]:
        return dict(self.guard_services)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        reader = EnvReader(env)
        web_concurrency, web_threads = web_process_shape(env)
        instance_path = reader.text("GATEWAY_INSTANCE_PATH") or str(DEFAULT_INSTANCE_PATH)
        gateway_env = reader.choice("GATEWAY_ENV", ("production", "development"), "production")
        database_url = reader.text("DATABASE_URL")
        broker_url = reader.text("CELERY_BROKER_URL") or reader.text("REDIS_URL")
        config = cls(
            database_url=normalise_database_url(
                database_url or f"sqlite:///{Path(instance_path) / 'gateway.db'}"
            ),
            broker_url=broker_url or "",
            result_backend=reader.text("CELERY_RESULT_BACKEND"),
            instance_path=instance_path,
            env=gateway_env,
            clerk_enabled=reader.flag("CLERK_ENABLED", True),
            clerk_publishable_key=reader.text("CLERK_PUBLISHABLE_KEY"),
            clerk_jwks_url=reader.url("CLERK_JWKS_URL"),
            clerk_issuer=reader.text("CLERK_ISSUER"),
            clerk_jwt_key=reader.pem("CLERK_JWT_KEY"),
            clerk_authorized_parties=reader.csv("CLERK_AUTHORIZED_PARTIES"),
            clerk_audience=reader.csv("CLERK_AUDIENCE"),
            clerk_clock_skew_seconds=reader.integer("CLERK_CLOCK_SKEW_SECONDS", 5, minimum=0),
            clerk_secret_key=reader.text("CLERK_SECRET_KEY"),
            clerk_api_url=(reader.url("CLERK_API_URL") or "https://api.clerk.com/v1").rstrip("/"),
            # Clerk's dashboard names it CLERK_WEBHOOK_SIGNING_SECRET; both set: both accepted.
            clerk_webhook_secrets=_unique(
                reader.words("CLERK_WEBHOOK_SECRET") + reader.words("CLERK_WEBHOOK_SIGNING_SECRET")
            ),
            clerk_jwks_cache_seconds=reader.integer("CLERK_JWKS_CACHE_SECONDS", 300, minimum=1),
            # Production needs at least 1 (validate): 0 would let made-up kids flood Clerk.
            clerk_jwks_refresh_cooldown_seconds=reader.integer(
                "CLERK_JWKS_REFRESH_COOLDOWN_SECONDS", 30, minimum=0
            ),
            webhook_sweep_seconds=reader.integer("WEBHOOK_SWEEP_SECONDS", 30, minimum=1),
            webhook_max_attempts=reader.integer("WEBHOOK_MAX_ATTEMPTS", 8, minimum=1, maximum=100),
            stripe_api_key=reader.text("STRIPE_API_KEY"),
            stripe_api_base=reader.url("STRIPE_API_BASE"),
            stripe_webhook_secrets=reader.words("STRIPE_WEBHOOK_SECRET"),
            guard_services=reader.guard_services("GUARD_SERVICES"),
            guard_permissions=reader.guard_permissions("GUARD_PERMISSIONS"),
            cors_origins=reader.origins("CORS_ORIGINS")
            or reader.origins("CLERK_AUTHORIZED_PARTIES"),
            guard_timeout_seconds=reader.seconds("GUARD_TIMEOUT_SECONDS", 10.0),
            guard_circuit_failures=reader.integer("GUARD_CIRCUIT_FAILURES", 5, minimum=1),
            guard_circuit_reset_seconds=reader.seconds("GUARD_CIRCUIT_RESET_SECONDS", 30.0),
            guard_requires_subscription=frozenset(
                name.lower() for name in reader.csv("GUARD_REQUIRES_SUBSCRIPTION")
            ),
            biasguard_on_login=reader.flag("BIASGUARD_ON_LOGIN", False),
            biasguard_fail_closed=reader.flag("BIASGUARD_FAIL_CLOSED", False),
            admin_api_keys=reader.csv("ADMIN_API_KEYS"),
            port=reader.integer("PORT", 8000, minimum=1, maximum=65535),
            web_concurrency=web_concurrency,
            web_threads=web_threads,
            database_pool_size=reader.integer("DATABASE_POOL_SIZE", 2, minimum=1, maximum=1000),
            database_max_overflow=reader.integer(
                "DATABASE_MAX_OVERFLOW", 1, minimum=0, maximum=1000
            ),
            redis_ssl_cert_reqs=reader.choice("REDIS_SSL_CERT_REQS", SSL_CERT_REQS, "required"),
            celery_beat_schedule=reader.text("CELERY_BEAT_SCHEDULE"),
            metrics_bearer_token=reader.text("METRICS_BEARER_TOKEN"),
            webhook_retention_days=reader.integer("WEBHOOK_RETENTION_DAYS", 30, minimum=1),
            guard_audit_retention_days=reader.integer("GUARD_AUDIT_RETENTION_DAYS", 90, minimum=1),
        )
        config.validate()
        if gateway_env == "production":
            # The embedded defaults are for `make run`: on Heroku each dyno has its own disk, so
            # an embedded broker strands every task and the SQLite file vanishes at the restart.
            if database_url is None:
                raise ConfigError("DATABASE_URL", "required in production (GATEWAY_ENV)")
            if broker_url is None:
                raise ConfigError("REDIS_URL", "required in production (or CELERY_BROKER_URL)")
        return config

    def validate(self) -> None:
        """Cross-field rules; also run for configs built in tests."""
        ssl_cert_reqs_for(self.broker_url, self.redis_ssl_cert_reqs)
        if self.clerk_publishable_key:
            frontend_api_host(self.clerk_publishable_key)
        if self.clerk_issuer:
            require_url("CLERK_ISSUER", self.clerk_issuer)
        if self.stripe_api_key and not self.stripe_api_key.startswith(("sk_", "rk_")):
            raise ConfigError("STRIPE_API_KEY", "expected a key starting with sk_ or rk_")
        for secret in self.clerk_webhook_secrets:
            _check_webhook_secret(secret)
        for service, _ in self.guard_permissions:
            if service not in self.guard_urls:
                # A typo here would otherwise leave the real guard ungated.
                raise ConfigError("GUARD_PERMISSIONS", f"{service!r} is not in GUARD_SERVICES")
        for secret in self.stripe_webhook_secrets:
            if not secret.startswith("whsec_") or len(secret) == len("whsec_"):
                # Stripe signs with the whole string, prefix included: a paste error (the API
                # key, a secret without its prefix) would otherwise refuse every event as forged.
                raise ConfigError("STRIPE_WEBHOOK_SECRET", "each secret must start with whsec_")
        unknown = sorted(self.guard_requires_subscription - set(self.guard_urls))
        if unknown:
            raise ConfigError(
                "GUARD_REQUIRES_SUBSCRIPTION", f"{', '.join(unknown)} not in GUARD_SERVICES"
            )
        if self.env == "development":
            # Development mode serves its own JWKS and accepts webhooks signed with a secret
            # published in the source: beside a real key that would hand out real sessions.
            for variable in self.production_secrets():
                raise ConfigError(
                    variable,
                    "is a production secret; development mode never runs with one "
                    "(unset it, or leave GATEWAY_ENV unset for production)",
                )
        else:
            self._validate_production()
        if self.biasguard_on_login and "biasguard" not in self.guard_urls:
            # Otherwise every login would find BiasGuard "unavailable", or fail closed, forever.
            raise ConfigError(
                "BIASGUARD_ON_LOGIN", "needs a guard named biasguard in GUARD_SERVICES"
            )

    def _validate_production(self) -> None:
        if any(len(key) < MIN_ADMIN_KEY_LENGTH for key in self.admin_api_keys):
            raise ConfigError(
                "ADMIN_API_KEYS", f"each key must be at least {MIN_ADMIN_KEY_LENGTH} characters"
            )
        if self.clerk_jwks_refresh_cooldown_seconds < 1:
            raise ConfigError("CLERK_JWKS_REFRESH_COOLDOWN_SECONDS", "must be at least 1")


def web_process_shape(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(WEB_CONCURRENCY, GUNICORN_THREADS): gunicorn's processes and threads per process.

    Config reads them through here, and so does gunicorn.conf.py, which needs them even when the
    rest of the configuration is invalid (its on_starting hook reports that and stops).
    """
    reader = EnvReader(os.environ if environ is None else environ)
    return (
        reader.integer("WEB_CONCURRENCY", min(os.cpu_count() or 1, 4), minimum=1),
        reader.integer("GUNICORN_THREADS", 8, minimum=1, maximum=1024),
    )


def frontend_api_host(publishable_key: str) -> str:
    """Decode Clerk's publishable key: pk_(test|live)_ + base64("<frontend api host>$")."""
    match = re.fullmatch(r"pk_(test|live)_([A-Za-z0-9+/=_-]+)", publishable_key)
    if not match:
        raise ConfigError("CLERK_PUBLISHABLE_KEY", "expected pk_test_... or pk_live_...")
    encoded = match.group(2)
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
        text = decoded.decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ConfigError("CLERK_PUBLISHABLE_KEY", "the part after pk_*_ is not base64") from None
    if not text.endswith("$") or not _HOST_RE.match(text[:-1]):
        raise ConfigError(
            "CLERK_PUBLISHABLE_KEY", "does not encode a Frontend API host ending in $"
        )
    return text[:-1]


def ssl_cert_reqs_for(url: str | None, default: str) -> str | None:
    """rediss:// only: the URL's ssl_cert_reqs, else `default` (REDIS_SSL_CERT_REQS).

    Never left to kombu or redis-py: depending on the version, a rediss:// URL without it is
    either refused or silently connected with no certificate check at all.
    """
    if not url or not url.startswith("rediss://"):
        return None
    given = parse_qs(urlsplit(url).query).get("ssl_cert_reqs")
    if not given:
        return default
    # redis-py also accepts Python's own names (CERT_NONE, ...): so do we.
    value = given[-1].lower().removeprefix("cert_")
    if value not in SSL_CERT_REQS:
        raise ConfigError("REDIS_URL", f"ssl_cert_reqs must be one of {', '.join(SSL_CERT_REQS)}")
    return value


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def normalise_database_url(url: str) -> str:
    """Heroku gives postgres://; SQLAlchemy 2 wants postgresql+<driver>://."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _check_webhook_secret(secret: str) -> None:
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError("CLERK_WEBHOOK_SECRET", "each secret must be whsec_ + base64") from None
    if not key:
        raise ConfigError("CLERK_WEBHOOK_SECRET", "a secret is empty")
