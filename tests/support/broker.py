"""Read the tasks waiting on the broker's `gateway` queue in Redis, without consuming them."""

from __future__ import annotations

import base64
import json

import redis

from gateway.jobs import QUEUE


def queued_tasks(redis_url: str) -> list[tuple[str, list]]:
    """The tasks waiting on the `gateway` queue, as (task name, args)."""
    client = redis.Redis.from_url(redis_url)
    tasks = []
    for raw in client.lrange(QUEUE, 0, -1):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        tasks.append((message["headers"]["task"], args))
    return tasks


def clear_queue(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).delete(QUEUE)
