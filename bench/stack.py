"""The processes a benchmark talks to, started on first use and stopped at the end.

Every server runs with WEB_CONCURRENCY worker processes (2 by default) on 127.0.0.1:
- `gateway`: the Procfile's own `web` line (gunicorn --config gunicorn.conf.py wsgi:app), in
  production mode on a migrated PostgreSQL database and a private redis-server, verifying tokens
  against the bench JWKS (CLERK_JWKS_URL), with one guard `echo` pointing at `upstream`;
- `flask_ceiling`: a bare Flask app on the same gunicorn configuration (the server's ceiling);
- `peer`: FastAPI + fastapi-clerk-auth on uvicorn[standard], the same JWKS and issuer;
- `upstream`: a keep-alive echo guard (bench/echo_upstream.py, gunicorn gthread, one process);
- `jwks_url`: the JWKS of the bench signing key, served by a thread of this process.
"""

from __future__ import annotations

import base64
import contextlib
import json
import multiprocessing
import os
import shlex
import threading
import time
from collections.abc import Iterator
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.common import bench_services
from tests.support.processes import BIN, ROOT, Proc, free_port, wait_for_port

KID = "bench-key-1"
AZP = "http://localhost:3000"


def procfile_command(process: str) -> list[str]:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return shlex.split(command)
    raise LookupError(f"no {process} process in the Procfile")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """The bench's Clerk instance key: RS256 session tokens, and its JWKS."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._made = 0
        self._pool: Any = None
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.private.public_key().public_numbers()
        self.jwks = {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": KID,
                    "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                    "e": _b64(numbers.e.to_bytes(3, "big")),
                }
            ]
        }

    def pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def tokens(self, count: int) -> list[str]:
        """`count` session tokens never made before (one session each), signed on every CPU."""
        first, self._made = self._made, self._made + count
        step = 2000
        chunks = [(self.pem(), self.issuer, start, min(first + count, start + step))
                  for start in range(first, first + count, step)]  # fmt: skip
        if len(chunks) == 1 or (os.cpu_count() or 1) == 1:
            return [token for chunk in chunks for token in _sign_chunk(chunk)]
        return [token for part in self._signers().map(_sign_chunk, chunks) for token in part]

    def _signers(self) -> Any:
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(os.cpu_count())
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None


def _sign_chunk(job: tuple[bytes, str, int, int]) -> list[str]:
    pem, issuer, start, stop = job
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    header = _b64(json.dumps({"alg": "RS256", "kid": KID, "typ": "JWT"}).encode())
    now = int(time.time())
    out = []
    for n in range(start, stop):
        # The shape of a Clerk v2 session token.
        claims = {"azp": AZP, "exp": now + 3600, "fva": [0, -1], "iat": now - 1,
                  "iss": issuer, "nbf": now - 6, "sid": f"sess_bench{n:08d}",
                  "sts": "active", "sub": f"user_bench{n % 1000:05d}", "v": 2}  # fmt: skip
        signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        out.append(f"{signing_input}.{_b64(signature)}")
    return out


class _JwksHandler(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


class Stack:
    def __init__(self, exit_stack: contextlib.ExitStack, workdir: Path, workers: int = 2) -> None:
        self._exit = exit_stack
        self.workdir = workdir
        self.workers = workers
        workdir.mkdir(parents=True, exist_ok=True)

    def _start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> str:
        proc = Proc(argv, env, self.workdir / f"{name}.log")
        self._exit.callback(proc.stop, 30)
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError:
            raise RuntimeError(f"{name} did not start:\n{proc.output()[-3000:]}") from None
        return f"http://127.0.0.1:{port}"

    @cached_property
    def jwks_url(self) -> str:
        handler = type("Handler", (_JwksHandler,), {"body": json.dumps(self.key.jwks).encode()})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._exit.callback(server.shutdown)
        return f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"

    @cached_property
    def issuer(self) -> str:
        return "https://clerk.bench.test"

    @cached_property
    def key(self) -> SigningKey:
        key = SigningKey(self.issuer)
        self._exit.callback(key.close)
        return key

    @cached_property
    def hot_token(self) -> str:
        return self.key.tokens(1)[0]

    @cached_property
    def services(self) -> dict[str, str]:
        """A migrated PostgreSQL database and a private redis-server (bench/common.py)."""
        return self._exit.enter_context(bench_services("harness"))

    @cached_property
    def upstream(self) -> str:
        port = free_port()
        # --config /dev/null: gunicorn would otherwise read ./gunicorn.conf.py, the gateway's (its
        # start-up check refuses a production start without DATABASE_URL and REDIS_URL).
        argv = [str(BIN / "gunicorn"), "--config", "/dev/null", "--chdir", str(ROOT / "bench"),
                "--worker-class", "gthread", "--workers", "1", "--threads", "8",
                "--keep-alive", "30", "--bind", f"127.0.0.1:{port}",
                "echo_upstream:app"]  # fmt: skip
        return self._start("upstream", argv, {}, port)

    def _clerk_env(self) -> dict[str, str]:
        return {"CLERK_JWKS_URL": self.jwks_url, "CLERK_ISSUER": self.issuer}

    @cached_property
    def gateway_env(self) -> dict[str, str]:
        return {
            **self.services,
            **self._clerk_env(),
            "GATEWAY_ENV": "production",
            "CLERK_AUTHORIZED_PARTIES": AZP,
            "GUARD_SERVICES": f"echo={self.upstream}/check",
            "WEB_CONCURRENCY": str(self.workers),
        }

    @cached_property
    def gateway(self) -> str:
        """The Procfile's web command as written, bound to loopback instead of 0.0.0.0."""
        port = free_port()
        argv = procfile_command("web")
        argv = [str(BIN / argv[0]), *argv[1:-1], "--bind", f"127.0.0.1:{port}", argv[-1]]
        base = self._start("gateway", argv, {**self.gateway_env, "PORT": str(port)}, port)
        _wait_ok(f"{base}/healthz")
        return base

    @cached_property
    def flask_ceiling(self) -> str:
        port = free_port()
        argv = [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py",
                "--bind", f"127.0.0.1:{port}", "bench.peers.bare_flask:app"]  # fmt: skip
        base = self._start("flask-ceiling", argv, {**self.gateway_env, "PORT": str(port)}, port)
        _wait_ok(f"{base}/healthz")
        return base

    @cached_property
    def peer(self) -> str:
        port = free_port()
        argv = [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(self.workers), "bench.peers.fastapi_clerk:app"]  # fmt: skip
        return self._start("peer", argv, self._clerk_env(), port)


def _wait_ok(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200")


@contextlib.contextmanager
def running_stack(workdir: Path, workers: int = 2) -> Iterator[Stack]:
    with contextlib.ExitStack() as exit_stack:
        yield Stack(exit_stack, workdir, workers)
