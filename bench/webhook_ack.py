"""Acknowledgement latency of POST /webhooks/clerk: p50/p99 at a fixed rate, then the highest rate
sustained by closed-loop clients. gunicorn runs with the Procfile's config on 127.0.0.1.

    .venv/bin/python -m bench.webhook_ack [--rate 50] [--seconds 10] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import RESULTS, bench_services, signed_requests, summary, wait_for_http
from tests.support.processes import free_port, start_gunicorn


def fixed_rate(url: str, rate: float, seconds: float) -> dict[str, float]:
    """Open loop: request i starts at t0 + i/rate; latency counts from that scheduled start, so
    a slow server cannot hide its queueing (no coordinated omission)."""
    count = int(rate * seconds)
    deliveries = signed_requests(count, timestamp=time.time() + seconds / 2)
    local = threading.local()
    latencies: list[float] = []
    errors = 0
    t0 = time.perf_counter() + 0.2

    def send(i: int) -> None:
        nonlocal errors
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        body, headers = deliveries[i]
        response = session.post(url, data=body, headers=headers, timeout=10)
        latencies.append((time.perf_counter() - scheduled) * 1000)
        if response.status_code != 200:
            errors += 1

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(send, range(count)))
    return {"rate_per_s": rate, "errors": errors, **summary(latencies)}


def max_rate(url: str, clients: int, seconds: float) -> dict[str, float]:
    """Closed loop: `clients` threads send back to back; the rate they achieve is the maximum the
    server sustains (with the p99 it costs)."""
    deliveries = signed_requests(int(clients * seconds * 60), timestamp=time.time() + seconds)
    cursor = iter(range(len(deliveries)))
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        nonlocal errors
        session = requests.Session()
        while time.perf_counter() < stop_at:
            with lock:
                i = next(cursor)
            body, headers = deliveries[i]
            started = time.perf_counter()
            response = session.post(url, data=body, headers=headers, timeout=10)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "sustained_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        **summary(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--web-concurrency", default="2")
    args = parser.parse_args()
    with bench_services("ack") as env:
        port = free_port()
        web = start_gunicorn(
            {**env, "WEB_CONCURRENCY": args.web_concurrency}, RESULTS / "ack-gunicorn.log", port
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_http(f"{base}/healthz")
            url = f"{base}/webhooks/clerk"
            fixed_rate(url, 20, 1)  # warm-up: pools, imports
            result = {
                "web_concurrency": args.web_concurrency,
                "fixed_rate": fixed_rate(url, args.rate, args.seconds),
                "max_rate": max_rate(url, args.clients, args.seconds),
            }
        finally:
            web.stop()
    print(json.dumps(result, indent=2))
    (RESULTS / "webhook_ack.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
