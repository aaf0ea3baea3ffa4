"""Cost of one request in process (no server, no client): µs per request, and where it goes.

    .venv/bin/python -m bench.profile_request [--requests 20000] [--guard] [--profile auth-hot]

Calls the WSGI app directly with a prepared environ (what gunicorn hands it), so only the app's
own work is timed: the bare Flask ceiling, /healthz, GET /api/v1/guards with one reused token
(auth-hot) and with a fresh token each time (auth-cold). Logs go to /dev/null through the real
JSON handler. `--profile NAME` runs that case under pyinstrument and prints its call tree.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from bench.peers.bare_flask import app as bare_flask
from bench.scenarios import PAYLOAD
from bench.stack import AZP, SigningKey, Stack
from gateway import create_app
from gateway.config import Config
from gateway.logs import JsonFormatter

ISSUER = "https://clerk.bench.test"


def environ(path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    if not status.startswith("200"):
        raise RuntimeError(status)


def call(app: Callable[..., Iterable[bytes]], env: dict[str, Any]) -> None:
    body = app(dict(env), _start_response)
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()


def per_request_us(one: Callable[[int], None], requests: int) -> float:
    for n in range(requests, requests + 20):  # warm-up: distinct from the measured calls
        one(n)
    # CPU time of this process: what other processes on a shared machine disturb least.
    started = time.process_time()
    for n in range(requests):
        one(n)
    return (time.process_time() - started) / requests * 1e6


def build_gateway(key: SigningKey, instance: str, env: dict[str, str] | None = None) -> Any:
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    os.environ.update(
        {
            "GATEWAY_INSTANCE_PATH": instance,
            "CLERK_JWT_KEY": pem.decode(),
            "CLERK_ISSUER": ISSUER,
            "CLERK_AUTHORIZED_PARTIES": AZP,
            "GUARD_SERVICES": "echo=http://127.0.0.1:9/check",
            **(env or {}),
        }
    )
    app = create_app(Config.from_env())
    # The real JSON handler, writing to /dev/null instead of the terminal.
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter) and isinstance(
            handler, logging.StreamHandler
        ):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", choices=["bare", "healthz", "auth-hot", "auth-cold", "guard"])
    parser.add_argument(
        "--guard",
        action="store_true",
        help="also POST /api/v1/guards/process to the bench echo upstream (needs PostgreSQL)",
    )
    args = parser.parse_args()
    key = SigningKey(ISSUER)
    with tempfile.TemporaryDirectory(prefix="profile-") as instance, ExitStack() as exit_stack:
        env = {}
        if args.guard or args.profile == "guard":
            stack = Stack(exit_stack, Path(instance) / "stack")
            env = {**stack.services, "GUARD_SERVICES": f"echo={stack.upstream}/check"}
        gateway = build_gateway(key, instance, env)
        hot = key.tokens(1)[0]
        cold_count = min(args.requests, 4000)
        cold_tokens = key.tokens(cold_count + 7 * 20 + 20)
        key.close()
        cases: dict[str, tuple[Callable[[int], None], int]] = {
            "bare": (lambda n: call(bare_flask, environ("/healthz")), args.requests),
            "healthz": (lambda n: call(gateway, environ("/healthz")), args.requests),
            "auth-hot": (
                lambda n: call(
                    gateway, environ("/api/v1/guards", {"Authorization": f"Bearer {hot}"})
                ),
                args.requests,
            ),
            "auth-cold": (
                lambda n: call(
                    gateway,
                    environ("/api/v1/guards", {"Authorization": f"Bearer {cold_tokens[n]}"}),
                ),
                cold_count,
            ),
        }
        guard_body = json.dumps({"service": "echo", "payload": PAYLOAD}).encode()

        def guard_call(n: int) -> None:
            env = environ("/api/v1/guards/process", {"Authorization": f"Bearer {hot}"})
            env.update(REQUEST_METHOD="POST", CONTENT_TYPE="application/json")
            env.update(
                CONTENT_LENGTH=str(len(guard_body)), **{"wsgi.input": io.BytesIO(guard_body)}
            )
            call(gateway, env)

        if env:
            cases["guard"] = (guard_call, min(args.requests, 3000))
        if args.profile:
            from pyinstrument import Profiler

            one, count = cases[args.profile]
            one(0)
            profiler = Profiler(interval=0.0002)
            profiler.start()
            for n in range(1, count):
                one(n)
            profiler.stop()
            show_all = os.environ.get("PROFILE_ALL") == "1"  # every frame, libraries' included
            print(profiler.output_text(unicode=True, color=False, show_all=show_all))
            return
        # Interleaved rounds, the best round of each case: on a shared machine the fastest
        # round is the one least disturbed by others.
        rounds = 7
        best: dict[str, float] = {}
        offsets = dict.fromkeys(cases, 0)
        for _ in range(rounds):
            for name, (one, count) in cases.items():
                n = count // rounds
                start = offsets[name]
                offsets[name] += n + 20
                us = per_request_us(lambda i, one=one, start=start: one(start + i), n)
                best[name] = min(best.get(name, us), us)
        for name, us in best.items():
            print(f"{name:<10} {us:8.1f} µs/request  {us / best['bare']:5.2f}x bare Flask (CPU)")
        if env:
            # The guard call mostly waits on the upstream: its wall-clock latency is the figure.
            latencies = []
            for n in range(2000):
                started = time.perf_counter()
                guard_call(n)
                latencies.append((time.perf_counter() - started) * 1e6)
            print(
                f"guard      p50 {statistics.median(latencies):8.1f} µs wall clock, one at a time"
            )


if __name__ == "__main__":
    main()
