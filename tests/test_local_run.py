"""`make run` as a newcomer runs it: honcho starts the Procfile's web, worker and beat in
development mode on the embedded defaults (SQLite and the filesystem broker under the instance
folder, no PostgreSQL, Redis or Clerk), the dev CLI mints a token and sends a signed webhook, and
Ctrl-C stops every process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.polling import wait_until
from tests.support.processes import BIN, ROOT, free_port

pytestmark = pytest.mark.slow

ADMIN_KEY = "admin-key-local-run"
# What `make run` does not set: none of it may leak in from the environment running the tests.
UNSET = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "STRIPE_API_KEY", "STRIPE_API_BASE")


def local_env(tmp_path: Path, port: int) -> dict[str, str]:
    env: dict[str, str] = {
        name: value
        for name, value in os.environ.items()
        if name not in UNSET and not name.startswith("CLERK_")
    }
    env |= {
        "GATEWAY_ENV": "development",
        "PORT": str(port),
        # Every runtime file (SQLite, broker folders, beat's schedule) goes under this folder.
        "GATEWAY_INSTANCE_PATH": str(tmp_path / "instance"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ADMIN_API_KEYS": ADMIN_KEY,
        # Lean on a shared machine. Development binds loopback by itself (gunicorn.conf.py).
        "WEB_CONCURRENCY": "1",
        "WORKER_CONCURRENCY": "1",
    }
    for name in ("CELERY_BEAT_SCHEDULE", "GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def honcho(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = free_port()
    env = local_env(tmp_path, port)
    (tmp_path / "instance").mkdir()
    migrated = flask(env, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    log_path = tmp_path / "honcho.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    popen = subprocess.Popen(
        [str(BIN / "honcho"), "start", "-f", "Procfile", "web", "worker", "beat"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group, as a terminal's foreground job would be
    )
    run = {"popen": popen, "env": env, "port": port, "log": log_path, "git_before": git_status()}
    try:
        yield run
    finally:
        # Whatever the test did: nothing of this run may outlive it.
        for pgid in [popen.pid, *child_groups(log_path)]:
            if group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        popen.wait(10)
        log.close()


def git_status() -> str:
    """Every file git would show, untracked ones included (ignored ones, like instance/, not)."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def child_groups(log_path: Path) -> list[int]:
    """honcho starts each Procfile process in its own session; it logs their pids."""
    text = log_path.read_text(errors="replace")
    return [int(pid) for pid in re.findall(r"[\w.]+ started \(pid=(\d+)\)", text)]


def get(port: int, path: str, **kw: Any) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5, **kw)


def answers(port: int, path: str) -> bool:
    try:
        return get(port, path).status_code == 200
    except requests.ConnectionError:
        return False


def test_make_run_local_stack_login_webhook_and_ctrl_c_stops_all(honcho, tmp_path):
    port, env, log_path = honcho["port"], honcho["env"], honcho["log"]
    output = lambda: log_path.read_text(errors="replace")  # noqa: E731

    wait_until(lambda: answers(port, "/healthz"), timeout=30)
    ready = get(port, "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert (tmp_path / "instance" / "gateway.db").exists()  # SQLite, not a server
    assert f"Listening at: http://127.0.0.1:{port}" in output()

    minted = flask(env, "dev", "token", "--user", "user_e2e", "--email", "e2e@example.com")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    login = requests.post(
        f"http://127.0.0.1:{port}/api/v1/auth/login",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    assert login.json()["user"]["email"] == "e2e@example.com"

    # The worker must be consuming before the event can be applied: wait for its banner line.
    wait_until(lambda: re.search(r"worker\.1 .*celery@\S+ ready\.", output()), timeout=30)
    sent = flask(
        env,
        "dev",
        "webhook",
        "user.updated",
        "--user",
        "user_e2e",
        "--email",
        "E2E.New@Example.com",
        "--first-name",
        "Grace",
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "HTTP 200" in sent.stdout

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def applied() -> dict[str, Any] | None:
        user = get(port, "/webhooks/clerk/users/user_e2e", headers=admin).json()["user"]
        return user if user["email"] == "e2e.new@example.com" else None

    user = wait_until(applied, timeout=30, interval=0.25)
    assert user["first_name"] == "Grace" and user["is_active"] is True
    shown = flask(env, "users", "show", "user_e2e")
    assert shown.returncode == 0, shown.stderr
    assert '"email": "e2e.new@example.com"' in shown.stdout

    # Stripe's side (CONTRACT 4.11): a signed subscription event, applied on SQLite by the worker.
    stripe_sent = flask(
        env, "dev", "stripe-webhook", "customer.subscription.updated", "--user", "user_e2e"
    )
    assert stripe_sent.returncode == 0, stripe_sent.stdout + stripe_sent.stderr
    assert "HTTP 200" in stripe_sent.stdout

    def subscribed() -> dict[str, Any] | None:
        user = get(port, "/webhooks/clerk/users/user_e2e", headers=admin).json()["user"]
        return user if user["subscription_status"] == "active" else None

    assert wait_until(subscribed, timeout=30, interval=0.25)["stripe_customer_id"] == (
        "cus_dev_user_e2e"
    )

    # Ctrl-C: honcho stops web, worker and beat, and nothing of the run is left.
    groups = child_groups(log_path)
    names = set(re.findall(r"(\w+)\.\d+ started \(pid=", output()))
    assert names == {"web", "worker", "beat"} and len(groups) == 3, output()[-3000:]
    honcho["popen"].send_signal(signal.SIGINT)
    honcho["popen"].wait(20)
    wait_until(
        lambda: not any(group_alive(pgid) for pgid in [honcho["popen"].pid, *groups]),
        30,
        describe=lambda: f"left running after Ctrl-C:\n{output()[-3000:]}",
    )
    stopped = set(re.findall(r"(\w+)\.\d+ stopped \(rc=", output()))
    assert stopped == {"web", "worker", "beat"}, output()[-3000:]

    # The run left nothing in the repository: broker folders and beat's schedule are under the
    # instance folder (CONTRACT 5), and the web process listened on loopback only.
    assert git_status() == honcho["git_before"]
    instance = tmp_path / "instance"
    assert (instance / "broker" / "control").is_dir()
    assert list(instance.glob("celerybeat-schedule*"))
    assert "Listening at: http://0.0.0.0" not in output()
