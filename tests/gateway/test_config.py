"""Config.from_env: every variable typed, invalid values named at start."""

import base64
import ssl
import subprocess
import sys

import pytest

from gateway.app import engine_options
from gateway.config import Config, ConfigError, frontend_api_host, normalise_database_url
from gateway.jobs import broker_settings
from tests.support.processes import ROOT


def publishable_key(host: str, kind: str = "test") -> str:
    return f"pk_{kind}_" + base64.b64encode(f"{host}$".encode()).decode()


PRODUCTION = {"DATABASE_URL": "postgres://u:p@h:5432/d", "REDIS_URL": "redis://h:6379/0"}


def test_from_env_development_defaults_use_embedded_sqlite_and_broker(tmp_path):
    config = Config.from_env({"GATEWAY_INSTANCE_PATH": str(tmp_path), "GATEWAY_ENV": "development"})
    assert config.database_url == f"sqlite:///{tmp_path / 'gateway.db'}"
    assert config.embedded_broker
    assert config.clerk_enabled is True
    assert config.clerk_clock_skew_seconds == 5
    assert config.clerk_api_url == "https://api.clerk.com/v1"
    assert config.guard_timeout_seconds == 10.0
    assert config.admin_api_keys == ()
    assert config.beat_schedule_path == str(tmp_path / "celerybeat-schedule")
    assert config.webhook_retention_days == 30
    assert config.guard_audit_retention_days == 90
    assert config.metrics_bearer_token is None


@pytest.mark.parametrize(
    ("missing", "named"),
    [("DATABASE_URL", "DATABASE_URL"), ("REDIS_URL", "REDIS_URL")],
)
def test_from_env_production_without_database_or_broker_refuses_naming_it(missing, named):
    env = {name: value for name, value in PRODUCTION.items() if name != missing}
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env(env)
    assert excinfo.value.variable == named
    assert str(excinfo.value).count("\n") == 0


def test_from_env_production_accepts_celery_broker_url_instead_of_redis_url():
    config = Config.from_env(
        {"DATABASE_URL": PRODUCTION["DATABASE_URL"], "CELERY_BROKER_URL": "redis://b/1"}
    )
    assert config.broker_url == "redis://b/1" and not config.dev_mode


def test_from_env_webhook_signing_secret_alias_and_both_accepted():
    first, second = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    )
    alias = Config.from_env({**PRODUCTION, "CLERK_WEBHOOK_SIGNING_SECRET": first})
    assert alias.clerk_webhook_secrets == (first,)
    both = Config.from_env(
        {**PRODUCTION, "CLERK_WEBHOOK_SECRET": first, "CLERK_WEBHOOK_SIGNING_SECRET": second}
    )
    assert both.clerk_webhook_secrets == (first, second)
    same = Config.from_env(
        {**PRODUCTION, "CLERK_WEBHOOK_SECRET": first, "CLERK_WEBHOOK_SIGNING_SECRET": first}
    )
    assert same.clerk_webhook_secrets == (first,)


def test_pool_defaults_keep_the_procfile_within_20_connections():
    """CONTRACT 2: 2 web processes, 4 worker children, release and one one-off on 20."""
    config = Config.from_env(PRODUCTION)
    per_process = config.database_pool_size + config.database_max_overflow
    web, worker_children, release, one_off = 2, 4, 1, 1
    assert (web + worker_children) * per_process + release + one_off <= 20
    options = engine_options(config)
    assert (options["pool_size"], options["max_overflow"]) == (2, 1)
    tuned = Config.from_env({**PRODUCTION, "DATABASE_POOL_SIZE": "8", "DATABASE_MAX_OVERFLOW": "0"})
    assert (engine_options(tuned)["pool_size"], engine_options(tuned)["max_overflow"]) == (8, 0)


@pytest.mark.parametrize(
    ("url", "env_value", "expected"),
    [
        ("rediss://h:6380/0", None, "required"),
        ("rediss://h:6380/0", "none", "none"),
        ("rediss://h:6380/0?ssl_cert_reqs=none", "required", "none"),
        ("rediss://h:6380/0?ssl_cert_reqs=CERT_OPTIONAL", None, "optional"),
        ("redis://h:6379/0", "none", None),
    ],
)
def test_broker_ssl_cert_reqs_url_then_variable_then_required(url, env_value, expected):
    env = {**PRODUCTION, "REDIS_URL": url}
    if env_value:
        env["REDIS_SSL_CERT_REQS"] = env_value
    assert Config.from_env(env).broker_ssl_cert_reqs == expected


def test_broker_ssl_settings_are_explicit_and_the_url_loses_its_parameter():
    config = Config.from_env(
        {**PRODUCTION, "REDIS_URL": "rediss://:pw@h:6380/0?ssl_cert_reqs=none"}
    )
    settings = broker_settings(config)
    assert settings["broker_url"] == "rediss://:pw@h:6380/0"
    assert settings["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}
    plain = broker_settings(Config.from_env(PRODUCTION))
    assert plain["broker_use_ssl"] is None
    strict = broker_settings(Config.from_env({**PRODUCTION, "REDIS_URL": "rediss://h:6380/0"}))
    assert strict["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgresql://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_normalise_database_url_heroku_scheme_becomes_sqlalchemy(given, expected):
    assert normalise_database_url(given) == expected


def test_from_env_broker_celery_url_overrides_redis_url():
    config = Config.from_env({**PRODUCTION, "CELERY_BROKER_URL": "redis://b/1"})
    assert config.broker_url == "redis://b/1"


def test_publishable_key_decodes_frontend_api_host():
    assert frontend_api_host(publishable_key("clerk.example.com")) == "clerk.example.com"
    assert frontend_api_host(publishable_key("foo-bar-13.clerk.accounts.dev")) == (
        "foo-bar-13.clerk.accounts.dev"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLERK_PUBLISHABLE_KEY", "pk_test_bad"),
        ("CLERK_PUBLISHABLE_KEY", "sk_test_abc"),
        ("CLERK_PUBLISHABLE_KEY", "pk_test_" + base64.b64encode(b"no-dollar.example").decode()),
        ("GUARD_SERVICES", "nonsense"),
        ("GUARD_SERVICES", "a=http://x/1,a=http://y/2"),
        ("GUARD_SERVICES", "tokenguard=ftp://x"),
        ("CLERK_ENABLED", "maybe"),
        ("CLERK_CLOCK_SKEW_SECONDS", "five"),
        ("CLERK_CLOCK_SKEW_SECONDS", "-1"),
        ("GUARD_TIMEOUT_SECONDS", "0"),
        ("PORT", "70000"),
        ("CLERK_JWKS_URL", "not a url"),
        ("CLERK_JWT_KEY", "not a pem"),
        ("CLERK_WEBHOOK_SECRET", "whsec_"),
        ("STRIPE_API_KEY", "pk_test_123"),
        ("STRIPE_WEBHOOK_SECRET", "sk_test_pasted_the_api_key"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_ok whsec_"),
        ("GUARD_REQUIRES_SUBSCRIPTION", "nosuchguard"),
        ("GATEWAY_ENV", "staging"),
        ("CORS_ORIGINS", "*"),
        ("CORS_ORIGINS", "https://app.example.com/"),
        ("CORS_ORIGINS", "https://app.example.com/path"),
        ("CORS_ORIGINS", "app.example.com"),
        ("CLERK_AUTHORIZED_PARTIES", "*"),
        ("GUARD_PERMISSIONS", "nonsense"),
        ("GUARD_PERMISSIONS", "echo=org:billing manage"),
        ("REDIS_SSL_CERT_REQS", "sometimes"),
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_MAX_OVERFLOW", "-1"),
        ("WEBHOOK_RETENTION_DAYS", "0"),
        ("GUARD_AUDIT_RETENTION_DAYS", "x"),
        ("REDIS_URL", "rediss://h:6380/0?ssl_cert_reqs=maybe"),
    ],
)
def test_from_env_invalid_value_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env({variable: value})
    assert excinfo.value.variable == variable
    assert variable in str(excinfo.value)


def test_from_env_parses_lists_and_guard_services():
    config = Config.from_env(
        {
            **PRODUCTION,
            "GUARD_SERVICES": "TokenGuard=http://127.0.0.1:9/v1/check, biasguard=https://b/x",
            "CLERK_AUTHORIZED_PARTIES": "https://app.example.com, https://b.example.com",
            "CLERK_WEBHOOK_SECRET": (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
            ),
            "ADMIN_API_KEYS": f"{'1' * 32},{'2' * 40}",
            "CLERK_AUDIENCE": "https://api.example.com, https://b.example.com",
        }
    )
    assert config.guard_urls == {
        "tokenguard": "http://127.0.0.1:9/v1/check",
        "biasguard": "https://b/x",
    }
    assert config.clerk_authorized_parties == ("https://app.example.com", "https://b.example.com")
    assert len(config.clerk_webhook_secrets) == 2
    assert config.admin_api_keys == ("1" * 32, "2" * 40)
    assert config.clerk_audience == ("https://api.example.com", "https://b.example.com")


def test_from_env_stripe_webhook_secrets_and_subscription_guards():
    config = Config.from_env(
        {
            **PRODUCTION,
            "GUARD_SERVICES": "tokenguard=http://127.0.0.1:9/a,premium=http://127.0.0.1:9/b",
            "GUARD_REQUIRES_SUBSCRIPTION": " Premium ",
            "STRIPE_WEBHOOK_SECRET": "whsec_new  whsec_old",
        }
    )
    assert config.guard_requires_subscription == frozenset({"premium"})
    assert config.stripe_webhook_secrets == ("whsec_new", "whsec_old")


def test_dev_mode_only_in_development():
    assert Config.from_env({"GATEWAY_ENV": "development"}).dev_mode
    assert not Config.from_env(PRODUCTION).dev_mode


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLERK_PUBLISHABLE_KEY", publishable_key("clerk.example.com", "live")),
        ("CLERK_PUBLISHABLE_KEY", publishable_key("clerk.example.com", "test")),
        ("CLERK_JWKS_URL", "https://x.example/.well-known/jwks.json"),
        ("CLERK_JWT_KEY", "-----BEGIN PUBLIC KEY-----\\nMIIB\\n-----END PUBLIC KEY-----"),
        ("CLERK_SECRET_KEY", "sk_live_abcdef"),
        ("CLERK_SECRET_KEY", "sk_test_abcdef"),
        ("STRIPE_API_KEY", "sk_live_abcdef"),
        ("STRIPE_API_KEY", "rk_live_abcdef"),
    ],
)
def test_development_mode_with_production_secret_refuses_to_start(variable, value):
    """CONTRACT 5: the dev issuer and its published webhook secret never run beside real keys."""
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env({"GATEWAY_ENV": "development", variable: value})
    assert excinfo.value.variable == variable
    assert value not in str(excinfo.value)


def test_development_mode_with_test_stripe_key_starts():
    config = Config.from_env({"GATEWAY_ENV": "development", "STRIPE_API_KEY": "sk_test_abc"})
    assert config.dev_mode


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ADMIN_API_KEYS", "short-admin-key"),
        ("ADMIN_API_KEYS", f"{'a' * 32},{'b' * 31}"),
        ("CLERK_JWKS_REFRESH_COOLDOWN_SECONDS", "0"),
    ],
)
def test_production_refuses_weak_operator_settings(variable, value):
    with pytest.raises(ConfigError) as excinfo:
        Config.from_env(PRODUCTION | {variable: value})
    assert excinfo.value.variable == variable
    assert value not in str(excinfo.value)


def test_development_mode_accepts_short_admin_key_and_zero_cooldown():
    config = Config.from_env(
        {
            "GATEWAY_ENV": "development",
            "ADMIN_API_KEYS": "local",
            "CLERK_JWKS_REFRESH_COOLDOWN_SECONDS": "0",
        }
    )
    assert config.admin_api_keys == ("local",)


def test_clerk_disabled_in_production_warns_at_every_start(make_app, caplog):
    for _ in range(2):
        make_app(CLERK_ENABLED="false")
    warnings = [r for r in caplog.records if "CLERK_ENABLED=false" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelname == "WARNING" for r in warnings)
    caplog.clear()
    make_app()
    assert not [r for r in caplog.records if "CLERK_ENABLED" in r.getMessage()]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GUARD_SERVICES", "nonsense"),
        ("CLERK_PUBLISHABLE_KEY", "pk_test_bad"),
        ("DATABASE_URL", ""),  # production, nothing set: the first missing one is named
    ],
)
def test_web_process_bad_config_exits_with_one_line_naming_variable(variable, value, tmp_path):
    """The Procfile's web command (gunicorn) refuses to start, naming the variable."""
    result = subprocess.run(
        [f"{sys.prefix}/bin/gunicorn", "--config", "gunicorn.conf.py", "--bind", "127.0.0.1:0",
         "wsgi:app"],
        cwd=ROOT,
        env={"PATH": f"{sys.prefix}/bin:/usr/bin:/bin", variable: value,
             "GATEWAY_INSTANCE_PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    lines = [
        line for line in result.stderr.splitlines() if line.startswith("invalid configuration")
    ]
    assert lines == [lines[0]] and variable in lines[0], result.stderr


def test_from_env_cors_origins_default_to_authorized_parties():
    parties = {"CLERK_AUTHORIZED_PARTIES": "https://app.example.com,https://b.example.com"}

    assert Config.from_env(PRODUCTION | parties).cors_origins == (
        "https://app.example.com",
        "https://b.example.com",
    )
    own = Config.from_env(PRODUCTION | parties | {"CORS_ORIGINS": "http://127.0.0.1:3000"})
    assert own.cors_origins == ("http://127.0.0.1:3000",)
    assert Config.from_env(PRODUCTION).cors_origins == ()


def test_from_env_guard_permissions_name_configured_guards():
    config = Config.from_env(
        {
            **PRODUCTION,
            "GUARD_SERVICES": "billing=http://127.0.0.1:9/b,echo=http://127.0.0.1:9/e",
            "GUARD_PERMISSIONS": "Billing=org:billing:manage",
        }
    )
    assert config.guard_permissions == (("billing", "org:billing:manage"),)

    with pytest.raises(ConfigError, match=r"GUARD_PERMISSIONS.*not in GUARD_SERVICES"):
        Config.from_env({"GUARD_PERMISSIONS": "billing=org:billing:manage"})
    with pytest.raises(ConfigError, match="listed twice"):
        Config.from_env(
            {
                "GUARD_SERVICES": "billing=http://127.0.0.1:9/b",
                "GUARD_PERMISSIONS": "billing=org:a:b,billing=org:c:d",
            }
        )


@pytest.mark.parametrize("process", ["worker", "beat"])
def test_celery_process_in_production_without_broker_exits_naming_it(process, tmp_path):
    """The Procfile's worker and beat refuse too, with the same one line."""
    result = subprocess.run(
        [f"{sys.prefix}/bin/celery", "-A", "celery_app", process],
        cwd=ROOT,
        env={"PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "GATEWAY_INSTANCE_PATH": str(tmp_path),
             "DATABASE_URL": "postgresql://u@127.0.0.1:1/d"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1 and "REDIS_URL" in lines[0], result.stderr
