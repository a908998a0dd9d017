"""Partials merged per second: the audience stage's Flink job in a local mini-cluster vs the
Lambda stage's handler, on the same partials, in the same run.

    .venv/bin/python -m bench.flink_audience_stage

The partials are what the real stage 1 emits (in-process) for a workload of
``bench.workload.events``: one record per (stage-1 batch, audience entity), on two partials
shards. Both runtimes write to an online store table in moto (server mode, one server, a table
each, one after the other):

- **baseline**: the Lambda handler (``handlers.audience_stage``), invoked per partials shard on
  batches of 100 records, as the event source mapping would;
- **value**: ``fastbreak_flink.local`` (the job of ``fastbreak_flink.job``, Flink 2.2 from
  PyPI, Java 17, thread mode, parallelism 2, checkpoints every 500 ms), timed from job submit
  to the end of the bounded input, in the Flink venv (``.venv-flink``); its JVM start is
  outside the timing.

moto (about 5 ms a conditional write) bounds both; what differs is how each runtime batches.
No target yet: the number says what the mini-cluster adds or saves around the same merge.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.results_format import BenchResult
from bench.workload import T0, events
from fastbreak.definitions import CATALOG
from fastbreak.engine import MemorySink, OnlineStore, PartialsSink, RetryPolicy, StreamProcessor
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, lambda_event
from localplatform.memory_dynamodb import MemoryDynamoDB
from localplatform.memory_kinesis import MemoryKinesis

REPOSITORY = Path(__file__).resolve().parent.parent
FLINK_PYTHON = REPOSITORY / ".venv-flink" / "bin" / "python"
ARRIVAL_S = T0 / 1000 + 90
STAGE1_BATCH = 200


def partials_records(event_count: int, seed: int = 7, partial_shards: int = 2,
                     games: int = 10) -> list[StreamRecord]:
    """What the real stage 1 puts to the partials stream for ``event_count`` events, in batches
    of 200 from one events shard: the records interleaved across the partials shards as a
    reader of every shard would take them (each shard's records in order)."""
    payloads = events(event_count, users=2000, games=games, seed=seed)
    kinesis = MemoryKinesis(partial_shards, arrival_s=lambda: ARRIVAL_S)
    store = OnlineStore(MemoryDynamoDB(), "online", RetryPolicy(sleep=lambda _: None),
                        concurrency=1)
    stage1 = StreamProcessor(store, MemorySink(), CATALOG, None, lambda: int(ARRIVAL_S * 1000),
                             PartialsSink(kinesis, "partials"))
    for start in range(0, len(payloads), STAGE1_BATCH):
        batch = [StreamRecord(str(SEQUENCE_BASE + start + n), f"user-{n}", payload, ARRIVAL_S)
                 for n, payload in enumerate(payloads[start:start + STAGE1_BATCH])]
        assert stage1.process(lambda_event(batch)["Records"]).failed_sequence_numbers == []
    by_shard = [kinesis.records[shard] for shard in kinesis.shard_ids]
    interleaved: list[StreamRecord] = []
    for index in range(max(len(records) for records in by_shard)):
        interleaved.extend(records[index] for records in by_shard if index < len(records))
    return interleaved


def records_file(records: list[StreamRecord], path: Path) -> Path:
    """The local runner's input (``fastbreak_flink.flush.to_json_line``)."""
    from fastbreak_flink.flush import to_json_line

    path.write_text("".join(
        to_json_line(r.shard_id, r.sequence_number, int(r.arrival * 1000), r.data) + "\n"
        for r in records))
    return path


def run_lambda_stage(records: list[StreamRecord], endpoint_url: str, table: str, bucket: str,
                     batch_size: int = 100) -> float:
    """The Lambda stage's handler over ``records``, per shard in batches; seconds taken."""
    from fastbreak.handlers import audience_stage
    from localplatform.embedded_aws import client
    from localplatform.lambda_context import LambdaContext

    audience_stage.configure(client("dynamodb", endpoint_url), client("s3", endpoint_url),
                             {"ONLINE_TABLE_NAME": table, "OFFLINE_BUCKET_NAME": bucket})
    by_shard: dict[str, list[StreamRecord]] = {}
    for record in records:
        by_shard.setdefault(record.shard_id, []).append(record)
    started = time.perf_counter()
    # The handler prints its metrics (EMF) per invocation, as on Lambda: not wanted here.
    with contextlib.redirect_stdout(io.StringIO()):
        for shard_records in by_shard.values():
            for start in range(0, len(shard_records), batch_size):
                event = lambda_event(shard_records[start:start + batch_size])
                answer = audience_stage.handler(event, LambdaContext())
                assert answer == {"batchItemFailures": []}, answer
    return time.perf_counter() - started


def run_flink_job(records_path: Path, endpoint_url: str, table: str, bucket: str,
                  work_dir: Path, *extra: str) -> dict[str, Any]:
    """``fastbreak_flink.local`` in the Flink venv; its summary line."""
    if not FLINK_PYTHON.exists():
        raise RuntimeError(f"{FLINK_PYTHON} is missing: `make test` or `make flink-venv` "
                           "creates it")
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": "fastbreak-local",
                   "AWS_SECRET_ACCESS_KEY": "fastbreak-local",
                   "PYTHONPATH": f"{REPOSITORY}{os.pathsep}{REPOSITORY / 'lambdas'}"}
    command = [str(FLINK_PYTHON), "-m", "fastbreak_flink.local", "--records", str(records_path),
               "--endpoint-url", endpoint_url, "--table", table, "--bucket", bucket,
               "--checkpoint-dir", str(work_dir / "checkpoints"),
               "--trace", str(work_dir / "trace.jsonl"), *extra]
    done = subprocess.run(command, env=environment, capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the Flink job failed ({done.returncode}):\n{done.stderr[-4000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def run() -> list[BenchResult]:
    import tempfile

    from localplatform.embedded_aws import client, embedded_aws
    from localplatform.stores import create_feature_stores

    records = partials_records(2000)
    with embedded_aws() as endpoint, tempfile.TemporaryDirectory() as work:
        dynamodb, s3 = client("dynamodb", endpoint), client("s3", endpoint)
        for name in ("lambda-stage", "flink-stage"):
            create_feature_stores(dynamodb, s3, table=name, bucket=name)
        lambda_seconds = run_lambda_stage(records, endpoint, "lambda-stage", "lambda-stage")
        summary = run_flink_job(records_file(records, Path(work) / "partials.jsonl"), endpoint,
                                "flink-stage", "flink-stage", Path(work))
    flink_rate = summary["PartialsIn"] / summary["seconds"]
    lambda_rate = len(records) / lambda_seconds
    print(f"flink_audience_stage: {len(records)} partials; Flink {summary['seconds']} s "
          f"({summary['flushes']} flushes, {summary['ItemWrites']} item writes), Lambda "
          f"handler {lambda_seconds:.2f} s")
    return [BenchResult(
        name="flink_audience_stage",
        value=round(flink_rate, 1),
        unit="partials merged/s",
        baseline="the Lambda audience stage's handler on the same partials (batches of 100)",
        baseline_value=round(lambda_rate, 1),
        ratio=round(flink_rate / lambda_rate, 2),
        target="none yet: both reported",
        met=True,
    )]

if __name__ == "__main__":
    for result in run():
        print(json.dumps(result.to_json(), indent=2))
