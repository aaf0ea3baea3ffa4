"""Load on loopback for the fault suite and the benchmarks: pre-signed Svix deliveries, keep-alive
HTTP senders, and Clerk user histories with the model of what the users table must end as."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support.svix import clerk_event, sign

Delivery = tuple[bytes, dict[str, str]]


def signed(event: dict[str, Any], msg_id: str | None = None, ahead: float = 120) -> Delivery:
    """A delivery signed with the svix library; `ahead` seconds in the future, so that the
    5-minute tolerance holds for the whole run."""
    body = json.dumps(event, separators=(",", ":")).encode()
    return body, sign(body, msg_id or "msg_" + uuid.uuid4().hex, timestamp=time.time() + ahead)


@dataclass
class Histories:
    """Per user a user.created, then updates with growing updated_at, maybe a user.deleted last;
    shuffled (Svix does not order deliveries), with some deliveries sent twice (same svix-id)."""

    deliveries: list[Delivery]
    emails: dict[str, str]  # the active users' expected primary email (of their newest event)
    deleted: set[str]
    unique_ids: set[str] = field(default_factory=set)


def user_histories(
    users: int,
    per_user: int,
    *,
    duplicates: float = 0.0,
    deleted_every: int = 0,
    seed: int = 7,
    prefix: str = "user_load",
) -> Histories:
    rng = random.Random(seed)
    deliveries: list[Delivery] = []
    emails: dict[str, str] = {}
    deleted: set[str] = set()
    for n in range(users):
        user_id = f"{prefix}{n:05d}_{uuid.uuid4().hex[:6]}"
        for k in range(per_user):
            kind = "user.created" if k == 0 else "user.updated"
            email = f"{user_id}-{k}@example.com"
            deliveries.append(signed(clerk_event(kind, user_id, email, updated_at=1000 + k)))
        emails[user_id] = email
        if deleted_every and n % deleted_every == 0:
            deliveries.append(signed(clerk_event("user.deleted", user_id)))
            deleted.add(user_id)
            del emails[user_id]
    unique_ids = {headers["svix-id"] for _, headers in deliveries}
    repeats = [rng.choice(deliveries) for _ in range(round(len(deliveries) * duplicates))]
    deliveries += repeats
    rng.shuffle(deliveries)
    return Histories(deliveries, emails, deleted, unique_ids)


class Sender:
    """One keep-alive http.client connection per thread; far cheaper per request than requests."""

    def __init__(self, port: int, timeout: float = 30) -> None:
        self.port = port
        self.timeout = timeout
        self.local = threading.local()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body); status 0 when the connection failed."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.local.conn = conn
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            return 0, b""

    def deliver(self, delivery: Delivery) -> int:
        body, headers = delivery
        return self.request("POST", "/webhooks/clerk", body, headers)[0]


@dataclass(frozen=True)
class Answer:
    svix_id: str
    status: int
    seconds: float  # from when it was due (open loop) or sent (closed loop)
    service_seconds: float  # from when it was sent: the server's answer time alone


def deliver_all(
    port: int,
    deliveries: Iterable[Delivery],
    threads: int = 16,
    rate: float | None = None,
    on_answer: Callable[[Answer], None] | None = None,
) -> list[Answer]:
    """Send each delivery once. With `rate`, open loop: delivery i is due at t0 + i/rate and its
    latency counts from then (a slow server cannot hide queueing); else as fast as `threads`
    connections go."""
    items = list(deliveries)
    sender = Sender(port)
    answers: list[Answer] = []
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.2

    def work(offset: int) -> None:
        for i in range(offset, len(items), threads):
            due = time.perf_counter() if rate is None else t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            status = sender.deliver(items[i])
            done = time.perf_counter()
            answer = Answer(items[i][1]["svix-id"], status, done - due, done - sent)
            with lock:
                answers.append(answer)
            if on_answer is not None:
                on_answer(answer)

    pool = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return answers


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def applied_event_ids(worker_log: str) -> list[str]:
    """Every event id a worker logged as applied: one line per batch lists its processed events
    (gateway.webhooks.processing), so an event applied twice shows up twice."""
    ids: list[str] = []
    for line in worker_log.splitlines():
        if '"msg": "webhook events processed' in line:
            ids += json.loads(line)["event_ids"]
    return ids
