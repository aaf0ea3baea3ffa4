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
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.common import RESULTS, bench_services, wait_for_http
from tests.support.load import (
    Answer,
    Delivery,
    applied_event_ids,
    deliver_all,
    percentile,
    signed,
    user_histories,
)
from tests.support.processes import BIN, ROOT, Proc, free_port, start_gunicorn
from tests.support.svix import clerk_event

LUA = ROOT / "bench" / "webhook_deliveries.lua"


def user_updates(count: int, users: int = 1000) -> list[Delivery]:
    """`count` signed user.updated deliveries over `users` users (the acknowledgement load)."""
    user_ids = [f"user_bench{n:05d}" for n in range(users)]
    stamp = int(time.time() * 1000)
    return [
        signed(
            clerk_event("user.updated", user_ids[n % users], f"u{n}@x.com", updated_at=stamp + n)
        )
        for n in range(count)
    ]


def summary(answers: list[Answer], rate: float) -> dict[str, Any]:
    latencies = [a.seconds * 1000 for a in answers]
    return {
        "rate_per_s": rate,
        "requests": len(answers),
        "errors": sum(a.status != 200 for a in answers),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
    }


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
        "sent": result["sent"],  # requests started: the last ones may end unanswered by wrk
        "errors": errors,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
    }


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
    # The line as written, through a shell as a Procfile runner does: it starts with an env
    # assignment and expands ${WORKER_CONCURRENCY:-4}.
    command = next(
        line.partition(":")[2].strip()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("worker:")
    )
    worker_env = {**env, "PATH": f"{BIN}:/usr/bin:/bin"}
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
            raise TimeoutError(f"only {done}/{total} applied within {timeout}s")
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
                answers = deliver_all(port, user_updates(int(rate * seconds)), rate=rate)
                steady = summary(answers, rate)
                try:
                    wait_applied(database_url, count_rows(database_url), timeout=120)
                    steady["all_applied"] = True
                except TimeoutError:
                    steady["all_applied"] = False
    # Every acknowledged delivery is a row; at most the ones wrk started besides.
    saturation["stored"] = stored
    saturation["stored_matches"] = saturation["requests"] <= stored <= saturation["sent"]
    return {"warm_up": warm, "saturation_no_worker": saturation, "fixed_rate_worker_on": steady}


def bench_pipeline(users: int, per_user: int) -> dict[str, Any]:
    history = user_histories(users, per_user, prefix="user_pipe")
    deliveries, expected = history.deliveries, history.emails
    total = len(deliveries)
    with bench_services("pipeline") as env, web(env, "pipeline") as port:
        database_url = env["DATABASE_URL"]
        with procfile_worker(env, "pipeline") as worker:
            started = time.perf_counter()
            answers = deliver_all(port, deliveries, threads=16)
            ack_seconds = time.perf_counter() - started
            errors = sum(a.status != 200 for a in answers)
            applied_at = wait_applied(database_url, total, timeout=600)
            time.sleep(1)  # let the last log lines reach the file
            applied_lines = applied_event_ids(worker.output())
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
        # How far the worker trailed the last acknowledgement: ~0 when it keeps up.
        "applied_lag_after_last_ack_s": round(elapsed - ack_seconds, 1),
        "applied_per_s": round(total / elapsed, 1),
        "steady_applied_per_s": round(total / float(span), 1) if span else None,
        "users_match_model": emails == expected,
        "events_claimed_once": int(claims[0]) == total == int(claims[1]),
        "applied_log_lines": len(applied_lines),
        "applied_twice": len(applied_lines) - len(set(applied_lines)),
    }


# `python -m bench` scenarios (bench/__main__.py): name -> (what, how to run it with its options).
PIPELINE_SCENARIOS = ("webhook-ack", "pipeline")


@dataclass(frozen=True)
class PipelineOptions:
    ack_seconds: float = 10
    ack_rate: float = 200
    users: int = 1000
    per_user: int = 10


def run_scenarios(names: list[str], options: PipelineOptions) -> tuple[str, dict[str, Any], bool]:
    """Run the selected pipeline scenarios: (markdown table, raw results, every target met)."""
    results: dict[str, Any] = {}
    rows: list[tuple[str, str, str, bool]] = []
    if "webhook-ack" in names:
        ack = results["webhook-ack"] = bench_ack(options.ack_seconds, options.ack_rate)
        sat, steady = ack["saturation_no_worker"], ack["fixed_rate_worker_on"]
        rows += [
            (
                "webhook-ack: acknowledgements/s at saturation, no worker (wrk -t2 -c32)",
                f"{sat['events_per_s']:,.0f}",
                ">= 1,000",
                sat["events_per_s"] >= 1000,
            ),
            (
                f"webhook-ack: p50 / p99 / max at {options.ack_rate:g}/s, worker running",
                f"{steady['p50_ms']:.1f} / {steady['p99_ms']:.1f} / {steady['max_ms']:.1f} ms",
                "p99 < 50 ms",
                steady["p99_ms"] < 50,
            ),
            (
                "webhook-ack: errors (non-200, socket errors, deliveries sent twice)",
                str(sat["errors"] + steady["errors"]),
                "0",
                sat["errors"] + steady["errors"] == 0 and sat["stored_matches"],
            ),
        ]
    if "pipeline" in names:
        pipe = results["pipeline"] = bench_pipeline(options.users, options.per_user)
        once = (
            pipe["users_match_model"]
            and pipe["events_claimed_once"]
            and pipe["applied_twice"] == 0
            and pipe["applied_log_lines"] == pipe["events"]
            and pipe["ack_errors"] == 0
        )
        rows += [
            (
                f"pipeline: applied/s, {pipe['events']:,} events for {pipe['users']:,} users,"
                " first send to last applied",
                f"{pipe['applied_per_s']:,.0f} (acks {pipe['acknowledged_per_s']:,.0f}/s)",
                ">= 500",
                pipe["applied_per_s"] >= 500,
            ),
            (
                "pipeline: exactly once (one claim and one apply per event; users = model)",
                "yes" if once else "NO",
                "yes",
                once,
            ),
        ]
    lines = ["| webhook pipeline | value | target | met |", "|---|---|---|---|"]
    lines += [f"| {what} | **{value}** | {target} | {'met' if met else 'NOT met'} |"
              for what, value, target, met in rows]  # fmt: skip
    return "\n".join(lines), results, all(met for *_, met in rows)


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
