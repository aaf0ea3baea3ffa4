"""`make bench`: python -m bench [--seconds 5] [--rounds 3] [--scenarios healthz,auth-hot,...]"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path

from bench.harness import BENCH, Options, measure, report, wrk_binary
from bench.scenarios import SCENARIOS
from bench.stack import running_stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=Options.seconds, help="per run")
    parser.add_argument("--rounds", type=int, default=Options.rounds)
    parser.add_argument("--warmup", type=float, default=Options.warmup, help="seconds per run")
    parser.add_argument("--connections", type=int, default=Options.connections)
    parser.add_argument("--threads", type=int, default=Options.threads, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="processes of every server")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--workdir", type=Path, default=BENCH / "results")
    parser.add_argument("--cold-rate-cap", type=int, default=Options.cold_rate_cap)
    args = parser.parse_args(argv)
    names = [name for name in args.scenarios.split(",") if name]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    wrk_binary()
    options = Options(
        seconds=args.seconds,
        rounds=args.rounds,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        workdir=args.workdir,
        cold_rate_cap=args.cold_rate_cap,
    )
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    with running_stack(args.workdir, args.workers) as stack, contextlib.redirect_stdout(sys.stderr):
        scenarios = [SCENARIOS[name](stack, options) for name in names]
        results = measure(scenarios, options, stack.key.tokens)
        text = report(scenarios, results, options, command.strip())
    print(text)
    failed = [name for name, ms in results.items() if any(not m.valid for m in ms)]
    if failed:
        print(f"runs with errors or reused tokens: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
