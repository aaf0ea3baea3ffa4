"""The scenarios of `make bench`. Add one: a function (stack, options) -> Scenario, in SCENARIOS.

Run names are global (a comparison may name a run of another scenario, as auth-hot does with
healthz; it is left out when that scenario is not selected).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from bench.harness import Comparison, Options, Run, Scenario
from bench.stack import Stack

PAYLOAD = {"text": "The quick brown fox jumps over the lazy dog.", "lang": "en"}


def healthz(stack: Stack, options: Options) -> Scenario:
    ours = Run("healthz", f"{stack.gateway}/healthz", "gateway /healthz")
    ceiling = Run("flask-ceiling", f"{stack.flask_ceiling}/healthz", "bare Flask")
    return Scenario(
        "healthz",
        [ours, ceiling],
        [Comparison("healthz", ours.name, ceiling.name, "bare Flask, same gunicorn", "rps", 0.9)],
    )


def auth_hot(stack: Stack, options: Options) -> Scenario:
    """One token reused by every request, as a browser reuses its session token."""
    bearer = {"Authorization": f"Bearer {stack.hot_token}"}
    ours = Run("auth-hot", f"{stack.gateway}/api/v1/guards", "gateway", headers=bearer)
    peer = Run("peer-hot", f"{stack.peer}/api/v1/guards", "fastapi-clerk-auth", headers=bearer)
    return Scenario(
        "auth-hot",
        [ours, peer],
        [
            Comparison("auth-hot", ours.name, peer.name, "fastapi-clerk-auth hot", "rps", 1.5),
            Comparison("auth-hot / healthz", ours.name, "healthz", "our /healthz", "rps", 0.9),
        ],
    )


def auth_cold(stack: Stack, options: Options) -> Scenario:
    """Every request a valid token never seen before (the Lua script takes each one once)."""
    ours = Run("auth-cold", f"{stack.gateway}/api/v1/guards", "gateway", tokens=1)
    peer = Run("peer-cold", f"{stack.peer}/api/v1/guards", "fastapi-clerk-auth", tokens=1)
    return Scenario(
        "auth-cold",
        [ours, peer],
        [Comparison("auth-cold", ours.name, peer.name, "fastapi-clerk-auth cold", "rps", 1.0)],
    )


def _guard_runs(stack: Stack, options: Options, suffix: str, **wrk: int) -> tuple[Run, Run]:
    """POST /api/v1/guards/process to the echo guard, and the same call made to it directly."""
    via_body = options.workdir / "guard-body.json"
    via_body.write_text(json.dumps({"service": "echo", "payload": PAYLOAD}))
    direct_body = options.workdir / "guard-direct-body.json"
    direct_body.write_text(json.dumps(PAYLOAD))
    token = stack.hot_token
    via = Run(
        f"guard{suffix}",
        f"{stack.gateway}/api/v1/guards/process",
        "gateway",
        method="POST",
        body=via_body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        **wrk,  # type: ignore[arg-type]
    )
    # What the gateway itself sends upstream, so both sides carry the same bytes.
    direct = Run(
        f"upstream{suffix}",
        f"{stack.upstream}/check",
        "upstream direct",
        method="POST",
        body=direct_body,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-Clerk-User-Id": "user_bench00000",
        },
        **wrk,  # type: ignore[arg-type]
    )
    return via, direct


def guard(stack: Stack, options: Options) -> Scenario:
    via, direct = _guard_runs(stack, options, "")
    return Scenario(
        "guard",
        [via, direct],
        [Comparison("guard", via.name, direct.name, "upstream direct", "rps", 0.7)],
    )


def guard_1conn(stack: Stack, options: Options) -> Scenario:
    """One connection, one request at a time: the latency a single user feels."""
    via, direct = _guard_runs(stack, options, "-1conn", connections=1, threads=1)
    return Scenario(
        "guard-1conn",
        [via, direct],
        [
            Comparison(
                "guard added p50, 1 connection",
                via.name,
                direct.name,
                "upstream direct",
                "p50_added",
                1.0,
            )
        ],
    )


SCENARIOS: dict[str, Callable[[Stack, Options], Scenario]] = {
    "healthz": healthz,
    "auth-hot": auth_hot,
    "auth-cold": auth_cold,
    "guard": guard,
    "guard-1conn": guard_1conn,
}
