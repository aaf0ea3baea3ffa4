"""GuardClient.call (breaker, headers, JSON, mapping) against a bare urllib3 PoolManager request.

    .venv/bin/python bench/guard_client.py --calls 2000

Both hit the same keep-alive upstream (bench/echo_upstream.py under gunicorn, its own process), in
alternating rounds so that machine noise falls on both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import urllib3  # noqa: E402

from gateway.auth.claims import normalise_session_claims  # noqa: E402
from gateway.guards.client import GuardClient  # noqa: E402
from gateway.guards.registry import GuardRegistry  # noqa: E402
from tests.support.processes import BIN, Proc, free_port, wait_for_port  # noqa: E402

TOKEN = "eyJ" + "x" * 800  # the size of a Clerk session token; never verified here
SESSION = normalise_session_claims({"sub": "user_1", "sid": "sess_1"})


def timed(call: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "upstream.log"
    upstream = Proc(
        # --config /dev/null: not the gateway's ./gunicorn.conf.py (its production start-up check).
        [str(BIN / "gunicorn"), "--config", "/dev/null", "--chdir", str(ROOT / "bench"),
         "--worker-class", "gthread",
         "--workers", "1", "--threads", "4", "--bind", f"127.0.0.1:{port}", "echo_upstream:app"],
        {},
        log,
    )  # fmt: skip
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/check"
        client = GuardClient(
            GuardRegistry((("echo", url),)),
            timeout_seconds=5,
            circuit_failures=5,
            circuit_reset_seconds=30,
            pool_size=8,
        )
        pool = urllib3.PoolManager(maxsize=8)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}

        def guard_client() -> object:
            return client.call(
                "echo", {"text": "hello"}, token=TOKEN, session=SESSION, request_id="r1"
            )

        def bare_urllib3() -> object:
            return pool.request("POST", url, body=b'{"text":"hello"}', headers=headers).json()

        results: dict[str, list[float]] = {"guard_client": [], "bare_urllib3": []}
        for _ in range(4):
            for name, call in (("guard_client", guard_client), ("bare_urllib3", bare_urllib3)):
                timed(call, 100)  # warm the connection and caches
                results[name] += timed(call, args.calls // 4)
        for name, samples in results.items():
            print(
                f"{name:13} p50 {statistics.median(samples):6.0f} us"
                f"  mean {statistics.mean(samples):6.0f} us  ({len(samples)} calls)"
            )
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
