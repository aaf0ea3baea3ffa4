"""Stripe for tests: a localstripe process on loopback, and helpers to read what it holds."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.polling import wait_until
from tests.support.processes import Proc, free_port, wait_for_port

TEST_KEY = "sk_test_localstripe"


@contextlib.contextmanager
def run_localstripe(log_dir: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "tests.support.localstripe_server", str(port)]
    proc = Proc(argv, {}, log_dir / "localstripe.log")
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One localstripe process per test session, on 127.0.0.1."""
    with run_localstripe(tmp_path_factory.mktemp("localstripe")) as url:
        yield url


@pytest.fixture
def localstripe(localstripe_server: str) -> str:
    """localstripe, emptied for this test."""
    flush(localstripe_server)
    return localstripe_server


def flush(base_url: str) -> None:
    requests.delete(f"{base_url}/_config/data", timeout=5).raise_for_status()


def list_customers(base_url: str) -> list[dict[str, Any]]:
    """Every customer, straight from the server (not through the code under test)."""
    customers: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        response = requests.get(
            f"{base_url}/v1/customers",
            params=params,
            headers={"Authorization": f"Bearer {TEST_KEY}"},
            timeout=5,
        )
        response.raise_for_status()
        page = response.json()
        customers += page["data"]
        if not page["has_more"]:
            return customers
        params["starting_after"] = page["data"][-1]["id"]


def create_customer(base_url: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            data |= {f"{key}[{k}]": v for k, v in value.items()}
        else:
            data[key] = value
    response = requests.post(
        f"{base_url}/v1/customers",
        data=data,
        headers={"Authorization": f"Bearer {TEST_KEY}"},
        timeout=5,
    )
    response.raise_for_status()
    return dict(response.json())


def add_user(session: Any, clerk_user_id: str, email: str | None = None, **fields: Any) -> int:
    """A committed local user, made straight with the model (the login and webhook paths are
    other features'); returns its id."""
    from gateway.models import User

    user = User(
        clerk_user_id=clerk_user_id,
        email=email if email is not None else f"{clerk_user_id}@example.com",
        is_active=True,
        **fields,
    )
    session.add(user)
    session.commit()
    return int(user.id)


def customer_json(customer_id: str, clerk_user_id: str | None, **fields: Any) -> dict[str, Any]:
    """A Stripe customer object as the API answers it, for the recording server."""
    return {
        "id": customer_id,
        "object": "customer",
        "created": 1700000000,
        "livemode": False,
        "metadata": {"clerk_user_id": clerk_user_id} if clerk_user_id else {},
        **fields,
    }


def stripe_error(status: int, error_type: str, code: str | None = None) -> tuple[str, int]:
    import json

    body = {"error": {"type": error_type, "code": code, "message": "refused (test)"}}
    return json.dumps(body), status


def log_lines(proc: Proc, needle: str) -> list[str]:
    return [line for line in proc.output().splitlines() if needle in line]


def wait_for_lines(proc: Proc, needle: str, count: int = 1, timeout: float = 30.0) -> list[str]:
    """Poll a worker's log until `needle` shows up `count` times (each task logs its outcome)."""
    wait_until(
        lambda: len(log_lines(proc, needle)) >= count,
        timeout,
        describe=lambda: f"{count} x {needle!r} not seen:\n{proc.output()[-3000:]}",
    )
    return log_lines(proc, needle)


def stripe_call(base_url: str, method: str, path: str, **form: Any) -> dict[str, Any]:
    """One request straight to localstripe (form keys as Stripe spells them: items[0][plan])."""
    response = requests.request(
        method,
        f"{base_url}{path}",
        data=form or None,
        headers={"Authorization": f"Bearer {TEST_KEY}"},
        timeout=5,
    )
    response.raise_for_status()
    return dict(response.json())


def register_webhook(base_url: str, name: str, url: str, secret: str, events: list[str]) -> None:
    """Make localstripe POST its events of these types to `url`, signed with `secret` as Stripe
    signs (Stripe-Signature: t=...,v1=...). Registered under `name`: again replaces it."""
    data = [("url", url), ("secret", secret)] + [("events[]", event) for event in events]
    response = requests.post(f"{base_url}/_config/webhooks/{name}", data=data, timeout=5)
    response.raise_for_status()


def create_free_plan(base_url: str, plan_id: str) -> None:
    """A zero-amount monthly plan: localstripe marks its first invoice paid, so a subscription to
    it starts `active` without a card."""
    stripe_call(
        base_url, "POST", "/v1/plans",
        id=plan_id, amount=0, currency="usd", interval="month", **{"product[name]": plan_id},
    )  # fmt: skip
