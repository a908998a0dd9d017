"""``python -m fastbreak_producer replay FILE | simulate``: the producer from a terminal.

Where to send comes from the AWS SDK's own settings (``AWS_REGION``, ``AWS_ENDPOINT_URL``,
credentials), which ``source .fastbreak/local.env`` sets for the local platform, or from
``--region`` and ``--endpoint-url``. A bad argument, a missing file, a stream that does not exist
or no region is one line on stderr and exit code 2; events Kinesis kept refusing are reported
with their error codes and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fastbreak_producer.client import Producer, ProducerConfig, SendReport
from fastbreak_producer.driver import drive
from fastbreak_producer.schema import SchemaError
from fastbreak_producer.simulator import LiveGameSimulator, SimulationConfig


class UsageError(Exception):
    """Something the user must change before the command can run: exit code 2."""


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a number of ``kind`` above 0, or a one-line usage error."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"  # argparse names the type in its errors
    return parse


def parser(prog: str = "python -m fastbreak_producer") -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog=prog,
        description="Send Fastbreak events to the events stream: validated against the "
        "feature catalog, batched (500 records / 5 MiB per PutRecords), failed records retried "
        "with backoff and jitter, partitioned by entity. Region, endpoint and credentials are "
        "the AWS SDK's (source .fastbreak/local.env for the local platform).",
    )
    commands = root.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="send the events of a JSON-lines file")
    replay.add_argument("file", type=Path, help="one event (JSON object) per line; - for stdin")
    replay.add_argument("--strict", action="store_true",
                        help="stop at the first invalid event instead of skipping it")
    simulate = commands.add_parser("simulate", help="send a live-games workload")
    simulate.add_argument("--duration", type=positive(float), default=60.0,
                          help="seconds (default 60)")
    simulate.add_argument("--rate", type=positive(float), default=500.0,
                          help="fan events per second between scoring plays (default 500)")
    simulate.add_argument("--games", type=positive(int), default=4,
                          help="concurrent games (default 4)")
    simulate.add_argument("--seed", type=int, default=7)
    for command in (replay, simulate):
        command.add_argument("--stream-name", required=True)
        command.add_argument("--endpoint-url", default=None,
                             help="default: AWS_ENDPOINT_URL, else AWS")
        command.add_argument("--region", default=None, help="default: AWS_REGION")
        command.add_argument("--aggregate", action="store_true",
                             help="KPL-aggregate events of one partition key")
    return root


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = (parser() if prog is None else parser(prog)).parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    kinesis: Any = None
    try:
        events = _open_events(args.file) if args.command == "replay" else None
        kinesis = _kinesis(args)
        producer = Producer(kinesis, args.stream_name, ProducerConfig(aggregate=args.aggregate))
        console = Console(stderr=True)
        if events is not None:
            with events:
                code = _replay(events, args.strict, producer, console)
        else:
            code = _simulate(args, producer, console)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        endpoint = kinesis.meta.endpoint_url if kinesis is not None else None
        print(f"error: {_explained(error, args.stream_name, endpoint)}", file=sys.stderr)
        return 2
    except BotoCoreError as error:  # credentials, configuration: nothing was sent
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report_line(producer.report), file=sys.stderr)
    return code if not producer.report.failed else 1


def report_line(report: SendReport) -> str:
    line = (f"accepted {report.events_accepted} events in {report.records_sent} records, "
            f"{report.put_calls} PutRecords calls, {report.retried_records} records retried, "
            f"{len(report.failed)} failed")
    if not report.failed:
        return line
    codes = Counter(code for _, code in report.failed)
    first = ", ".join(event_id for event_id, _ in report.failed[:3])
    return (line + " (" + ", ".join(f"{code}: {count}" for code, count in codes.most_common())
            + f"; first: {first})")


def _open_events(file: Path) -> IO[str]:
    if str(file) == "-":
        return sys.stdin
    try:
        return file.open(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{file}: is a directory, not a JSON-lines file") from None
    except PermissionError:
        raise UsageError(f"{file}: not readable") from None


def _kinesis(args: argparse.Namespace) -> Any:
    import boto3
    from botocore.exceptions import NoRegionError

    try:
        return boto3.client("kinesis", endpoint_url=args.endpoint_url, region_name=args.region)
    except NoRegionError:
        raise UsageError("no AWS region: pass --region or set AWS_REGION (for the local "
                         "platform: source .fastbreak/local.env)") from None


def _explained(error: Any, stream_name: str, endpoint: str | None) -> str:
    code = error.response.get("Error", {}).get("Code", "ClientError")
    if code == "ResourceNotFoundException":
        return (f"stream {stream_name!r} does not exist at {endpoint} (check --stream-name, "
                "the region and the endpoint)")
    message = error.response.get("Error", {}).get("Message", "")
    return f"{code}: {message}"[:300]


def _replay(stream: IO[str], strict: bool, producer: Producer, console: Console) -> int:
    invalid = 0
    with _progress(console) as progress:
        task = progress.add_task("replaying", total=None)
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                event: Any = json.loads(line)
                producer.send(event)
            except (ValueError, SchemaError) as error:
                invalid += 1
                print(f"line {number}: {error}", file=sys.stderr)
                if strict:
                    return 2
            progress.advance(task)
        producer.flush()
    if invalid:
        print(f"skipped {invalid} invalid events", file=sys.stderr)
    return 0


def _simulate(args: argparse.Namespace, producer: Producer, console: Console) -> int:
    simulator = LiveGameSimulator(
        SimulationConfig(rate=args.rate, games=args.games, seed=args.seed)
    )
    with _progress(console) as progress:
        task = progress.add_task("simulating", total=int(args.duration))
        drive(simulator, producer, args.duration,
              on_tick=lambda elapsed: progress.update(task, completed=int(elapsed)))
    print(f"emitted {dict(simulator.stats.emitted)}, "
          f"{simulator.stats.scoring_plays} scoring plays", file=sys.stderr)
    return 0


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)
