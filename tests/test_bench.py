"""Smoke test of `make bench`: every scenario runs for about a second, so the scripts cannot rot.

It measures nothing (no timed assertion): it checks that each server starts, each wrk run is
answered without a single error status, and the table has a row for every comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenarios import SCENARIOS
from tests.support.processes import ROOT

# Four servers, a migration, a few thousand signed tokens and the pipeline scenarios (their own
# web, worker and database): more than the default 120 s may
# pass on a busy two-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROWS = ("healthz", "auth-hot", "auth-hot / healthz", "auth-cold", "guard",
        "guard added p50, 1 connection")  # fmt: skip
PIPELINE_ROWS = 5  # webhook-ack: 3, pipeline: 2


def test_every_bench_scenario_runs_and_prints_its_row(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "--seconds", "1", "--rounds", "1", "--warmup", "0",
            "--connections", "4", "--workdir", str(tmp_path), "--ack-seconds", "1",
            "--ack-rate", "20", "--pipeline-users", "10", "--pipeline-per-user", "3"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=540, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    labels = [
        line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")
    ]
    header = labels.index("webhook pipeline")  # the second table
    assert labels[1:header] == list(ROWS)  # [0] is the header
    assert len(labels[header + 1 :]) == PIPELINE_ROWS
    pipeline = json.loads((tmp_path / "webhook-scenarios.json").read_text())
    assert pipeline["pipeline"]["users_match_model"] is True
    assert pipeline["pipeline"]["applied_twice"] == 0
    (results,) = tmp_path.glob("bench-*.json")
    runs = json.loads(results.read_text())["runs"]
    assert len(runs) == 2 * len(SCENARIOS)
    for name, (measurement,) in runs.items():
        assert measurement["requests"] > 0, name
        assert measurement["non_2xx"] == 0, name
        assert measurement["token_wraps"] == 0, name
