"""CONTRACT 6 on the migrated PostgreSQL schema: the unique and indexed columns of users."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from gateway.extensions import db
from gateway.models import User


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"clerk_user_id": "user_same"}, {"clerk_user_id": "user_same"}),
        (
            {"clerk_user_id": "user_a", "stripe_customer_id": "cus_same"},
            {"clerk_user_id": "user_b", "stripe_customer_id": "cus_same"},
        ),
    ],
)
def test_users_schema_duplicate_clerk_or_stripe_id_refused(app, first, second):
    with app.app_context():
        db.session.add(User(**first))
        db.session.commit()
        db.session.add(User(**second))

        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()


def test_users_schema_shared_email_and_unlinked_users_allowed_email_indexed(app):
    with app.app_context():
        # Several rows may share an email (tombstones, accounts that predate Clerk), and many
        # users have no Clerk id or Stripe customer yet.
        db.session.add_all(
            [User(email="same@example.com"), User(email="same@example.com"), User(email=None)]
        )
        db.session.commit()
        indexed = {
            tuple(index["column_names"]) for index in inspect(db.engine).get_indexes("users")
        }

    assert ("email",) in indexed
