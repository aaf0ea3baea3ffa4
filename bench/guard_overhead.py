"""The gateway's added latency and throughput cost on a guard call, over calling the upstream.

Starts a keep-alive echo upstream (bench/echo_upstream.py under gunicorn gthread, its own
process, on 127.0.0.1) and the gateway under gunicorn with the
Procfile's config (gunicorn.conf.py: gthread, WEB_CONCURRENCY, GUNICORN_THREADS), then:
  1. fixed rate, direct:   POST the upstream at --rate req/s for --seconds
  2. fixed rate, gateway:  POST /api/v1/guards/process (real RS256 session token) at the same rate
  3. max throughput, direct and via the gateway, with --concurrency keep-alive clients
Latency is measured from each request's scheduled send time (no coordinated omission).

    .venv/bin/python bench/guard_overhead.py --rate 200 --seconds 10

Needs PostgreSQL (the gateway writes guard_requests rows): a `cg_bench_<n>` database is created
and migrated on TEST_PG_SERVER (default postgresql://root:root@127.0.0.1:5432), dropped after.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402 - after the path fix, so the script runs from anywhere
import psycopg  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from bench.common import migrated_database  # noqa: E402
from tests.support.processes import BIN, Proc, free_port, start_gunicorn, wait_for_port  # noqa: E402

MAX_SECONDS = 20.0
ISSUER = "https://clerk.bench.test"
PAYLOAD = {"text": "The quick brown fox jumps over the lazy dog.", "lang": "en"}


class Target:
    def __init__(self, port: int, path: str, body: bytes, headers: dict[str, str]) -> None:
        self.port, self.path, self.body, self.headers = port, path, body, headers


def run_client(
    target: Target, start_at: float, interval: float | None, stop_at: float, out: list[float]
) -> None:
    """One keep-alive connection. interval=None: closed loop (as fast as answers come)."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    scheduled = start_at
    errors = 0
    while True:
        if interval is not None:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        sent = scheduled if interval is not None else time.perf_counter()
        if sent >= stop_at:
            break
        try:
            conn.request("POST", target.path, body=target.body, headers=target.headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
            else:
                out.append(time.perf_counter() - sent)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
        if interval is not None:
            scheduled += interval
    conn.close()
    if errors:
        print(f"  ({errors} errors on one client)", file=sys.stderr)


def load(target: Target, seconds: float, clients: int, rate: float | None) -> dict[str, float]:
    seconds = min(seconds, MAX_SECONDS)
    results: list[list[float]] = [[] for _ in range(clients)]
    start = time.perf_counter() + 0.2
    interval = clients / rate if rate else None
    threads = [
        threading.Thread(
            target=run_client,
            # Stagger the clients so that a fixed rate really is evenly spaced.
            args=(
                target,
                start + (i * interval / clients if interval else 0),
                interval,
                start + seconds,
                results[i],
            ),
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    latencies = sorted(x for result in results for x in result)
    if not latencies:
        raise SystemExit("no successful request")
    return {
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def warm(target: Target, n: int = 200) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    for _ in range(n):
        conn.request("POST", target.path, body=target.body, headers=target.headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, (response.status, target.path)
    conn.close()


def main() -> None:
    with contextlib.ExitStack() as stack:
        run(stack)


def run(stack: contextlib.ExitStack) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200, help="fixed-rate phase, requests/s")
    parser.add_argument("--seconds", type=float, default=10, help=f"per phase (max {MAX_SECONDS})")
    parser.add_argument(
        "--clients", type=int, default=8, help="connections in the fixed-rate phase"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="clients in the max phase")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="guard-bench-"))
    # Its own process (gunicorn gthread, keep-alive), so the load generator's GIL is not its GIL.
    upstream_port = free_port()
    upstream = Proc(
        [str(BIN / "gunicorn"), "--chdir", str(ROOT / "bench"), "--worker-class", "gthread",
         "--workers", "1", "--threads", "8", "--keep-alive", "30",
         "--bind", f"127.0.0.1:{upstream_port}", "echo_upstream:app"],
        {},
        tmp / "upstream.log",
    )  # fmt: skip
    wait_for_port(upstream_port)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    now = int(time.time())
    token = jwt.encode(
        {"sub": "user_bench", "iss": ISSUER, "sid": "sess_bench", "iat": now, "exp": now + 3600},
        key,
        algorithm="RS256",
        headers={"kid": "bench"},
    )
    database_url = stack.enter_context(migrated_database("guards"))
    env = {
        "DATABASE_URL": database_url,
        "GATEWAY_INSTANCE_PATH": str(tmp),
        "CLERK_JWT_KEY": pem,
        "CLERK_ISSUER": ISSUER,
        "GUARD_SERVICES": f"echo=http://127.0.0.1:{upstream_port}/check",
    }
    gateway_port = free_port()
    gateway = start_gunicorn(env, tmp / "gunicorn.log", gateway_port)
    try:
        payload = json.dumps(PAYLOAD).encode()
        direct = Target(
            upstream_port,
            "/check",
            payload,
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                "X-Clerk-User-Id": "user_bench",
            },
        )
        via = Target(
            gateway_port,
            "/api/v1/guards/process",
            json.dumps({"service": "echo", "payload": PAYLOAD}).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        warm(direct)
        warm(via)
        report: dict[str, Any] = {"args": vars(args), "cpus": os.cpu_count()}
        for name, target in (("direct", direct), ("gateway", via)):
            report[f"fixed_{name}"] = load(target, args.seconds, args.clients, args.rate)
        for name, target in (("direct", direct), ("gateway", via)):
            report[f"max_{name}"] = load(target, args.seconds, args.concurrency, None)
        report["added_p50_ms"] = (
            report["fixed_gateway"]["p50_ms"] - report["fixed_direct"]["p50_ms"]
        )
        report["added_p99_ms"] = (
            report["fixed_gateway"]["p99_ms"] - report["fixed_direct"]["p99_ms"]
        )
        report["throughput_ratio"] = report["max_gateway"]["rps"] / report["max_direct"]["rps"]
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
            time.sleep(1)  # the audit writer's last batch
            report["guard_requests_rows"] = conn.execute(
                "SELECT count(*) FROM guard_requests"
            ).fetchone()[0]
        print(json.dumps(report, indent=2, default=lambda v: round(v, 3)))
        for key_name in ("fixed_direct", "fixed_gateway", "max_direct", "max_gateway"):
            r = report[key_name]
            print(
                f"{key_name:14} {r['requests']:7d} req  {r['rps']:8.1f} req/s  "
                f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            )
        print(
            f"added latency: p50 {report['added_p50_ms']:.2f} ms,"
            f" p99 {report['added_p99_ms']:.2f} ms; throughput ratio (gateway/direct)"
            f" {report['throughput_ratio']:.2f}"
        )
    finally:
        gateway.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
