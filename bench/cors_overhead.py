"""What CORS (Flask-CORS, gateway/cors.py) adds to an authenticated request, in process.

    .venv/bin/python bench/cors_overhead.py [--requests 4000] [--rounds 5]

Two apps in this process, identical but for CORS_ORIGINS: GET /api/v1/auth/me (verified-token
cache warm, no database) through Flask's test client, with an `Origin` header, rounds
interleaved so machine noise hits both alike; the best round of each is compared. The
difference per request is the cost of the Flask-CORS after_request hook and the preflight
check; the ratio is what it adds to the whole request path as Flask runs it (gunicorn and the
network only dilute it further).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402 - after the path fix, so the script runs from anywhere
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from gateway import create_app  # noqa: E402
from gateway.config import Config  # noqa: E402

ISSUER = "https://clerk.bench.test"
ORIGIN = "https://app.bench.test"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    token = jwt.encode(
        {"sub": "user_1", "sid": "sess_1", "iss": ISSUER, "iat": now, "exp": now + 3600, "v": 2},
        key,
        algorithm="RS256",
    )
    headers = {"Authorization": f"Bearer {token}", "Origin": ORIGIN}
    with tempfile.TemporaryDirectory() as instance:
        env = {
            "GATEWAY_INSTANCE_PATH": instance,
            "CLERK_JWT_KEY": pem.decode(),
            "CLERK_ISSUER": ISSUER,
        }
        clients = {
            "without_cors": create_app(Config.from_env(env)).test_client(),
            "with_cors": create_app(Config.from_env(env | {"CORS_ORIGINS": ORIGIN})).test_client(),
        }
        # The access log would time the terminal, not the request.
        logging.getLogger("gateway.access").setLevel(logging.WARNING)
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():  # warm: the verified-token cache, imports
            for _ in range(200):
                assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
        for _ in range(args.rounds):
            for name, client in clients.items():
                began = time.perf_counter()
                for _ in range(args.requests):
                    client.get("/api/v1/auth/me", headers=headers)
                samples[name].append((time.perf_counter() - began) / args.requests * 1e6)
        with_cors = clients["with_cors"].get("/api/v1/auth/me", headers=headers)
        assert with_cors.headers["Access-Control-Allow-Origin"] == ORIGIN
    # Best round of each: on a shared machine, the least disturbed one is the closest to the cost.
    base, cors = (min(samples[n]) for n in ("without_cors", "with_cors"))
    for name, values in samples.items():
        print(
            f"{name:13} best {min(values):6.1f} us/request"
            f"  median {statistics.median(values):6.1f} us  ({len(values)} rounds)"
        )
    print(f"CORS adds {cors - base:.1f} us/request; with/without (best rounds) = {cors / base:.3f}")


if __name__ == "__main__":
    main()
