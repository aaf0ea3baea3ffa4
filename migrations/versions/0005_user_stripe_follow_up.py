"""users.stripe_follow_up_at: when the sweep last asked for this user's Stripe customer.

Written by hand. Nullable: no user has been followed up by the sweep yet. The sweep
(gateway.billing.follow_ups) enqueues ensure_stripe_customer for active users still without a
customer and stamps this column, so each such user is asked for at most once per interval
instead of on every sweep.

Revision ID: 0005_user_stripe_follow_up
Revises: 0004_stripe_subscriptions
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0005_user_stripe_follow_up'
down_revision = '0004_stripe_subscriptions'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('stripe_follow_up_at', sa.DateTime(timezone=True), nullable=True)
        )


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('stripe_follow_up_at')
