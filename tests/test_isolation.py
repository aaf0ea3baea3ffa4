"""Canary pair: the first test commits a user, the second proves the table is empty again."""

from gateway.extensions import db
from gateway.models import User


def test_isolation_canary_a_commits_a_row(app):
    with app.app_context():
        db.session.add(User(clerk_user_id="user_canary", email="canary@example.com"))
        db.session.commit()
        assert db.session.query(User).count() == 1


def test_isolation_canary_b_sees_no_row_from_a(app):
    with app.app_context():
        assert db.session.query(User).count() == 0
