"""The runner of `make bench`: wrk runs in interleaved rounds, medians, per-round ratios, a table.

A scenario (bench/scenarios.py) is a few `Run`s (one wrk invocation each: a URL, connections,
optional method/body/headers, optionally a file of tokens sent once each) and the `Comparison`s
between them (our run vs a peer, a ceiling or a direct upstream, with the issue's target). Every
round runs every selected scenario's runs back to back, the order within a scenario reversed on
alternate rounds, so a noisy neighbour or a slow process weighs on both sides of a ratio alike;
keep-alive connections stick to the gunicorn process that accepted them, so fresh connections per
run and several rounds also average out an uneven spread over the workers.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "scenario.lua"
RESULT_PREFIX = "bench-result "


@dataclass
class Run:
    """One wrk invocation; `tokens` > 0: that many fresh tokens per run, each sent once."""

    name: str
    url: str
    label: str
    connections: int | None = None  # None: the harness's --connections
    threads: int | None = None  # None: the harness's --threads
    method: str = "GET"
    body: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    tokens: int = 0
    seconds: float | None = None  # None: the harness's --seconds


@dataclass
class Measurement:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # connect/read/write errors, timeouts and non-2xx/3xx answers
    non_2xx: int
    token_wraps: int  # > 0: the run ran out of fresh tokens and reused some (invalid for cold)
    token_positions: list[int] = field(default_factory=list)  # per wrk thread: next unused line

    @property
    def valid(self) -> bool:
        return self.errors == 0 and self.token_wraps == 0 and self.requests > 0


@dataclass
class Comparison:
    """ours vs theirs, by throughput ratio ("rps") or added median latency ("p50_added")."""

    label: str
    ours: str
    theirs: str
    theirs_label: str
    metric: str  # "rps" or "p50_added"
    target: float
    scenario: str = ""

    def value(self, ours: Measurement, theirs: Measurement) -> float:
        if self.metric == "rps":
            return ours.rps / theirs.rps if theirs.rps else 0.0
        return ours.p50_ms - theirs.p50_ms

    def met(self, value: float) -> bool:
        return value >= self.target if self.metric == "rps" else value <= self.target

    def target_text(self) -> str:
        return f">= {self.target:g}x" if self.metric == "rps" else f"<= +{self.target:g} ms"

    def format(self, value: float) -> str:
        return f"{value:.2f}x" if self.metric == "rps" else f"{value:+.2f} ms"


@dataclass
class Scenario:
    name: str
    runs: list[Run]
    comparisons: list[Comparison]


@dataclass
class Options:
    seconds: float = 5.0
    rounds: int = 3
    warmup: float = 1.0
    connections: int = 32
    threads: int = 2
    workdir: Path = BENCH / "results"
    # Tokens per second of a cold run before its rate is known (the warm-up, or with no warm-up).
    cold_rate_cap: int = 6000


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is missing: install it (apt-get install wrk), or run `make bench`")
    return path


def run_wrk(
    run: Run, options: Options, seconds: float, token_file: Path | None = None
) -> Measurement:
    threads = run.threads or options.threads
    connections = max(run.connections or options.connections, threads)
    argv = [
        wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "5s", "-s", str(LUA), run.url, "--", f"threads={threads}",
        f"method={run.method}",
    ]  # fmt: skip
    if run.body is not None:
        argv.append(f"body={run.body}")
    argv += [f"header={name}:{value}" for name, value in run.headers.items()]
    if token_file is not None:
        argv.append(f"tokens={token_file}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed for {run.name}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    raw = json.loads(line[len(RESULT_PREFIX) :])
    elapsed = raw["duration_us"] / 1e6
    transport = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return Measurement(
        requests=raw["requests"],
        seconds=elapsed,
        rps=raw["requests"] / elapsed if elapsed else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=transport + raw["status_errors"],
        non_2xx=raw["status_errors"],
        token_wraps=raw["token_wraps"],
        token_positions=raw["token_positions"],
    )


TokenMaker = Callable[[int], list[str]]


class TokenSupply:
    """Fresh tokens for the cold runs, none ever sent twice.

    Signing costs 0.3 to 1 ms of CPU a token here, more than verifying one, so tokens are signed
    between runs (never while wrk runs) and only as many as are used: each run gets a file sized
    from the fastest rate that run reached so far (generously: unused lines are reclaimed, as the
    script reports how far each wrk thread got), and a run that still runs out reports
    `token_wraps`, which makes it invalid.
    """

    SAFETY = 3.0

    def __init__(self, make_tokens: TokenMaker | None, options: Options) -> None:
        self._make = make_tokens
        self._options = options
        self._best_rps: dict[str, float] = {}
        self._fresh: list[str] = []
        self._handed: dict[str, list[str]] = {}
        self.signed = 0
        self.signing_seconds = 0.0

    def files(self, runs: list[Run], round_number: int, seconds: float) -> dict[str, Path]:
        wanted = []
        for run in runs:
            if run.tokens:
                best = self._best_rps.get(run.name)
                rate = best * self.SAFETY if best else self._options.cold_rate_cap
                wanted.append((run.name, max(int(rate * seconds), run.tokens, 100)))
        if not wanted:
            return {}
        missing = sum(count for _, count in wanted) - len(self._fresh)
        if missing > 0:
            if self._make is None:
                raise ValueError("a run needs tokens but no token maker was given")
            started = time.perf_counter()
            self._fresh += self._make(missing)
            self.signing_seconds += time.perf_counter() - started
            self.signed += missing
        folder = self._options.workdir / "tokens"
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, count in wanted:
            handed, self._fresh = self._fresh[:count], self._fresh[count:]
            self._handed[name] = handed
            path = folder / f"{name}-{round_number}.txt"
            path.write_text("\n".join(handed) + "\n")
            files[name] = path
        return files

    def record(self, run: Run, measurement: Measurement, threads: int) -> None:
        """Note the run's rate; put back the lines no wrk thread reached (still never sent)."""
        self._best_rps[run.name] = max(self._best_rps.get(run.name, 0.0), measurement.rps)
        handed = self._handed.pop(run.name, None)
        if handed is None or measurement.token_wraps or not measurement.token_positions:
            return
        used_per_thread = [position - 1 for position in measurement.token_positions]
        unused = [
            token
            for line, token in enumerate(handed)
            if line // threads >= used_per_thread[line % threads]
        ]
        self._fresh = unused + self._fresh


def measure(
    scenarios: list[Scenario], options: Options, make_tokens: TokenMaker | None = None
) -> dict[str, list[Measurement]]:
    """Run every scenario's runs in `options.rounds` interleaved rounds; measurements by run."""
    supply = TokenSupply(make_tokens, options)
    if options.warmup > 0:
        for scenario in scenarios:
            # Warm-up: imports, pools, JWKS, first-request paths; cold runs warm on tokens of
            # their own, and their rate sizes the next token files.
            files = supply.files(scenario.runs, -1, options.warmup)
            for run in scenario.runs:
                measurement = run_wrk(run, options, options.warmup, files.get(run.name))
                supply.record(run, measurement, run.threads or options.threads)
    results: dict[str, list[Measurement]] = {}
    for round_number in range(options.rounds):
        for scenario in scenarios:
            ordered = scenario.runs if round_number % 2 == 0 else scenario.runs[::-1]
            longest = max(run.seconds or options.seconds for run in ordered)
            files = supply.files(ordered, round_number, longest)
            for run in ordered:
                seconds = run.seconds or options.seconds
                measurement = run_wrk(run, options, seconds, files.get(run.name))
                supply.record(run, measurement, run.threads or options.threads)
                results.setdefault(run.name, []).append(measurement)
                _progress(round_number, run, measurement)
    if supply.signed:
        print(
            f"  signed {supply.signed:,} fresh tokens in {supply.signing_seconds:.1f} s"
            " (outside the measured runs)",
            file=sys.stderr,
        )
    return results


def _progress(round_number: int, run: Run, m: Measurement) -> None:
    wraps = f"  TOKENS REUSED {m.token_wraps}" if m.token_wraps else ""
    print(
        f"  round {round_number + 1} {run.name:<16} {m.rps:>9,.0f} req/s  p50 {m.p50_ms:6.2f} ms"
        f"  p99 {m.p99_ms:6.2f} ms  errors {m.errors}{wraps}",
        file=sys.stderr,
        flush=True,
    )


@dataclass
class Row:
    comparison: Comparison
    ours: float
    theirs: float
    value: float
    per_round: list[float]
    errors: int
    unit: str

    @property
    def met(self) -> bool:
        return self.comparison.met(self.value) and self.errors == 0


def rows(scenarios: list[Scenario], results: dict[str, list[Measurement]]) -> list[Row]:
    out = []
    for scenario in scenarios:
        for comparison in scenario.comparisons:
            ours, theirs = results.get(comparison.ours), results.get(comparison.theirs)
            if not ours or not theirs:
                continue  # compares with a scenario that was not selected
            per_round = [comparison.value(a, b) for a, b in zip(ours, theirs, strict=True)]
            latency = comparison.metric == "p50_added"
            pick = (lambda m: m.p50_ms) if latency else (lambda m: m.rps)
            out.append(
                Row(
                    comparison,
                    statistics.median(pick(m) for m in ours),
                    statistics.median(pick(m) for m in theirs),
                    statistics.median(per_round),
                    per_round,
                    sum(m.errors + m.token_wraps for m in ours + theirs),
                    "ms p50" if latency else "req/s",
                )
            )
    return out


def table(table_rows: list[Row]) -> str:
    lines = [
        "| scenario | ours | compared with | theirs | ratio (median) | per round | target "
        "| errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table_rows:
        c = row.comparison
        fmt = (lambda v: f"{v:.2f} ms") if row.unit == "ms p50" else (lambda v: f"{v:,.0f} req/s")
        lines.append(
            f"| {c.label} | {fmt(row.ours)} | {c.theirs_label} | {fmt(row.theirs)} | "
            f"**{c.format(row.value)}** | {' '.join(c.format(v) for v in row.per_round)} | "
            f"{c.target_text()} {'met' if row.met else 'NOT met'} | {row.errors} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def report(
    scenarios: list[Scenario],
    results: dict[str, list[Measurement]],
    options: Options,
    command: str,
) -> str:
    table_rows = rows(scenarios, results)
    info = machine()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"{date}; {info['cpus']} CPUs ({info['cpu_model']}), load average {info['load_average']};"
        f" `{command}`; wrk -t{options.threads} -c{options.connections} (guard-1conn: -t1 -c1),"
        f" {options.seconds:g} s per run, {options.rounds} rounds, medians"
    )
    options.workdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (options.workdir / f"bench-{stamp}.json").write_text(
        json.dumps(
            {
                "date": date,
                "command": command,
                "machine": info,
                "runs": {name: [asdict(m) for m in ms] for name, ms in results.items()},
                "rows": [
                    {
                        "label": r.comparison.label,
                        "value": r.value,
                        "per_round": r.per_round,
                        "ours": r.ours,
                        "theirs": r.theirs,
                        "errors": r.errors,
                        "met": r.met,
                    }
                    for r in table_rows
                ],
            },
            indent=2,
        )
    )
    return f"{header}\n\n{table(table_rows)}"
