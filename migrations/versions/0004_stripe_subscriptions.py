"""Stripe webhooks: webhook_events.source, and the subscription mirrored on users.

Written by hand. `source` defaults to 'clerk' for the rows that exist (every event so far came
from Svix). The subscription columns are nullable: a user without a subscription has none.
`stripe_subscription_id` and `subscription_event_at` (the `created` of the Stripe event that last
set them) are what a late, older event is compared with (CONTRACT 4.11); `stripe_customer_deleted_at`
keeps the fact that a customer.deleted event unlinked the user, for `flask stripe reconcile`.

Revision ID: 0004_stripe_subscriptions
Revises: 0003_organizations
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0004_stripe_subscriptions'
down_revision = '0003_organizations'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('source', sa.String(length=16), server_default='clerk', nullable=False)
        )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subscription_status', sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column('subscription_price_id', sa.String(length=255), nullable=True)
        )
        batch_op.add_column(
            sa.Column('subscription_current_period_end', sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column('stripe_subscription_id', sa.String(length=255), nullable=True)
        )
        batch_op.add_column(
            sa.Column('subscription_event_at', sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column('stripe_customer_deleted_at', sa.DateTime(timezone=True), nullable=True)
        )


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('stripe_customer_deleted_at')
        batch_op.drop_column('subscription_event_at')
        batch_op.drop_column('stripe_subscription_id')
        batch_op.drop_column('subscription_current_period_end')
        batch_op.drop_column('subscription_price_id')
        batch_op.drop_column('subscription_status')
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_column('source')
