"""``python -m fastbreak_ops.redrive --queue-url URL``: replay an on-failure queue of the stream
processor (stage 1) or of the audience stage (stage 2).

Each message is Lambda's failure record for a Kinesis batch that exhausted its retries: the
shard, the first and last sequence numbers and the batch size, no data. For each message the
redrive fetches those records from the stream (``GetShardIterator AT_SEQUENCE_NUMBER``),
runs them through the failed function's own code (the stream processor's or the audience
stage's, by the deployed function's handler, configured from its environment as its cold start
does) and deletes the message only when every record was applied. Events and partials already
applied are skipped by the items' high-water marks and the dedup memories, so a redrive can run
again; a stage-1 replay also completes the pending emission its records hold. It reports what it
could not recover: records past the stream's retention, and items a later batch of the shard
overtook (``docs/exactly-once.md``, "Redrive"). ``--dry-run`` reads the queue and the stream,
and changes nothing.

Exit code: 0 when every message was redriven (or, with ``--dry-run``, every record is still
in the stream), 1 when something was not recovered, 2 on a bad argument.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fastbreak.engine import AudienceMerger, StreamProcessor
from fastbreak.engine.layout import OPERATIONAL_PREFIXES, ItemKey, decode_hw, decode_position
from fastbreak_ops.arguments import ArgumentParser, non_negative_float, positive_int
from localplatform.kinesis_events import EventSource, StreamRecord, lambda_event

PROG = "python -m fastbreak_ops.redrive"
GET_RECORDS_LIMIT = 10_000
# An empty GetRecords page is normal in a sparse shard; this many in a row with nothing past
# the range's start means the rest of the range is not there.
MAX_EMPTY_READS = 20


class InvalidMessage(ValueError):
    """A queue message that is not a Kinesis on-failure record."""


@dataclass(frozen=True)
class FailedBatch:
    """The ``KinesisBatchInfo`` of Lambda's on-failure record, and what the message says."""

    message_id: str
    receipt_handle: str
    shard_id: str
    start: str  # sequence numbers: decimal strings of up to 128 digits
    end: str
    size: int
    stream_arn: str
    function_arn: str
    condition: str
    first_arrival: str

    @property
    def stream_name(self) -> str:
        return self.stream_arn.rsplit("/", 1)[-1]

    @property
    def function_name(self) -> str:
        """The function's unqualified name (the record names the alias the mapping invokes)."""
        parts = self.function_arn.split(":")
        return parts[6] if self.function_arn.startswith("arn:") and len(parts) > 6 else parts[0]

    @staticmethod
    def from_message(message: dict[str, Any]) -> FailedBatch:
        try:
            body = json.loads(message["Body"])
            info = body["KinesisBatchInfo"]
            batch = FailedBatch(
                message_id=message["MessageId"],
                receipt_handle=message["ReceiptHandle"],
                shard_id=str(info["shardId"]),
                start=str(info["startSequenceNumber"]),
                end=str(info["endSequenceNumber"]),
                size=int(info["batchSize"]),
                stream_arn=str(info["streamArn"]),
                function_arn=str(body["requestContext"]["functionArn"]),
                condition=str(body["requestContext"].get("condition", "")),
                first_arrival=str(info.get("approximateArrivalOfFirstRecord", "")),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidMessage(f"not a Kinesis on-failure record ({error})") from None
        if not (batch.start.isdigit() and batch.end.isdigit()) or int(batch.start) > int(
                batch.end):
            raise InvalidMessage(f"bad sequence range {batch.start}..{batch.end}")
        return batch


class Status(StrEnum):
    REDRIVEN = "redriven"  # every record applied (or already applied); message deleted
    WOULD_REDRIVE = "would redrive"  # dry run: every record is still in the stream
    UNRECOVERABLE = "unrecoverable"  # records past retention or items overtaken; message kept
    DISCARDED = "discarded"  # unrecoverable, and deleted as asked (--delete-unrecoverable)
    FAILED = "failed"  # the processor kept failing records (e.g. throttling); message kept
    INVALID = "invalid message"  # kept: not a failure record of a Kinesis mapping


@dataclass
class Outcome:
    message_id: str
    status: Status
    shard_id: str = ""
    start: str = ""
    end: str = ""
    batch_size: int = 0
    records_found: int = 0
    records_past_retention: int = 0
    records_failed: int = 0
    # (pk, sk) of items a later batch of the shard wrote: the range's events were not applied
    overtaken_items: list[tuple[str, str]] = field(default_factory=list)
    detail: str = ""

    @property
    def recovered(self) -> bool:
        return self.status in (Status.REDRIVEN, Status.WOULD_REDRIVE)


# ---- reading the stream ------------------------------------------------------------------------
def fetch_range(kinesis: Any, batch: FailedBatch) -> list[dict[str, Any]]:
    """The records of the batch's range still in the stream (Kinesis GetRecords shape)."""
    start, end = int(batch.start), int(batch.end)
    try:
        iterator = kinesis.get_shard_iterator(
            StreamName=batch.stream_name, ShardId=batch.shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=batch.start,
        )["ShardIterator"]
    except ClientError as error:
        if _code(error) != "InvalidArgumentException":
            raise
        # The first records are past the trim horizon: read what the shard still has.
        iterator = kinesis.get_shard_iterator(
            StreamName=batch.stream_name, ShardId=batch.shard_id,
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
    found: list[dict[str, Any]] = []
    empty_reads = 0
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
        records = response.get("Records", [])
        for record in records:
            sequence = int(record["SequenceNumber"])
            if sequence > end:
                return found
            if sequence >= start:
                found.append(record)
        if len(found) >= batch.size:
            return found
        empty_reads = 0 if records else empty_reads + 1
        caught_up = not records and response.get("MillisBehindLatest", 0) == 0
        if caught_up or empty_reads >= MAX_EMPTY_READS:
            return found
        iterator = response.get("NextShardIterator")
    return found


def as_lambda_event(batch: FailedBatch, records: Sequence[dict[str, Any]],
                    role_arn: str, region: str) -> dict[str, Any]:
    """The records as the mapping handed them to the function."""
    source = EventSource(batch.stream_arn, batch.function_arn, role_arn, region)
    return lambda_event(
        [StreamRecord(record["SequenceNumber"], record["PartitionKey"], record["Data"],
                      _epoch(record["ApproximateArrivalTimestamp"]), batch.shard_id)
         for record in records],
        source,
    )


def _epoch(moment: datetime | float) -> float:
    return moment.timestamp() if isinstance(moment, datetime) else float(moment)


# ---- the processor -----------------------------------------------------------------------------
class ItemReads:
    """The DynamoDB client the processor is given, seeing what its BatchGetItem calls return:
    each item's high-water marks as they were before this redrive wrote it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.marks: dict[ItemKey, str] = {}

    def batch_get_item(self, **request: Any) -> dict[str, Any]:
        response: dict[str, Any] = self._client.batch_get_item(**request)
        for items in response.get("Responses", {}).values():
            for item in items:
                key = (item["pk"]["S"], item["sk"]["S"])
                self.marks.setdefault(key, item.get("hw", {}).get("S", ""))
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def overtaken(marks: dict[ItemKey, str], batch: FailedBatch) -> list[ItemKey]:
    """Items whose high-water mark for the shard is past the range: a later batch wrote them
    after the failure, so the range's events look applied to them and were skipped."""
    end = int(batch.end)
    return sorted(
        key for key, text in marks.items()
        if not key[0].startswith(OPERATIONAL_PREFIXES)
        and (mark := decode_hw(text).get(batch.shard_id)) is not None
        and decode_position(mark)[0] > end
    )


@dataclass
class ProcessorHandle:
    processor: StreamProcessor | AudienceMerger
    reads: ItemReads
    role_arn: str


class Processors:
    """One processor per deployed function, built by the handler's own ``configure`` (the
    stream processor's or the audience stage's, by the function's handler) from the function's
    environment (its $LATEST configuration: the live version's, once a deployment has
    completed)."""

    def __init__(self, clients: Callable[[str], Any]) -> None:
        self._clients = clients
        self._built: dict[str, ProcessorHandle] = {}

    def for_function(self, name: str) -> ProcessorHandle:
        if name not in self._built:
            from fastbreak.handlers import audience_stage, stream_processor

            configuration = self._clients("lambda").get_function_configuration(
                FunctionName=name)
            environment = configuration.get("Environment", {}).get("Variables", {})
            reads = ItemReads(self._clients("dynamodb"))
            handler = str(configuration.get("Handler", ""))
            module = (audience_stage if handler.startswith("fastbreak.handlers.audience_stage.")
                      else stream_processor)
            processor = module.configure(reads, self._clients("s3"), environment,
                                         kinesis=self._clients("kinesis"))
            self._built[name] = ProcessorHandle(processor, reads, configuration["Role"])
        return self._built[name]


# ---- one message -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    delete_unrecoverable: bool = False
    attempts: int = 3
    retry_pause_s: float = 2.0


class Redrive:
    def __init__(self, queue_url: str, clients: Callable[[str], Any], region: str,
                 options: Options) -> None:
        self.queue_url = queue_url
        self.sqs = clients("sqs")
        self.kinesis = clients("kinesis")
        self.region = region
        self.options = options
        self.processors = Processors(clients)

    def messages(self, visibility_s: int, limit: int | None) -> Iterator[dict[str, Any]]:
        """Each message of the queue once, hidden from other readers while it is handled."""
        seen: set[str] = set()
        while limit is None or len(seen) < limit:
            wanted = 10 if limit is None else min(10, limit - len(seen))
            received = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=wanted,
                VisibilityTimeout=visibility_s, WaitTimeSeconds=1,
            ).get("Messages", [])
            fresh = [message for message in received if message["MessageId"] not in seen]
            for message in received:
                if message["MessageId"] in seen:  # kept by this run: visible again at once
                    self._release(message["ReceiptHandle"])
            if not fresh:
                return
            for message in fresh:
                seen.add(message["MessageId"])
                yield message

    def handle_all(self, messages: Sequence[dict[str, Any]],
                   advance: Callable[[], None] = lambda: None) -> list[Outcome]:
        """Each shard's batches in sequence order, whatever order the queue gave them in: a
        later range redriven first would overtake the items of an earlier one. A message
        whose range was handled just before (SQS delivers at least once) shares its outcome."""
        outcomes: list[Outcome] = []
        batches: list[FailedBatch] = []
        for message in messages:
            try:
                batches.append(FailedBatch.from_message(message))
            except InvalidMessage as error:
                self._release(message["ReceiptHandle"])
                outcomes.append(Outcome(message["MessageId"], Status.INVALID, detail=str(error)))
                advance()
        handled: dict[tuple[str, str, str, str], Outcome] = {}
        for batch in sorted(batches, key=lambda b: (b.stream_arn, b.shard_id, int(b.start),
                                                    int(b.end))):
            same = (batch.stream_arn, batch.shard_id, batch.start, batch.end)
            if same in handled:
                outcome = replace(handled[same], message_id=batch.message_id,
                                  detail="the same range as the message before")
                self._settle(batch, outcome)
            else:
                outcome = handled[same] = self.handle(batch)
            outcomes.append(outcome)
            advance()
        return outcomes

    def handle(self, batch: FailedBatch) -> Outcome:
        outcome = Outcome(batch.message_id, Status.REDRIVEN, batch.shard_id, batch.start,
                          batch.end, batch.size)
        try:
            records = fetch_range(self.kinesis, batch)
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise
            records = []
            outcome.detail = "the stream or shard no longer exists"
        outcome.records_found = len(records)
        outcome.records_past_retention = max(0, batch.size - len(records))
        if self.options.dry_run:
            outcome.status = Status.WOULD_REDRIVE if not outcome.records_past_retention else (
                Status.UNRECOVERABLE)
            self._release(batch.receipt_handle)
            return outcome
        if records:
            self._apply(batch, records, outcome)
        if outcome.records_failed:
            outcome.status = Status.FAILED
        elif outcome.records_past_retention or outcome.overtaken_items:
            outcome.status = Status.UNRECOVERABLE
            if self.options.delete_unrecoverable:
                outcome.status = Status.DISCARDED
        self._settle(batch, outcome)
        return outcome

    def _settle(self, batch: FailedBatch, outcome: Outcome) -> None:
        """Delete the message after success (or as asked); otherwise leave it for later."""
        if outcome.status in (Status.REDRIVEN, Status.DISCARDED):
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=batch.receipt_handle)
        else:
            self._release(batch.receipt_handle)

    def _apply(self, batch: FailedBatch, records: list[dict[str, Any]],
               outcome: Outcome) -> None:
        handle = self.processors.for_function(batch.function_name)
        event = as_lambda_event(batch, records, handle.role_arn, self.region)
        handle.reads.marks = {}
        for attempt in range(self.options.attempts):
            result = handle.processor.process(event["Records"])
            if attempt == 0:
                # The first reads show the items as the failure left them.
                outcome.overtaken_items = overtaken(handle.reads.marks, batch)
            outcome.records_failed = len(result.failed_sequence_numbers)
            if not result.failed_sequence_numbers:
                return
            if attempt + 1 < self.options.attempts:
                time.sleep(self.options.retry_pause_s * 2 ** attempt)
        outcome.detail = (f"the processor failed {outcome.records_failed} records on every "
                          f"attempt (its log lines name the cause); run the redrive again")

    def _release(self, receipt_handle: str) -> None:
        """Make a message visible again at once: it stays for the next redrive and the alarm."""
        self.sqs.change_message_visibility(QueueUrl=self.queue_url,
                                           ReceiptHandle=receipt_handle, VisibilityTimeout=0)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# ---- the command -------------------------------------------------------------------------------
def parser(prog: str = PROG) -> ArgumentParser:
    root = ArgumentParser(
        prog=prog,
        description="Replay the stream processor's on-failure queue: fetch each failed "
        "batch's records from the stream, run them through the processor (events already "
        "applied are skipped), delete the message when all were applied, and report what "
        "could not be recovered.",
    )
    root.add_argument("--queue-url", required=True,
                      help="the on-failure queue (output OnFailureQueueUrl of the Storage stack)")
    root.add_argument("--dry-run", action="store_true",
                      help="read the queue and the stream only: report what would be redriven")
    root.add_argument("--max-messages", type=positive_int, default=None,
                      help="stop after this many messages (default: all)")
    root.add_argument("--delete-unrecoverable", action="store_true",
                      help="also delete messages whose records are past retention or whose "
                      "items were overtaken, once reported (use with --report)")
    root.add_argument("--report", type=Path, default=None,
                      help="write every message's outcome to this JSON file")
    root.add_argument("--attempts", type=positive_int, default=3,
                      help="tries per message while the processor fails records (default 3)")
    root.add_argument("--retry-pause", type=non_negative_float, default=2.0,
                      help="seconds before the second try, doubling after (default 2)")
    root.add_argument("--visibility-timeout", type=positive_int, default=900,
                      help="seconds a message is hidden from others while handled (default 900)")
    root.add_argument("--endpoint-url", default=None,
                      help="an AWS endpoint, e.g. the local platform's (default: AWS)")
    root.add_argument("--region", default=None, help="AWS region (default: the SDK's)")
    return root


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = (parser() if prog is None else parser(prog)).parse_args(argv)
    import boto3

    session = boto3.session.Session(region_name=args.region)
    if session.region_name is None:
        sys.stderr.write(f"{PROG}: error: no AWS region: pass --region or set AWS_REGION\n")
        return 2

    def clients(service: str) -> Any:
        return session.client(service, endpoint_url=args.endpoint_url)

    console = Console(stderr=True)
    redrive = Redrive(args.queue_url, clients, session.region_name, Options(
        dry_run=args.dry_run, delete_unrecoverable=args.delete_unrecoverable,
        attempts=args.attempts, retry_pause_s=args.retry_pause,
    ))
    try:
        outcomes = run(redrive, console, args.visibility_timeout, args.max_messages)
    except (ClientError, BotoCoreError) as error:
        sys.stderr.write(f"{PROG}: error: {error}\n")
        return 1
    if args.report is not None:
        args.report.write_text(json.dumps([_as_json(o) for o in outcomes], indent=2) + "\n")
    summarize(outcomes, console, dry_run=args.dry_run)
    return 0 if all(outcome.recovered or outcome.status is Status.DISCARDED
                    for outcome in outcomes) else 1


def run(redrive: Redrive, console: Console, visibility_s: int,
        limit: int | None) -> list[Outcome]:
    # Every message first (hidden for the visibility timeout), to order each shard's ranges.
    with console.status("reading the on-failure queue"):
        messages = list(redrive.messages(visibility_s, limit))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("checking" if redrive.options.dry_run else "redriving",
                                 total=len(messages))
        return redrive.handle_all(messages, lambda: progress.advance(task))


def summarize(outcomes: Sequence[Outcome], console: Console, *, dry_run: bool) -> None:
    if not outcomes:
        console.print("the queue is empty: nothing to redrive")
        return
    table = Table(title="dry run: nothing was changed" if dry_run else "redrive")
    for column in ("shard", "sequence range", "records in stream", "status", "detail"):
        table.add_column(column)
    for outcome in outcomes:
        detail = outcome.detail
        if outcome.records_past_retention:
            detail = f"{outcome.records_past_retention} records past the stream's retention"
        if outcome.overtaken_items:
            shown = ", ".join(f"{pk} {sk}" for pk, sk in outcome.overtaken_items[:3])
            more = len(outcome.overtaken_items) - 3
            detail = (f"{len(outcome.overtaken_items)} items overtaken by later batches "
                      f"({shown}{f' and {more} more' if more > 0 else ''}): rebuild them")
        table.add_row(outcome.shard_id, f"{outcome.start}..{outcome.end}",
                      f"{outcome.records_found}/{outcome.batch_size}", outcome.status.value,
                      detail)
    console.print(table)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status.value] = counts.get(outcome.status.value, 0) + 1
    console.print(", ".join(f"{count} {status}" for status, count in counts.items()))


def _as_json(outcome: Outcome) -> dict[str, Any]:
    document = asdict(outcome)
    document["status"] = outcome.status.value
    document["overtaken_items"] = [list(key) for key in outcome.overtaken_items]
    return document


if __name__ == "__main__":
    raise SystemExit(main())
