"""Migrations: one head, a clean upgrade of an empty PostgreSQL database, and a clean downgrade."""

import uuid

from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from gateway import create_app
from gateway.config import Config
from gateway.extensions import db, migrate
from gateway.models import Base
from tests.conftest import drop_database, recreate_database


def test_migrations_have_a_single_head(app):
    with app.app_context():
        config = migrate.get_config()
        assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_upgrade_empty_database_matches_models_then_downgrades(redis_url, tmp_path):
    name = f"cg_mig_{uuid.uuid4().hex[:8]}"
    url = recreate_database(name)
    try:
        app = create_app(
            Config.from_env(
                {
                    "DATABASE_URL": url,
                    "REDIS_URL": redis_url,
                    "GATEWAY_INSTANCE_PATH": str(tmp_path),
                }
            )
        )
        with app.app_context():
            upgrade()
            inspector = inspect(db.engine)
            tables = set(inspector.get_table_names())
            assert set(Base.metadata.tables) <= tables
            for table in Base.metadata.tables.values():
                columns = {c["name"] for c in inspector.get_columns(table.name)}
                assert columns == {c.name for c in table.columns}, table.name
            payload_type = next(
                c for c in inspector.get_columns("webhook_events") if c["name"] == "payload"
            )["type"]
            assert type(payload_type).__name__ == "JSONB"
            downgrade(revision="base")
            assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
            db.engine.dispose()
    finally:
        drop_database(name)
