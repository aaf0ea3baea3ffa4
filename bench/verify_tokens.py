"""Token verifications per second in one process: PyJWT alone, our cold path, our cache hit.

    .venv/bin/python bench/verify_tokens.py [--seconds 3]

No network: the key is a local RSA key (as with CLERK_JWT_KEY).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.jwks import StaticKey
from gateway.auth.tokens import (
    SessionVerifier,
    VerifierSettings,
    verify_session_token,
)

ISSUER = "https://clerk.bench.test"


def rate(label: str, call: Callable[[], object], seconds: float) -> float:
    call()  # warm up
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            call()
        done += 100
    per_second = done / (time.perf_counter() - started)
    print(f"{label:<44} {per_second:>12,.0f} /s  {1e6 / per_second:>8.1f} µs each")
    return per_second


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"sub": "user_bench", "sid": "sess_bench", "iss": ISSUER, "iat": now, "nbf": now,
              "exp": now + 3600, "azp": "https://app.example.com", "v": 2}  # fmt: skip
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "bench"})
    public = private.public_key()
    settings = VerifierSettings(issuer=ISSUER, authorized_parties=("https://app.example.com",))
    key_source = StaticKey(public)
    verifier = SessionVerifier(settings, key_source)

    print(f"token: {len(token)} characters, RS256 2048-bit; {args.seconds:.0f} s per line")
    pyjwt = rate(
        "PyJWT jwt.decode (reference)",
        lambda: jwt.decode(token, public, algorithms=["RS256"], issuer=ISSUER),
        args.seconds,
    )
    cold = rate(
        "verify_session_token (cold: no cache)",
        lambda: verify_session_token(token, settings, key_source),
        args.seconds,
    )
    hit = rate("SessionVerifier.verify (cache hit)", lambda: verifier.verify(token), args.seconds)
    print(f"cold / PyJWT: {cold / pyjwt:.2f}x   cache hit / cold: {hit / cold:.0f}x")


if __name__ == "__main__":
    main()
