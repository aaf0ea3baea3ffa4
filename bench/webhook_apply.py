"""End-to-end apply throughput: N signed user.created events are accepted by gunicorn (Procfile
config) while no worker runs, then the Procfile's `worker` command is started and timed until the
last event is `processed`.

    .venv/bin/python -m bench.webhook_apply [--events 10000] [--worker-concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import requests

from bench.common import RESULTS, bench_services, signed_requests, wait_for_http
from tests.support.processes import BIN, ROOT, Proc, free_port, start_gunicorn


def procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"no {name} in Procfile")


def count(database_url: str, status: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM webhook_events WHERE status = %s", (status,))
        return int(row.fetchone()[0])


def post_all(url: str, events: int) -> float:
    deliveries = signed_requests(events, timestamp=time.time() + 240)
    started = time.perf_counter()
    sessions: dict[int, requests.Session] = {}

    def send(i: int) -> int:
        import threading

        session = sessions.setdefault(threading.get_ident(), requests.Session())
        body, headers = deliveries[i]
        return session.post(url, data=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(send, range(events)))
    if any(code != 200 for code in codes):
        raise SystemExit(f"{sum(code != 200 for code in codes)} deliveries failed")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--worker-concurrency", default="4")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    with bench_services("apply") as env:
        database_url = env["DATABASE_URL"]
        port = free_port()
        web = start_gunicorn({**env, "WEB_CONCURRENCY": "2"}, RESULTS / "apply-gunicorn.log", port)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz")
            post_seconds = post_all(f"http://127.0.0.1:{port}/webhooks/clerk", args.events)
        finally:
            web.stop()
        queued = count(database_url, "queued")
        waiting = count(database_url, "received")
        if waiting:
            # Not published at receipt (broker slow): what beat's sweep would do, now.
            sweep = Proc(
                [str(BIN / "flask"), "--app", "wsgi", "webhooks", "requeue", "--older-than", "0"],
                env,
                RESULTS / "apply-requeue.log",
            )
            sweep.popen.wait(120)
            sweep.stop()
        command = procfile_command("worker")
        worker_env = {
            **env,
            "WORKER_CONCURRENCY": args.worker_concurrency,
            "PATH": f"{BIN}:/usr/bin:/bin",
        }
        started = time.perf_counter()
        worker = Proc(["bash", "-c", f"exec {command}"], worker_env, RESULTS / "apply-worker.log")
        try:
            deadline = started + args.timeout
            while (done := count(database_url, "processed")) < args.events:
                if time.perf_counter() > deadline:
                    raise SystemExit(f"only {done}/{args.events} processed in {args.timeout}s")
                time.sleep(0.5)
            elapsed = time.perf_counter() - started
        finally:
            worker.stop()
        with psycopg.connect(database_url) as conn:
            users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
            span = conn.execute(
                "SELECT extract(epoch FROM max(processed_at) - min(processed_at))"
                " FROM webhook_events"
            ).fetchone()[0]
            retried = conn.execute(
                "SELECT count(*) FROM webhook_events WHERE attempts > 1"
            ).fetchone()[0]
    result = {
        "events": args.events,
        "worker_command": command,
        "worker_concurrency": args.worker_concurrency,
        "accepted_per_s": round(args.events / post_seconds, 1),
        "queued_at_receipt": queued,
        "left_for_sweep": waiting,
        "apply_seconds_incl_worker_start": round(elapsed, 1),
        "applied_per_s": round(args.events / elapsed, 1),
        "steady_applied_per_s": round(args.events / float(span), 1) if span else None,
        "users": users,
        "events_with_more_than_one_attempt": retried,
    }
    print(json.dumps(result, indent=2))
    (RESULTS / "webhook_apply.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
