"""`make bench`: python -m bench [--seconds 5] [--rounds 3] [--scenarios healthz,auth-hot,...]"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path

from bench.harness import BENCH, Options, measure, report, wrk_binary
from bench.scenarios import SCENARIOS
from bench.stack import running_stack
from bench.webhook_pipeline import PIPELINE_SCENARIOS, PipelineOptions, run_scenarios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=Options.seconds, help="per run")
    parser.add_argument("--rounds", type=int, default=Options.rounds)
    parser.add_argument("--warmup", type=float, default=Options.warmup, help="seconds per run")
    parser.add_argument("--connections", type=int, default=Options.connections)
    parser.add_argument("--threads", type=int, default=Options.threads, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="processes of every server")
    parser.add_argument(
        "--scenarios", default=",".join([*SCENARIOS, *PIPELINE_SCENARIOS]), help="comma-separated"
    )
    parser.add_argument("--workdir", type=Path, default=BENCH / "results")
    parser.add_argument("--cold-rate-cap", type=int, default=Options.cold_rate_cap)
    parser.add_argument("--ack-seconds", type=float, default=PipelineOptions.ack_seconds)
    parser.add_argument("--ack-rate", type=float, default=PipelineOptions.ack_rate)
    parser.add_argument("--pipeline-users", type=int, default=PipelineOptions.users)
    parser.add_argument("--pipeline-per-user", type=int, default=PipelineOptions.per_user)
    args = parser.parse_args(argv)
    requested = [name for name in args.scenarios.split(",") if name]
    known = [*SCENARIOS, *PIPELINE_SCENARIOS]
    unknown = [name for name in requested if name not in known]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    names = [name for name in requested if name in SCENARIOS]
    pipeline = [name for name in requested if name in PIPELINE_SCENARIOS]
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
    failed: list[str] = []
    if names:
        with (
            running_stack(args.workdir, args.workers) as stack,
            contextlib.redirect_stdout(sys.stderr),
        ):
            scenarios = [SCENARIOS[name](stack, options) for name in names]
            results = measure(scenarios, options, stack.key.tokens)
            text = report(scenarios, results, options, command.strip())
        print(text)
        failed += [name for name, ms in results.items() if any(not m.valid for m in ms)]
    if pipeline:
        # After the side-by-side servers are gone: these start their own web, worker, database.
        pipeline_options = PipelineOptions(
            args.ack_seconds, args.ack_rate, args.pipeline_users, args.pipeline_per_user
        )
        with contextlib.redirect_stdout(sys.stderr):
            text, raw, _ = run_scenarios(pipeline, pipeline_options)
        args.workdir.mkdir(parents=True, exist_ok=True)
        (args.workdir / "webhook-scenarios.json").write_text(json.dumps(raw, indent=2))
        print(("\n" if names else "") + text)
        failed += [name for name in pipeline if not _clean(name, raw[name])]
    if failed:
        print(f"runs with errors or reused tokens: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _clean(name: str, raw: dict) -> bool:
    """No error and exactly once; a figure below its target is reported, not a failure."""
    if name == "webhook-ack":
        runs = (raw["saturation_no_worker"], raw["fixed_rate_worker_on"])
        return all(run["errors"] == 0 for run in runs)
    return raw["ack_errors"] == 0 and raw["applied_twice"] == 0 and raw["users_match_model"]


if __name__ == "__main__":
    sys.exit(main())
