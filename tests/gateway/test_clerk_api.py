"""The Backend API client: Retry-After parsing and the bounded wait."""

from __future__ import annotations

import email.utils
import time

import pytest

from gateway.clerk_api import ClerkApi, ClerkApiUnavailable, retry_after_seconds
from tests.support.clerk import SECRET_KEY


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 0.5), ("", 0.5), ("3", 3.0), ("soon", 0.5), ("-1", 0.5)],
)
def test_retry_after_seconds_parses_delta_or_default(value, expected):
    assert retry_after_seconds(value, default=0.5) == expected


def test_retry_after_seconds_parses_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(when, default=0.5) <= 31


def test_clerk_api_retries_within_budget_then_gives_up(clerk_backend):
    slept: list[float] = []
    api = ClerkApi(clerk_backend.url, SECRET_KEY, sleep=slept.append, max_retry_wait_seconds=3)
    clerk_backend.add_user("user_1", "one@example.com")
    clerk_backend.queued_errors = [(429, {"Retry-After": "2"}), (503, {})]
    assert api.get_user("user_1")["id"] == "user_1"
    assert slept == [2.0, 0.5]

    clerk_backend.queued_errors = [(429, {"Retry-After": "2"}), (429, {"Retry-After": "2"})]
    slept.clear()
    with pytest.raises(ClerkApiUnavailable) as raised:
        api.get_user("user_1")
    assert slept == [2.0]  # a second 2 s wait would pass the 3 s budget
    assert raised.value.headers == {"Retry-After": "2"}


def test_clerk_api_wrong_secret_is_unavailable_not_a_crash(clerk_backend):
    api = ClerkApi(clerk_backend.url, "sk_test_wrong")
    with pytest.raises(ClerkApiUnavailable):
        api.get_user("user_1")


def test_clerk_api_single_wait_cap_shortens_long_retry_after_and_reports_retries(clerk_backend):
    slept: list[float] = []
    retried: list[int] = []
    api = ClerkApi(
        clerk_backend.url,
        SECRET_KEY,
        sleep=slept.append,
        max_retry_wait_seconds=10,
        max_single_wait_seconds=4,
    )
    clerk_backend.add_user("user_1", "one@example.com")
    clerk_backend.queued_errors = [(429, {"Retry-After": "3600"}), (503, {})]

    assert api.get_json("/users/user_1", on_retry=retried.append)["id"] == "user_1"
    assert slept == [4.0, 0.5]
    assert retried == [429, 503]
