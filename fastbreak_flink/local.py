"""The audience stage's Flink job in a local mini-cluster (``apache-flink`` from PyPI, Java 17).

The source is bounded: a file of partials-stream records (``flush.to_json_line``, one a line, in
each shard's order), or what a Kinesis stream holds now (``--stream``, every shard from its
start: the local platform's partials stream, say), emitted in order by one source reader,
optionally no more than N records between two checkpoints (Flink's per-checkpoint rate
limiter), so that a run reliably has checkpoints in the middle of its input. The merge writes
through boto3 to the endpoint given (moto in server mode in the tests). Checkpointing is on; a
restart restores the last one.

    .venv-flink/bin/python -m fastbreak_flink.local --records partials.jsonl \\
        --endpoint-url http://127.0.0.1:5000 --table fastbreak-online --bucket fastbreak-offline

The endpoint, table and bucket default to what the local platform exports (``AWS_ENDPOINT_URL``,
``FASTBREAK_ONLINE_TABLE``, ``FASTBREAK_OFFLINE_BUCKET`` in ``.fastbreak/local.env``).

Prints one JSON line: what the flushes did (``flush.summary`` summed), the number of flushes and
the job's restarts. Test hooks: ``--trace`` appends one JSON line per flush (attempt, records);
``--fail-once-from SHARD=SEQUENCE`` fails the job once, after the writes of the first flush
holding a record of that shard at or past that sequence number (``--fail-marker`` remembers
that it failed, across the restart).
"""

from __future__ import annotations

import argparse
import json
import os
import site
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors import Source
from pyflink.java_gateway import get_gateway

from fastbreak_flink.flush import (
    FlushReport,
    PartialsRecord,
    from_json_line,
    summary,
    to_json_line,
)
from fastbreak_flink.job import RECORD_TYPE, AudienceMergeFunction, audience_stage, configure
from fastbreak_flink.settings import JobSettings

REPOSITORY = Path(__file__).resolve().parent.parent


class DrillFailure(RuntimeError):
    """The drill's one failure, after a flush's writes and before the next checkpoint."""


class LocalMergeFunction(AudienceMergeFunction):
    """The job's merge with the local runner's trace and drill."""

    def __init__(self, settings: JobSettings, trace: str, fail_from: dict[str, int],
                 fail_marker: str) -> None:
        super().__init__(settings)
        self.trace = trace
        self.fail_from = fail_from
        self.fail_marker = fail_marker

    def open(self, runtime_context: Any) -> None:
        super().open(runtime_context)
        self.attempt = _attempt_number(runtime_context)

    def flushed(self, records: list[PartialsRecord], report: FlushReport) -> None:
        line = {"attempt": self.attempt, "records": [[r[0], r[1]] for r in records],
                **summary(report)}
        if self.trace:
            with open(self.trace, "a") as trace:
                trace.write(json.dumps(line) + "\n")
        if self.fail_from and not Path(self.fail_marker).exists() and any(
            shard in self.fail_from and int(sequence) >= self.fail_from[shard]
            for shard, sequence, _, _ in records
        ):
            Path(self.fail_marker).write_text(json.dumps(line))
            raise DrillFailure("drill: the job fails once after this flush's writes")


def _attempt_number(runtime_context: Any) -> int:
    try:
        return int(runtime_context.get_attempt_number())
    except AttributeError:  # thread mode of PyFlink 2.2 asks Flink 1's RuntimeContext method
        return int(runtime_context._runtime_context.getTaskInfo().getAttemptNumber())


def bounded_records(env: StreamExecutionEnvironment, lines: list[str],
                    per_checkpoint: int) -> DataStream:
    """The lines as a checkpointed bounded source (Flink's generator source over the elements:
    on a restore it resumes after the last checkpointed element)."""
    gateway = get_gateway()
    jvm: Any = gateway.jvm
    string_type = Types.STRING().get_java_type_info()
    elements = jvm.java.util.ArrayList()
    for line in lines:
        elements.add(line)
    generator = jvm.org.apache.flink.connector.datagen.functions.FromElementsGeneratorFunction(
        string_type, env._j_stream_execution_environment.getConfig(), elements)
    limits = jvm.org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy
    limiter = limits.perCheckpoint(per_checkpoint) if per_checkpoint else limits.noOp()
    source = jvm.org.apache.flink.connector.datagen.source.DataGeneratorSource(
        generator, len(lines), limiter, string_type)
    text = env.from_source(Source(source), WatermarkStrategy.no_watermarks(),
                           "partials records (file)", Types.STRING()).set_parallelism(1)
    return text.map(from_json_line, output_type=RECORD_TYPE).set_parallelism(1)


def stream_lines(stream: str, endpoint_url: str, region: str) -> list[str]:
    """What ``stream`` holds now, every shard from its start, as records-file lines (the
    shards interleaved, each in order)."""
    import boto3

    from localplatform.stores import StreamTail

    kinesis = boto3.client("kinesis", endpoint_url=endpoint_url or None, region_name=region)
    by_shard = list(StreamTail(kinesis, stream).take().values())
    lines: list[str] = []
    for index in range(max((len(records) for records in by_shard), default=0)):
        lines.extend(to_json_line(r.shard_id, r.sequence_number, int(r.arrival * 1000), r.data)
                     for records in by_shard if index < len(records)
                     for r in [records[index]])
    return lines


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.stream:
        lines = stream_lines(args.stream, args.endpoint_url, args.region)
    else:
        lines = [line for line in Path(args.records).read_text().splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{args.stream or args.records}: no records")
    checkpoints = Path(args.checkpoint_dir or tempfile.mkdtemp(prefix="fastbreak-flink-"))
    # The embedded interpreter (thread mode) starts from the base Python's paths: give it this
    # venv's packages (PyFlink's pemja among them) and the repository's, before the JVM starts.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*site.getsitepackages(), str(REPOSITORY), str(REPOSITORY / "lambdas"),
         os.environ.get("PYTHONPATH", "")])
    config = Configuration()
    config.set_string("execution.checkpointing.interval", f"{args.checkpoint_interval_ms} ms")
    config.set_string("execution.checkpointing.dir", checkpoints.resolve().as_uri())
    config.set_string("restart-strategy.type", "fixed-delay")
    config.set_string("restart-strategy.fixed-delay.attempts", str(args.restarts))
    config.set_string("restart-strategy.fixed-delay.delay", "100 ms")
    # The workers' interpreter: this one (its venv has PyFlink and boto3), not `python`.
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(args.parallelism)
    configure(env)
    for package in ("fastbreak_flink", "lambdas/fastbreak"):
        env.add_python_file(str(REPOSITORY / package))
    settings = JobSettings(
        table_name=args.table, bucket_name=args.bucket, region=args.region,
        endpoint_url=args.endpoint_url, key_buckets=args.key_buckets,
        flush_interval_ms=args.flush_interval_ms, flush_max_records=args.flush_max_records,
    )
    fail_from = dict(_shard_sequence(text) for text in args.fail_once_from or ())
    trace = args.trace or str(checkpoints / "trace.jsonl")
    merge = LocalMergeFunction(settings, trace, fail_from,
                               args.fail_marker or str(checkpoints / "failed"))
    audience_stage(bounded_records(env, lines, args.records_per_checkpoint), settings, merge)
    started = time.perf_counter()
    env.execute("fastbreak-audience-stage-local")
    seconds = time.perf_counter() - started
    flushes = [json.loads(line) for line in Path(trace).read_text().splitlines()]
    totals: dict[str, Any] = {name: sum(flush[name] for flush in flushes)
                              for name in summary(FlushReport())}
    return {**totals, "flushes": len(flushes),
            "restarts": max((flush["attempt"] for flush in flushes), default=0),
            "seconds": round(seconds, 3)}


def _shard_sequence(text: str) -> tuple[str, int]:
    shard, _, sequence = text.partition("=")
    if not shard or not sequence.isdigit():
        raise argparse.ArgumentTypeError(f"--fail-once-from {text!r}: expected SHARD=SEQUENCE")
    return shard, int(sequence)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="python -m fastbreak_flink.local",
                                  description=__doc__.split("\n\n")[0])
    source = cli.add_mutually_exclusive_group(required=True)
    source.add_argument("--records", help="a file of partials-stream records, one a line")
    source.add_argument("--stream", help="a Kinesis stream to read, every shard from its start")
    cli.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL", ""),
                     help="DynamoDB, S3 and Kinesis endpoint (moto; default $AWS_ENDPOINT_URL)")
    cli.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    cli.add_argument("--table", default=os.environ.get("FASTBREAK_ONLINE_TABLE", ""),
                     help="the online store table (default $FASTBREAK_ONLINE_TABLE)")
    cli.add_argument("--bucket", default=os.environ.get("FASTBREAK_OFFLINE_BUCKET", ""),
                     help="the offline store bucket (default $FASTBREAK_OFFLINE_BUCKET)")
    cli.add_argument("--parallelism", type=int, default=2)
    cli.add_argument("--key-buckets", type=int, default=8)
    cli.add_argument("--flush-interval-ms", type=int, default=200)
    cli.add_argument("--flush-max-records", type=int, default=2000)
    cli.add_argument("--checkpoint-dir", default="")
    cli.add_argument("--checkpoint-interval-ms", type=int, default=500)
    cli.add_argument("--records-per-checkpoint", type=int, default=0,
                     help="emit at most this many records between checkpoints (0: no limit)")
    cli.add_argument("--restarts", type=int, default=2, help="restarts the job may make")
    cli.add_argument("--trace", default="", help="append one JSON line per flush here")
    cli.add_argument("--fail-once-from", action="append", metavar="SHARD=SEQUENCE")
    cli.add_argument("--fail-marker", default="")
    return cli


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    for option in ("endpoint_url", "table", "bucket"):
        if not getattr(args, option):
            cli.error(f"--{option.replace('_', '-')} is required (or source .fastbreak/local.env)")
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
