"""``python -m localplatform demo [options]`` (``make demo ARGS="..."``),
``python -m localplatform serve`` and ``python -m localplatform glue-job``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastbreak_producer.cli import positive
from localplatform.assembly import QUIET_JSII
from localplatform.offline_export import DEFAULT_DESTINATION

DEFAULT_ENV_FILE = Path(".fastbreak") / "local.env"


def file_in_existing_folder(text: str) -> Path:
    """Checked before the run, not after it: a summary that cannot be written would be lost."""
    path = Path(text)
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {str(folder)!r} is not writable")
    return path


def parser(prog: str = "python -m localplatform") -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog=prog,
        description="Fastbreak's embedded local platform: the synthesized templates deployed "
        "into moto on 127.0.0.1, the real handlers in-process. No AWS account, no Docker.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run live games through the whole pipeline and print a summary",
        description="Run a live-games workload through producer, stream, processor, online "
        "store, feature API, Firehose and alarms; ends by itself (about a minute by default).",
    )
    demo.add_argument("--duration", type=positive(float), default=60.0,
                      help="seconds of traffic (default 60)")
    demo.add_argument("--rate", type=positive(float), default=20.0,
                      help="fan events per second between scoring plays (default 20: within what "
                      "moto's DynamoDB sustains, see docs/local-platform.md)")
    demo.add_argument("--games", type=positive(int), default=4, help="concurrent games (default 4)")
    demo.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    demo.add_argument("--aggregate", action="store_true",
                      help="producers KPL-aggregate events of one partition key")
    demo.add_argument("--serve", action="store_true",
                      help="keep the platform and its feature API up after the run, until Ctrl-C")
    demo.add_argument("--fault-drill", action="store_true",
                      help="break the processor until its alarms page, then recover "
                      "(runs until the alarms are back to OK, about two minutes)")
    demo.add_argument("--summary-json", type=file_in_existing_folder, default=None,
                      help="also write the summary to this JSON file (docs/local-platform.md, "
                      "'The summary')")
    serve = commands.add_parser(
        "serve", help="start the platform with no traffic and keep it up until Ctrl-C",
        description="Start the platform and keep it up until Ctrl-C: send events with the "
        "producer, read features with the API or the FeatureClient.",
    )
    for command in (demo, serve):
        command.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE,
                             help="write the endpoint and resource names here as shell exports "
                             f"while the platform runs (default {DEFAULT_ENV_FILE})")
        command.add_argument("--workdir", type=Path, default=None,
                             help="keep the cloud assembly and function logs here "
                             "(default: a temporary folder)")
    glue_job = commands.add_parser(
        "glue-job", help="run a Glue job of a running platform, as Glue would",
        description="Run a Glue job of the platform that serves $AWS_ENDPOINT_URL (source "
        f"{DEFAULT_ENV_FILE} while `serve` or `demo --serve` runs): the synthesized script "
        "and package with the job's default arguments and these, under spark-submit.",
    )
    glue_job.add_argument("--arguments", type=job_arguments, required=True, metavar="JSON",
                          help="the run's arguments, as for aws glue start-job-run, e.g. "
                          "'{\"--spine\": \"labels/june.parquet\", \"--features\": "
                          "\"user_engagement\", \"--out\": \"june.parquet\"}'")
    glue_job.add_argument("--job", default="TrainingSetJob",
                          help="the job's construct id in the templates (default "
                          "TrainingSetJob)")
    glue_job.add_argument("--workdir", type=Path, default=None,
                          help="keep the cloud assembly here (default: a temporary folder)")
    demo.add_argument("--offline-output", type=Path, default=DEFAULT_DESTINATION,
                      help="copy the offline store's raw/, features/ and quarantine/ files here "
                      "after the run (default: demo-output/offline in the repository, "
                      "git-ignored)")
    return root


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = (parser() if prog is None else parser(prog)).parse_args(argv)
    for name, value in QUIET_JSII.items():
        os.environ.setdefault(name, value)
    # Imported after parsing so that --help and argument errors answer at once.
    from rich.console import Console

    from localplatform.demo import DemoOptions, run_demo, serve

    console = Console(file=sys.__stdout__)
    if args.command == "glue-job":
        return _glue_job(args, console)
    try:
        if args.command == "serve":
            serve(console, args.env_file, args.workdir)
            return 0
        summary = run_demo(
            DemoOptions(duration_s=args.duration, rate=args.rate, games=args.games,
                        seed=args.seed, aggregate=args.aggregate, serve=args.serve,
                        fault_drill=args.fault_drill, summary_json=args.summary_json,
                        workdir=args.workdir, env_file=args.env_file,
                        offline_output=args.offline_output),
            console,
        )
    except KeyboardInterrupt:
        console.print("interrupted; the platform is stopped")
        return 130
    lost = summary["producer_failed"] or not summary["caught_up"]
    return 1 if lost else 0


def job_arguments(text: str) -> dict[str, str]:
    """A JSON object of ``--name``: text, as ``aws glue start-job-run --arguments`` takes."""
    try:
        parsed = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(parsed, dict) or not all(
            isinstance(name, str) and name.startswith("--") and isinstance(value, str)
            for name, value in parsed.items()):
        raise argparse.ArgumentTypeError('expected {"--name": "value", ...}')
    return parsed


def _glue_job(args: argparse.Namespace, console: Any) -> int:
    from localplatform.glue_jobs import start_job_run

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        print(f"error: no local platform: source {DEFAULT_ENV_FILE} while "
              "`python -m localplatform serve` (or `make demo ARGS=--serve`) runs",
              file=sys.stderr)
        return 2
    with console.status("synthesizing the app and running the job under spark-submit"):
        try:
            run = start_job_run(endpoint, args.arguments, args.job, args.workdir)
        except Exception as error:  # no platform there, or not this app's: one line
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            print(f"error: cannot run the job on the platform at {endpoint}: {reason}",
                  file=sys.stderr)
            return 2
    sys.stdout.write(run.stdout)
    if not run.succeeded and not run.stdout.startswith("error: "):
        sys.stderr.write(run.stderr[-4000:])  # Spark's own log: what failed
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
