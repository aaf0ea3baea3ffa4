"""The webhook pipeline, measured: acknowledgements (`ack`) and events applied (`pipeline`).

    .venv/bin/python -m bench.webhook_pipeline ack [--seconds 10] [--rate 200]
    .venv/bin/python -m bench.webhook_pipeline pipeline [--users 1000] [--per-user 10]

Both run the Procfile's own processes on 127.0.0.1 (web: gunicorn with gunicorn.conf.py, 2
processes; worker: the Procfile's `worker` line) on a fresh PostgreSQL database and a private
redis-server. Every delivery is a Clerk sample signed with svix before the clock starts, and each
svix-id is sent once.

ack: (1) saturation with no worker running: wrk (C, not the bottleneck) posts the pre-signed
deliveries through bench/webhook_deliveries.lua, 2 threads x 32 connections; (2) a fixed rate
with the worker running: an open-loop generator (each request's latency counted from its
scheduled send time, so queueing is not hidden) at `--rate`/s. Afterwards the table must hold
exactly the deliveries sent.

pipeline: the worker runs; `users x per-user` events (a user.created then user.updated with
growing updated_at per user, all shuffled, as Svix does not order them) are posted as fast as 16
keep-alive connections go, and timed until the last one is applied. Checked against the database:
every event applied once (`processed`, one claim, one "applied" log line), each user as its
newest event says.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench.common import RESULTS, bench_services, percentile, wait_for_http
from tests.support.processes import BIN, ROOT, Proc, free_port, start_gunicorn
from tests.support.svix import clerk_event, sign

LUA = ROOT / "bench" / "webhook_deliveries.lua"


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"no {name} in Procfile")


Delivery = tuple[bytes, dict[str, str]]


def user_updates(count: int, users: int = 1000) -> list[Delivery]:
    """`count` signed user.updated deliveries over `users` users (the acknowledgement load)."""
    user_ids = [f"user_bench{n:05d}" for n in range(users)]
    out = []
    stamp = int(time.time() * 1000)
    for n in range(count):
        event = clerk_event(
            "user.updated", user_ids[n % users], f"u{n}@example.com", updated_at=stamp + n
        )
        out.append(_signed(event))
    return out


def user_histories(users: int, per_user: int, seed: int = 7) -> tuple[list[Delivery], dict]:
    """Per user a user.created and then updates with growing updated_at, all shuffled; and the
    model: each user's expected email (that of its newest event)."""
    deliveries, expected = [], {}
    for n in range(users):
        user_id = f"user_pipe{n:05d}_{uuid.uuid4().hex[:6]}"
        for k in range(per_user):
            kind = "user.created" if k == 0 else "user.updated"
            email = f"p{n}-{k}@example.com"
            deliveries.append(_signed(clerk_event(kind, user_id, email, updated_at=1000 + k)))
        expected[user_id] = email
    random.Random(seed).shuffle(deliveries)
    return deliveries, expected


def _signed(event: dict[str, Any]) -> Delivery:
    body = json.dumps(event, separators=(",", ":")).encode()
    # Signed a few minutes ahead: the 5-minute tolerance must hold for the whole run.
    return body, sign(body, "msg_" + uuid.uuid4().hex, timestamp=time.time() + 120)


def write_deliveries(path: Path, deliveries: list[Delivery]) -> None:
    with path.open("w") as out:
        for body, headers in deliveries:
            out.write(
                f"{headers['svix-id']}\t{headers['svix-timestamp']}\t"
                f"{headers['svix-signature']}\t{body.decode()}\n"
            )


def run_wrk(url: str, deliveries: list[Delivery], seconds: float, connections: int = 32) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    path = RESULTS / "webhook-deliveries.tsv"
    write_deliveries(path, deliveries)
    threads = 2
    duration = f"-d{max(1, round(seconds))}s"
    argv = ["wrk", f"-t{threads}", f"-c{connections}", duration, "--timeout", "5s",
            "-s", str(LUA), url, "--", str(path), str(threads)]  # fmt: skip
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    seconds_run = result["duration_us"] / 1e6
    errors = sum(result["errors"].values()) + result["reused"]
    return {
        "events_per_s": round(result["requests"] / seconds_run, 1),
        "requests": result["requests"],
        "errors": errors,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
    }


class Sender:
    """Keep-alive http.client connections, one per thread; cheaper per request than requests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def post(self, delivery: Delivery) -> int:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body, headers = delivery
        try:
            conn.request("POST", "/webhooks/clerk", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            return 0


def fixed_rate(port: int, deliveries: list[Delivery], rate: float, threads: int = 16) -> dict:
    """Open loop: request i is due at t0 + i/rate; latency counts from when it was due."""
    sender = Sender(port)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.5

    def worker(offset: int) -> None:
        nonlocal errors
        for i in range(offset, len(deliveries), threads):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status = sender.post(deliveries[i])
            elapsed = (time.perf_counter() - due) * 1000
            with lock:
                latencies.append(elapsed)
                errors += status != 200

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {
        "rate_per_s": rate,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
    }


def closed_loop(port: int, deliveries: list[Delivery], threads: int = 16) -> tuple[float, int]:
    """Send every delivery once, as fast as `threads` connections go: (seconds, errors)."""
    sender = Sender(port)
    cursor = iter(deliveries)
    lock = threading.Lock()
    errors = 0

    def worker() -> None:
        nonlocal errors
        while True:
            with lock:
                delivery = next(cursor, None)
            if delivery is None:
                return
            if sender.post(delivery) != 200:
                with lock:
                    errors += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started, errors


@contextmanager
def web(env: dict[str, str], name: str) -> Iterator[int]:
    port = free_port()
    proc = start_gunicorn({**env, "WEB_CONCURRENCY": "2"}, RESULTS / f"{name}-web.log", port)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        yield port
    finally:
        proc.stop()


@contextmanager
def procfile_worker(env: dict[str, str], name: str) -> Iterator[Proc]:
    command = procfile_command("worker")
    worker_env = {**env, "PATH": f"{BIN}:/usr/bin:/bin"}
    # As a Procfile runner does: the line through a shell (it starts with an env assignment).
    proc = Proc(["bash", "-c", command], worker_env, RESULTS / f"{name}-worker.log")
    try:
        proc.wait_for_output("ready.", timeout=60)
        yield proc
    finally:
        proc.stop(timeout=20)


def count_rows(database_url: str, status: str | None = None) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM webhook_events"
            " WHERE %(status)s::text IS NULL OR status = %(status)s",
            {"status": status},
        ).fetchone()
        return int(row[0]) if row else 0


def wait_applied(database_url: str, total: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while (done := count_rows(database_url, "processed")) < total:
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {done}/{total} applied within {timeout}s")
        time.sleep(0.2)
    return time.perf_counter()


def bench_ack(seconds: float, rate: float) -> dict[str, Any]:
    with bench_services("ack") as env:
        database_url = env["DATABASE_URL"]
        with web(env, "ack") as port:
            url = f"http://127.0.0.1:{port}"
            # Sized for 2,500/s, so that no thread runs out (reused deliveries count as errors).
            warm = run_wrk(url, user_updates(2000), 1)
            sent_before = count_rows(database_url)
            saturation = run_wrk(url, user_updates(int(2500 * seconds)), seconds)
            stored = count_rows(database_url) - sent_before
            with procfile_worker(env, "ack"):
                steady = fixed_rate(port, user_updates(int(rate * seconds)), rate)
                wait_applied(database_url, count_rows(database_url), timeout=300)
    saturation["stored_equals_acknowledged"] = stored == saturation["requests"]
    return {"warm_up": warm, "saturation_no_worker": saturation, "fixed_rate_worker_on": steady}


def bench_pipeline(users: int, per_user: int) -> dict[str, Any]:
    deliveries, expected = user_histories(users, per_user)
    total = len(deliveries)
    with bench_services("pipeline") as env, web(env, "pipeline") as port:
        database_url = env["DATABASE_URL"]
        with procfile_worker(env, "pipeline") as worker:
            started = time.perf_counter()
            ack_seconds, errors = closed_loop(port, deliveries)
            applied_at = wait_applied(database_url, total, timeout=600)
            time.sleep(1)  # let the last log lines reach the file
            applied_lines = [
                json.loads(line)["event_id"]
                for line in worker.output().splitlines()
                if '"webhook event processed"' in line
            ]
        with psycopg.connect(database_url) as conn:
            emails = dict(conn.execute("SELECT clerk_user_id, email FROM users").fetchall())
            claims = conn.execute(
                "SELECT count(*) FILTER (WHERE attempts = 1), count(*) FROM webhook_events"
            ).fetchone()
            span = conn.execute(
                "SELECT extract(epoch FROM max(processed_at) - min(processed_at))"
                " FROM webhook_events"
            ).fetchone()[0]
    elapsed = applied_at - started
    return {
        "events": total,
        "users": users,
        "ack_errors": errors,
        "acknowledged_per_s": round(total / ack_seconds, 1),
        "all_applied_after_s": round(elapsed, 1),
        "applied_per_s": round(total / elapsed, 1),
        "steady_applied_per_s": round(total / float(span), 1) if span else None,
        "users_match_model": emails == expected,
        "events_claimed_once": int(claims[0]) == total == int(claims[1]),
        "applied_log_lines": len(applied_lines),
        "applied_twice": len(applied_lines) - len(set(applied_lines)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="scenario", required=True)
    ack = sub.add_parser("ack")
    ack.add_argument("--seconds", type=float, default=10)
    ack.add_argument("--rate", type=float, default=200)
    pipe = sub.add_parser("pipeline")
    pipe.add_argument("--users", type=int, default=1000)
    pipe.add_argument("--per-user", type=int, default=10)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.scenario == "ack":
        result = bench_ack(args.seconds, args.rate)
    else:
        result = bench_pipeline(args.users, args.per_user)
    print(json.dumps(result, indent=2))
    (RESULTS / f"webhook-{args.scenario}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
