"""Webhook tests start from an empty broker queue: ids restart per test, so a message left by an
earlier test would otherwise name this test's rows."""

import pytest
import redis


@pytest.fixture(autouse=True)
def empty_broker(redis_url):
    redis.Redis.from_url(redis_url).flushdb()
