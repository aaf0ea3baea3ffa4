"""Shared set-up for the benchmarks: a migrated database, a private Redis, signed bodies, stats."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.support.processes import ROOT, Proc, free_port, start_redis_server
from tests.support.svix import SECRET, clerk_event, new_msg_id, new_user_id, sign

PG_SERVER = os.environ.get("TEST_PG_SERVER", "postgresql://root:root@127.0.0.1:5432")
BENCH_DB = f"cg_bench_{zlib.crc32(str(ROOT).encode()) % 100000}"
RESULTS = ROOT / "bench" / "results"


@contextmanager
def migrated_database(name: str) -> Iterator[str]:
    """A fresh `cg_bench_<n>` database, migrated as the release phase does; dropped afterwards."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    # One per process: `make bench`, its smoke test and a profile may run at once in a checkout.
    database = f"{BENCH_DB}_{os.getpid()}"
    admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{database}"')
    url = f"{PG_SERVER}/{database}"
    # Production refuses to start without a broker; migrations never publish, so none listens.
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "GATEWAY_INSTANCE_PATH": str(RESULTS / "instance"),
    }
    migrate = Proc(
        [str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "db", "upgrade"],
        env,
        RESULTS / f"{name}-migrate.log",
    )
    if migrate.popen.wait(120) != 0:
        raise SystemExit(migrate.output())
    migrate.stop()
    try:
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


@contextmanager
def bench_services(name: str) -> Iterator[dict[str, str]]:
    """A migrated database and a private redis-server; yields the processes' environment."""
    with migrated_database(name) as database_url:
        port = free_port()
        redis = start_redis_server(port, RESULTS / f"{name}-redis.log")
        try:
            yield {
                "DATABASE_URL": database_url,
                "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "CLERK_WEBHOOK_SECRET": SECRET,
                "GATEWAY_INSTANCE_PATH": str(RESULTS / "instance"),
                # Beat is not running in the benchmarks; the sweep would only add duplicates.
                "WEBHOOK_SWEEP_SECONDS": "3600",
            }
        finally:
            redis.stop()


def signed_requests(
    count: int, timestamp: float | None = None
) -> list[tuple[bytes, dict[str, str]]]:
    """Pre-signed user.created deliveries (distinct users), so signing is not what we time."""
    out = []
    for n in range(count):
        event = clerk_event("user.created", new_user_id(), f"bench{n}@example.com")
        body = json.dumps(event).encode()
        out.append((body, sign(body, new_msg_id(), timestamp=timestamp)))
    return out


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies_ms),
        "p50_ms": round(percentile(latencies_ms, 50), 2),
        "p99_ms": round(percentile(latencies_ms, 99), 2),
        "max_ms": round(max(latencies_ms), 2),
        "mean_ms": round(statistics.fmean(latencies_ms), 2),
    }


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")
