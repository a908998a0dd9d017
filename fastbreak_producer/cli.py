"""``python -m fastbreak_producer replay FILE | simulate``: the producer from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fastbreak_producer.client import Producer, ProducerConfig
from fastbreak_producer.driver import drive
from fastbreak_producer.schema import SchemaError
from fastbreak_producer.simulator import LiveGameSimulator, SimulationConfig


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m fastbreak_producer",
        description="Send Fastbreak events to the events stream: validated against the "
        "feature catalog, batched (500 records / 5 MiB per PutRecords), failed records retried "
        "with backoff and jitter, partitioned by entity.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="send the events of a JSON-lines file")
    replay.add_argument("file", type=Path, help="one event (JSON object) per line; - for stdin")
    replay.add_argument("--strict", action="store_true",
                        help="stop at the first invalid event instead of skipping it")
    simulate = commands.add_parser("simulate", help="send a live-games workload")
    simulate.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    simulate.add_argument("--rate", type=float, default=500.0,
                          help="fan events per second between scoring plays (default 500)")
    simulate.add_argument("--games", type=int, default=4, help="concurrent games (default 4)")
    simulate.add_argument("--seed", type=int, default=7)
    for command in (replay, simulate):
        command.add_argument("--stream-name", required=True)
        command.add_argument("--endpoint-url", default=None,
                             help="e.g. the local platform's; default: AWS")
        command.add_argument("--region", default=None)
        command.add_argument("--aggregate", action="store_true",
                             help="KPL-aggregate events of one partition key")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import boto3

    kinesis = boto3.client("kinesis", endpoint_url=args.endpoint_url, region_name=args.region)
    producer = Producer(kinesis, args.stream_name, ProducerConfig(aggregate=args.aggregate))
    console = Console(stderr=True)
    code = _replay(args, producer, console) if args.command == "replay" else _simulate(
        args, producer, console)
    report = producer.report
    console.print(
        f"accepted {report.events_accepted} events in {report.records_sent} records, "
        f"{report.put_calls} PutRecords calls, {report.retried_records} records retried, "
        f"{len(report.failed)} failed"
    )
    return code if not report.failed else 1


def _replay(args: argparse.Namespace, producer: Producer, console: Console) -> int:
    stream = sys.stdin if str(args.file) == "-" else args.file.open(encoding="utf-8")
    invalid = 0
    with stream, _progress(console) as progress:
        task = progress.add_task("replaying", total=None)
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                event: Any = json.loads(line)
                producer.send(event)
            except (ValueError, SchemaError) as error:
                invalid += 1
                console.print(f"[yellow]line {number}: {error}[/]")
                if args.strict:
                    return 2
            progress.advance(task)
        producer.flush()
    if invalid:
        console.print(f"skipped {invalid} invalid events")
    return 0


def _simulate(args: argparse.Namespace, producer: Producer, console: Console) -> int:
    simulator = LiveGameSimulator(
        SimulationConfig(rate=args.rate, games=args.games, seed=args.seed)
    )
    with _progress(console) as progress:
        task = progress.add_task("simulating", total=int(args.duration))
        drive(simulator, producer, args.duration,
              on_tick=lambda elapsed: progress.update(task, completed=int(elapsed)))
    console.print(f"emitted {dict(simulator.stats.emitted)}, "
                  f"{simulator.stats.scoring_plays} scoring plays")
    return 0


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)
