"""`make run` in a real terminal: Ctrl-C stops web, worker and beat, and make ends without an
error of its own (no `Error 130`, no `Interrupt`): scripts/foreground.sh gives the terminal to
honcho, so only honcho gets the SIGINT."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import time
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port
from tests.test_local_run import local_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def child_groups_of(output: bytes) -> list[int]:
    """honcho starts each Procfile process in its own session and logs its pid."""
    return [int(pid) for pid in re.findall(rb"started \(pid=(\d+)\)", output)]


def read_until(fd: int, output: bytearray, done, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                return done(bytes(output))
            if not chunk:
                return done(bytes(output))
            output += chunk
        if done(bytes(output)):
            return True
    return False


def test_make_run_ctrl_c_in_a_terminal_ends_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = local_env(tmp_path, port)
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a shell's foreground job in its own terminal
        os.chdir(ROOT)
        os.execvpe("make", ["make", "--no-print-directory", "run", f"PORT={port}"], env)  # noqa: S606
    output = bytearray()
    status = None
    try:
        started = read_until(
            fd,
            output,
            lambda text: b"Listening at: http://127.0.0.1" in text and b" ready." in text,
            timeout=150,
        )
        assert started, output.decode(errors="replace")[-3000:]
        os.write(fd, b"\x03")  # Ctrl-C, as typed
        read_until(fd, output, lambda text: False, timeout=40)  # until the terminal closes
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:  # failed midway: nothing of the run may outlive the test
            for group in [pid, *child_groups_of(bytes(output))]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    assert "Error 130" not in text and "Interrupt" not in text
    assert all(f"{name}.1 stopped" in text for name in ("web", "worker", "beat")), text[-3000:]
