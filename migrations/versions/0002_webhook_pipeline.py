"""Webhook pipeline: an ordering key per event, and the indexes of the worker's batch claim.

Written by hand. Existing user events get their Clerk user id as ordering key (what the worker
serialised them by before).

Revision ID: 0002_webhook_pipeline
Revises: 0001_initial
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_webhook_pipeline"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

WAITING = sa.text("status IN ('received', 'queued')")
PROCESSING = sa.text("status = 'processing'")


def upgrade():
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ordering_key", sa.String(length=255), nullable=True))
    op.execute("UPDATE webhook_events SET ordering_key = clerk_user_id")
    op.create_index(
        "ix_webhook_events_waiting",
        "webhook_events",
        ["id"],
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    op.create_index(
        "ix_webhook_events_processing_key",
        "webhook_events",
        ["ordering_key"],
        postgresql_where=PROCESSING,
        sqlite_where=PROCESSING,
    )


def downgrade():
    op.drop_index("ix_webhook_events_processing_key", table_name="webhook_events")
    op.drop_index("ix_webhook_events_waiting", table_name="webhook_events")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_column("ordering_key")
