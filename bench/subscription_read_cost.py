"""What the subscription read adds to a guard call: the same call with Stripe's webhooks off (no
read), on (the status through the one-second per-process cache: one user calling repeatedly),
and on with the cache off (one indexed SELECT per call), interleaved in one run.

    .venv/bin/python bench/subscription_read_cost.py --calls 1000

In-process (Flask test client, so no HTTP parsing on our side) against a loopback echo upstream.
Needs PostgreSQL: a `cg_bench_<n>` database is created and migrated on TEST_PG_SERVER, then dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from werkzeug.serving import make_server  # noqa: E402

from bench import echo_upstream  # noqa: E402
from bench.common import migrated_database, percentile  # noqa: E402
from gateway import create_app  # noqa: E402
from gateway.billing.entitlement import CACHE_KEY, StatusCache  # noqa: E402
from gateway.config import Config  # noqa: E402
from gateway.extensions import db  # noqa: E402
from gateway.models import User  # noqa: E402
from tests.support.clerk import ISSUER, RsaKey, mint_token  # noqa: E402
from tests.support.processes import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    with migrated_database("subscription-read") as database_url:
        measure(args.calls, database_url)


def measure(calls: int, database_url: str) -> None:
    upstream = make_server("127.0.0.1", free_port(), echo_upstream.app, threaded=True)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    key = RsaKey.generate("bench")
    env = {
        "DATABASE_URL": database_url,
        "GATEWAY_INSTANCE_PATH": tempfile.mkdtemp(),
        "CLERK_JWT_KEY": key.public_pem,
        "CLERK_ISSUER": ISSUER,
        "GUARD_SERVICES": f"echo=http://127.0.0.1:{upstream.server_port}/check",
    }
    off = create_app(Config.from_env(env))
    on = create_app(Config.from_env({**env, "STRIPE_WEBHOOK_SECRET": "whsec_bench"}))
    uncached = create_app(Config.from_env({**env, "STRIPE_WEBHOOK_SECRET": "whsec_bench"}))
    uncached.extensions[CACHE_KEY] = StatusCache(ttl_seconds=0.0)
    with on.app_context():
        db.session.add(
            User(clerk_user_id="user_bench", email="b@example.com", subscription_status="active")
        )
        db.session.commit()
    headers = {"Authorization": f"Bearer {mint_token(key, user_id='user_bench')}"}
    body = {"service": "echo", "payload": {"text": "hello"}}
    clients = {
        "off": off.test_client(),
        "on": on.test_client(),
        "uncached": uncached.test_client(),
    }
    timings: dict[str, list[float]] = {name: [] for name in clients}
    for client in clients.values():  # warm: pools, token cache, statement cache
        for _ in range(50):
            assert (
                client.post("/api/v1/guards/process", json=body, headers=headers).status_code == 200
            )
    order = list(clients.items())
    for _ in range(calls):
        order = order[1:] + order[:1]  # interleaved, rotating who goes first: noise hits all
        for name, client in order:
            started = time.perf_counter()
            client.post("/api/v1/guards/process", json=body, headers=headers)
            timings[name].append((time.perf_counter() - started) * 1000)
    for app in (off, on, uncached):
        app.extensions["guards"].flush_audit(10)
    upstream.shutdown()

    p50 = {name: statistics.median(values) for name, values in timings.items()}
    for name, values in timings.items():
        print(
            f"stripe webhooks {name:>8}: p50 {p50[name]:.3f} ms,"
            f" p99 {percentile(values, 99):.3f} ms per guard call ({calls} calls)"
        )
    for name in ("on", "uncached"):
        print(
            f"{name}: adds {p50[name] - p50['off']:.3f} ms p50;"
            f" ratio {name}/off {p50[name] / p50['off']:.2f}"
        )


if __name__ == "__main__":
    main()
