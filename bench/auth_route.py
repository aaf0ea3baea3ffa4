"""An authenticated route that touches no database vs /healthz, through the Procfile's gunicorn.

    .venv/bin/python bench/auth_route.py [--seconds 8] [--threads 8]

Starts `gunicorn --config gunicorn.conf.py wsgi:app` on 127.0.0.1 (PEM-key mode: no network,
SQLite and the filesystem broker under a temporary instance folder), then runs a load generator
in this process: threads, one keep-alive http.client connection each, for a fixed duration per
route. Every client reuses one session token, as a browser does for its token's 60-second life,
so the authenticated route runs on the verified-token cache after the first request.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402 - after the path fix, so the script runs from anywhere
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from bench.common import wait_for_http  # noqa: E402
from tests.support.processes import free_port, start_gunicorn  # noqa: E402

ISSUER = "https://clerk.bench.test"


def load(port: int, path: str, headers: dict[str, str], seconds: float, threads: int) -> dict:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start.wait()
        mine = latencies[n]
        while True:
            began = time.perf_counter()
            if began >= stop_at[0]:
                break
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[n] += 1
            except (OSError, http.client.HTTPException):
                errors[n] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            mine.append(time.perf_counter() - began)
        conn.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    start.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for per in latencies for x in per)
    if not flat:
        raise SystemExit(f"no successful request to {path}")
    return {"path": path, "latencies": flat, "errors": sum(errors), "elapsed": elapsed}


def combine(path: str, parts: list[dict]) -> dict:
    flat = sorted(x for part in parts for x in part["latencies"])
    return {
        "path": path,
        "requests": len(flat),
        "errors": sum(part["errors"] for part in parts),
        "rps": len(flat) / sum(part["elapsed"] for part in parts),
        "p50_ms": flat[len(flat) // 2] * 1000,
        "p99_ms": flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two routes")
    args = parser.parse_args()

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    claims = {"sub": "user_bench", "sid": "sess_bench", "iss": ISSUER, "iat": now, "nbf": now,
              "exp": now + 3600, "v": 2}  # fmt: skip
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "bench"})

    with tempfile.TemporaryDirectory(prefix="bench-auth-") as instance:
        env = {
            "GATEWAY_INSTANCE_PATH": instance,
            "CLERK_JWT_KEY": pem.decode(),
            "CLERK_ISSUER": ISSUER,
            "GATEWAY_ENV": "production",
        }
        for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CLERK_PUBLISHABLE_KEY",
                     "CLERK_JWKS_URL", "CLERK_SECRET_KEY"):  # fmt: skip
            os.environ.pop(name, None)
        port = free_port()
        proc = start_gunicorn(env, Path(instance) / "gunicorn.log", port)
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        try:
            cpus = os.cpu_count() or 1
            workers = os.environ.get("WEB_CONCURRENCY") or f"min(CPUs, 4) = {min(cpus, 4)}"
            threads = os.environ.get("GUNICORN_THREADS", "8")
            print(
                f"gunicorn gthread: workers {workers}, threads {threads}; CPUs {cpus}; "
                f"load: {args.threads} keep-alive clients, {args.seconds:.0f} s per route"
            )
            auth = {"Authorization": f"Bearer {token}"}
            # Keep-alive connections stick to the gunicorn process that accepted them, so one
            # phase can land unevenly on the workers: warm up first, then alternate the routes in
            # short rounds with fresh connections and add the rounds up.
            load(port, "/healthz", {}, 2.0, args.threads)
            rounds: dict[str, list[dict]] = {"/healthz": [], "/api/v1/auth/me": []}
            for _ in range(args.rounds):
                for path, headers in (("/healthz", {}), ("/api/v1/auth/me", auth)):
                    rounds[path].append(
                        load(port, path, headers, args.seconds / args.rounds, args.threads)
                    )
            results = [combine(path, parts) for path, parts in rounds.items()]
        finally:
            proc.stop(timeout=20)
    for r in results:
        print(
            f"{r['path']:<18} {r['rps']:>9,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
            f"p99 {r['p99_ms']:6.2f} ms  ({r['requests']} requests, {r['errors']} errors)"
        )
    ratio = results[1]["rps"] / results[0]["rps"]
    print(f"authenticated / healthz throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
