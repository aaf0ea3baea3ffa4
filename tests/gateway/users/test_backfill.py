"""`flask users backfill` against a Clerk-shaped Backend API served on loopback."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select
from werkzeug import Request, Response

from gateway.extensions import db
from gateway.jobs import ENSURE_STRIPE_CUSTOMER
from gateway.models import User
from gateway.users import backfill
from gateway.users.service import soft_delete_clerk_user
from tests.support.broker import clear_queue, queued_tasks

SECRET = "sk_test_backfill"
TOTAL = 250
NO_EMAIL = {3, 77, 150, 201, 249}  # users whose primary email is missing


def clerk_user(n: int) -> dict:
    """A user object as GET /v1/users returns it."""
    email_id = f"idn_{n:04d}"
    has_email = n not in NO_EMAIL
    return {
        "id": f"user_{n:04d}",
        "object": "user",
        "first_name": f"First{n}",
        "last_name": "Last",
        "image_url": f"https://img.clerk.com/{n}",
        "primary_email_address_id": email_id if has_email else None,
        "email_addresses": [
            {
                "id": email_id,
                "object": "email_address",
                "email_address": f"Person{n}@Example.com",
                "verification": {"status": "verified", "strategy": "email_code"},
            }
        ]
        if has_email
        else [],
        "public_metadata": {"plan": "free"},
        "private_metadata": {"n": n},
        "unsafe_metadata": {},
        "created_at": 1_700_000_000_000 + n * 1000,
        "updated_at": 1_700_000_000_000 + n * 1000,
    }


class FakeClerk:
    """The Backend API's users listing: limit/offset pages, one 429 at the second page."""

    def __init__(self, users: list[dict], throttle_offset: int | None = 100) -> None:
        self.users = users
        self.throttle_offset = throttle_offset
        self.calls: list[tuple[float, int, int]] = []  # (time, offset, status)

    def __call__(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            return self._answer({"errors": [{"code": "authentication_invalid"}]}, 401, request)
        offset = int(request.args.get("offset", 0))
        limit = int(request.args.get("limit", 10))
        assert request.args.get("order_by") == "created_at"
        if offset == self.throttle_offset:
            self.throttle_offset = None
            response = self._answer({"errors": [{"code": "too_many_requests"}]}, 429, request)
            response.headers["Retry-After"] = "1"
            return response
        return self._answer(self.users[offset : offset + limit], 200, request)

    def _answer(self, body: object, status: int, request: Request) -> Response:
        self.calls.append((time.monotonic(), int(request.args.get("offset", 0)), status))
        return Response(json.dumps(body), status=status, content_type="application/json")


@pytest.fixture
def clerk(httpserver):
    fake = FakeClerk([clerk_user(n) for n in range(TOTAL)])
    httpserver.expect_request("/v1/users", method="GET").respond_with_handler(fake)
    return fake


@pytest.fixture
def backfill_app(make_app, httpserver):
    return make_app(CLERK_SECRET_KEY=SECRET, CLERK_API_URL=httpserver.url_for("/v1"))


def run_backfill(app, *args):
    return app.test_cli_runner().invoke(args=["users", "backfill", *args])


def printed_counts(output: str) -> dict[str, int]:
    """The one-line summary: `backfill: pages=3 seen=250 ...`."""
    (line,) = [line for line in output.splitlines() if line.startswith("backfill: ")]
    return {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}


def snapshot(app) -> list[tuple]:
    with app.app_context():
        rows = db.session.execute(
            select(
                User.id, User.clerk_user_id, User.email, User.is_active, User.updated_at
            ).order_by(User.id)
        ).all()
        return [tuple(row) for row in rows]


def test_users_backfill_250_users_in_pages_through_429_mirrored(backfill_app, clerk):
    with backfill_app.app_context():
        # Known before the gateway used Clerk: linked by verified email, not duplicated.
        db.session.add(User(email="person7@example.com", is_active=True))
        # Deleted here already (a user.deleted webhook won): never brought back.
        soft_delete_clerk_user(db.session, "user_0009")
        db.session.commit()

    result = run_backfill(backfill_app, "--page-size", "100")

    assert result.exit_code == 0, result.output
    assert printed_counts(result.output) == {
        "pages": 3,
        "seen": TOTAL,
        "created": TOTAL - len(NO_EMAIL) - 2,
        "linked": 1,
        "updated": 0,
        "unchanged": 0,
        "deleted": 1,
        "no_email": len(NO_EMAIL),
        "invalid": 0,
        "rate_limited": 1,
    }
    assert [(offset, status) for _, offset, status in clerk.calls] == [
        (0, 200),
        (100, 429),
        (100, 200),
        (200, 200),
    ]
    throttled_at, retried_at = clerk.calls[1][0], clerk.calls[2][0]
    assert retried_at - throttled_at >= 0.9  # Retry-After: 1 was honoured
    with backfill_app.app_context():
        mirrored = db.session.scalar(
            select(func.count()).select_from(User).where(User.clerk_user_id.is_not(None))
        )
        assert mirrored == TOTAL - len(NO_EMAIL)
        user = db.session.scalar(select(User).where(User.clerk_user_id == "user_0042"))
        assert (user.email, user.first_name, user.clerk_private_metadata) == (
            "person42@example.com",
            "First42",
            {"n": 42},
        )
        linked = db.session.scalar(select(User).where(User.email == "person7@example.com"))
        assert linked.clerk_user_id == "user_0007"
        tombstone = db.session.scalar(select(User).where(User.clerk_user_id == "user_0009"))
        assert (tombstone.is_active, tombstone.email) == (False, None)


def test_users_backfill_run_twice_second_run_changes_nothing(backfill_app, clerk):
    first = run_backfill(backfill_app, "--page-size", "100")
    before = snapshot(backfill_app)
    second = run_backfill(backfill_app, "--page-size", "100")

    assert (first.exit_code, second.exit_code) == (0, 0)
    counts = printed_counts(second.output)
    assert (counts["created"], counts["linked"], counts["updated"]) == (0, 0, 0)
    assert counts["unchanged"] == TOTAL - len(NO_EMAIL)
    assert snapshot(backfill_app) == before


def test_users_backfill_newer_clerk_data_updates_user(backfill_app, clerk):
    assert run_backfill(backfill_app).exit_code == 0
    changed = clerk_user(5) | {
        "first_name": "Renamed",
        "updated_at": clerk_user(5)["updated_at"] + 1,
    }
    clerk.users[5] = changed
    result = run_backfill(backfill_app)

    assert printed_counts(result.output)["updated"] == 1
    with backfill_app.app_context():
        user = db.session.scalar(select(User).where(User.clerk_user_id == "user_0005"))
        assert user.first_name == "Renamed"


def test_users_backfill_wrong_secret_key_exits_nonzero(make_app, httpserver, clerk):
    app = make_app(CLERK_SECRET_KEY="sk_test_wrong", CLERK_API_URL=httpserver.url_for("/v1"))
    result = run_backfill(app)

    assert result.exit_code == 1
    assert "clerk_backfill_failed" in result.output
    assert "HTTP 401" in result.output
    assert "sk_test_wrong" not in result.output
    assert snapshot(app) == []


def test_users_backfill_without_secret_key_exits_nonzero(make_app):
    result = run_backfill(make_app())

    assert result.exit_code == 1
    assert "CLERK_SECRET_KEY is not set" in result.output


def test_fetch_user_pages_endless_429_waits_bounded_then_fails(httpserver):
    def always_throttled(request: Request) -> Response:
        return Response("{}", status=429, headers={"Retry-After": "3600"})

    httpserver.expect_request("/v1/users").respond_with_handler(always_throttled)
    waits: list[float] = []
    api = backfill.backfill_api(httpserver.url_for("/v1"), SECRET, sleep=waits.append)
    pages = backfill.fetch_user_pages(api)

    with pytest.raises(backfill.BackfillFailed, match="Gave up"):
        next(pages)
    assert waits == [backfill.MAX_WAIT_SECONDS] * (backfill.MAX_ATTEMPTS_PER_PAGE - 1)
    assert len(httpserver.log) == backfill.MAX_ATTEMPTS_PER_PAGE


def test_fetch_user_pages_unreachable_api_retries_bounded_then_fails():
    from tests.support.processes import free_port

    waits: list[float] = []
    api = backfill.backfill_api(f"http://127.0.0.1:{free_port()}/v1", SECRET, sleep=waits.append)

    with pytest.raises(backfill.BackfillFailed, match="Gave up"):
        next(backfill.fetch_user_pages(api))
    assert len(waits) == backfill.MAX_ATTEMPTS_PER_PAGE - 1


def test_fetch_user_pages_clerk_500_then_page_is_retried(httpserver):
    answers = [Response("{}", status=500), Response(json.dumps([clerk_user(1)]), status=200)]
    httpserver.expect_request("/v1/users").respond_with_handler(lambda request: answers.pop(0))
    waits: list[float] = []
    api = backfill.backfill_api(httpserver.url_for("/v1"), SECRET, sleep=waits.append)

    pages = list(backfill.fetch_user_pages(api))

    assert [user["id"] for page in pages for user in page] == ["user_0001"]
    assert len(waits) == 1


def test_users_backfill_with_stripe_enqueues_each_new_users_customer_job(
    make_app, httpserver, clerk, redis_url
):
    # The same rule as login and the webhook worker (gateway.billing.follow_ups).
    app = make_app(
        CLERK_SECRET_KEY=SECRET,
        CLERK_API_URL=httpserver.url_for("/v1"),
        STRIPE_API_KEY="sk_test_backfill",
    )
    clear_queue(redis_url)

    assert run_backfill(app, "--page-size", "100").exit_code == 0

    tasks = queued_tasks(redis_url)
    clear_queue(redis_url)
    with app.app_context():
        ids = db.session.scalars(select(User.id).order_by(User.id)).all()
    assert sorted(tasks) == sorted((ENSURE_STRIPE_CUSTOMER, [user_id]) for user_id in ids)
    assert len(ids) == TOTAL - len(NO_EMAIL)
