"""Start real processes (Celery workers, gunicorn, redis-server) for tests, and stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from gateway.jobs import QUEUE
from tests.support.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    def listening() -> bool:
        try:
            socket.create_connection((host, port), 1.0).close()
        except OSError:
            return False
        return True

    wait_until(listening, timeout, describe=f"nothing listens on {host}:{port}")


class Proc:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, needle: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if needle in self.output():
                return True
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"process exited {self.popen.returncode}:\n{self.output()[-3000:]}"
                )
            return False

        wait_until(seen, timeout, describe=lambda: f"{needle!r} not seen:\n{self.output()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker's pool children included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        else:
            self.kill(signal.SIGKILL)  # orphans of a dead leader
        self._log.close()


def start_celery_worker(
    env: Mapping[str, str], log_path: Path, concurrency: int = 2, pool: str = "prefork"
) -> Proc:
    argv = [
        str(BIN / "celery"), "-A", "celery_app", "worker", "--loglevel=INFO", f"--queues={QUEUE}",
        f"--concurrency={concurrency}", f"--pool={pool}", "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ]  # fmt: skip
    proc = Proc(argv, env, log_path)
    proc.wait_for_output("ready.", timeout=60)
    return proc


def start_gunicorn(env: Mapping[str, str], log_path: Path, port: int, **overrides: str) -> Proc:
    """The Procfile's web process: gunicorn with gunicorn.conf.py, on loopback."""
    argv = [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    for key, value in overrides.items():
        argv += [f"--{key.replace('_', '-')}", value]
    argv.append("wsgi:app")
    proc = Proc(argv, env, log_path)
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(proc.output()[-3000:]) from None
    return proc


def start_redis_server(port: int, log_path: Path) -> Proc:
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
    proc = Proc(argv, {}, log_path)
    wait_for_port(port)
    return proc
