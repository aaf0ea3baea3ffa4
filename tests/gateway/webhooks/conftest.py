"""Webhook tests start from an empty broker queue: ids restart per test, so a message left by an
earlier test would otherwise name this test's rows."""

import pytest
import redis

# Only the queue and kombu's unacked bookkeeping: the exchange bindings stay, so a worker that
# outlives one test keeps receiving in the next.
BROKER_KEYS = ("gateway", "unacked", "unacked_index", "unacked_mutex")


@pytest.fixture(autouse=True)
def empty_broker(redis_url):
    redis.Redis.from_url(redis_url).delete(*BROKER_KEYS)
