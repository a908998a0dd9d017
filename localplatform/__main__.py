"""``python -m localplatform demo [options]`` (``make demo ARGS="..."``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from localplatform.offline_export import DEFAULT_DESTINATION


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m localplatform",
        description="Fastbreak's embedded local platform: the synthesized templates deployed "
        "into moto on 127.0.0.1, the real handlers in-process. No AWS account, no Docker.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run live games through the whole pipeline and print a summary",
        description="Run a live-games workload through producer, stream, processor, online "
        "store, feature API, Firehose and alarms; ends by itself (about a minute by default).",
    )
    demo.add_argument("--duration", type=float, default=60.0,
                      help="seconds of traffic (default 60)")
    demo.add_argument("--rate", type=float, default=20.0,
                      help="fan events per second between scoring plays (default 20: within what "
                      "moto's DynamoDB sustains, see docs/local-platform.md)")
    demo.add_argument("--games", type=int, default=4, help="concurrent games (default 4)")
    demo.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    demo.add_argument("--aggregate", action="store_true",
                      help="producers KPL-aggregate events of one partition key")
    demo.add_argument("--serve", action="store_true",
                      help="keep the feature API up after the run, until Ctrl-C")
    demo.add_argument("--fault-drill", action="store_true",
                      help="break the processor until its alarms page, then recover "
                      "(runs until the alarms are back to OK, about two minutes)")
    demo.add_argument("--summary-json", type=Path, default=None,
                      help="also write the summary to this JSON file")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="keep the cloud assembly and function logs here "
                      "(default: a temporary folder)")
    demo.add_argument("--offline-output", type=Path, default=DEFAULT_DESTINATION,
                      help="copy the offline store's raw/, features/ and quarantine/ files here "
                      "after the run (default: demo-output/offline in the repository, "
                      "git-ignored)")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    # Imported after parsing so that --help answers at once.
    from rich.console import Console

    from localplatform.demo import DemoOptions, run_demo

    console = Console(file=sys.__stdout__)
    summary = run_demo(
        DemoOptions(duration_s=args.duration, rate=args.rate, games=args.games, seed=args.seed,
                    aggregate=args.aggregate, serve=args.serve, fault_drill=args.fault_drill,
                    summary_json=args.summary_json, workdir=args.workdir,
                    offline_output=args.offline_output),
        console,
    )
    lost = summary["producer_failed"] or not summary["caught_up"]
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
