"""The audience stage on Flink writes exactly what the Lambda audience stage writes.

The same partials (what the real stage 1 emits for a workload, plus a re-emission of some of
them with new sequence numbers, as a retried stage-1 batch puts them, and one record that is no
partial) go to both runtimes, each writing its own table in one moto server (real boto3):

- the Lambda stage's handler, per partials shard in batches of 100;
- the Flink job (``fastbreak_flink.job``) in a local mini-cluster (``apache-flink`` 2.2 from
  PyPI on Java 17, in ``.venv-flink``), parallelism 2, checkpoints on; once straight through,
  once with a failure after a flush's writes, from which Flink restarts at its last checkpoint
  and re-delivers what came after it.

Items are compared attribute by attribute, except what counts writes (``v``, the dedup items'
``hw``, which carries a write count) and the wall clock of a write (``updated_at``): those
depend on how a runtime batches, not on what it applies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.flink_audience_stage import (
    partials_records,
    records_file,
    run_flink_job,
    run_lambda_stage,
)
from fastbreak.engine.dedup import unpack
from fastbreak.engine.layout import DEDUP_PREFIX, state_json
from localplatform.embedded_aws import client, embedded_aws
from localplatform.kinesis_events import StreamRecord
from localplatform.stores import create_feature_stores

pytestmark = pytest.mark.e2e

PER_CHECKPOINT = 120  # records the restart run's source emits between two checkpoints


def _with_redeliveries(records: list[StreamRecord]) -> list[StreamRecord]:
    """Every 7th partial of each shard put again at the end of its shard (a re-emission: same
    data, new sequence number), and a record that is not a partial."""
    out = list(records)
    last: dict[str, int] = {}
    for record in records:
        last[record.shard_id] = max(last.get(record.shard_id, 0), record.sequence)
    for index, record in enumerate(records):
        if index % 7 == 3:
            last[record.shard_id] += 11
            out.append(StreamRecord(str(last[record.shard_id]), record.partition_key,
                                    record.data, record.arrival, record.shard_id))
    shard = records[0].shard_id
    out.append(StreamRecord(str(last[shard] + 11), "game#broken", b"{not a partial",
                            records[0].arrival, shard))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("flink")
    records = _with_redeliveries(partials_records(700))
    path = records_file(records, work / "partials.jsonl")
    fail_index = PER_CHECKPOINT + PER_CHECKPOINT // 2  # past the first checkpoint's records
    fail_from: dict[str, int] = {}
    for record in records[fail_index:]:
        fail_from.setdefault(record.shard_id, record.sequence)
    with embedded_aws() as endpoint:
        dynamodb, s3 = client("dynamodb", endpoint), client("s3", endpoint)
        for name in ("lambda-stage", "flink-stage", "flink-restart"):
            create_feature_stores(dynamodb, s3, table=name, bucket=name)
        run_lambda_stage(records, endpoint, "lambda-stage", "lambda-stage")
        straight = run_flink_job(path, endpoint, "flink-stage", "flink-stage", work / "straight")
        restart_dir = work / "restart"
        restarted = run_flink_job(
            path, endpoint, "flink-restart", "flink-restart", restart_dir,
            "--records-per-checkpoint", str(PER_CHECKPOINT), "--checkpoint-interval-ms", "300",
            "--fail-marker", str(restart_dir / "failed.json"),
            *[arg for shard, sequence in fail_from.items()
              for arg in ("--fail-once-from", f"{shard}={sequence}")],
        )
        yield {
            "records": records,
            "straight": straight,
            "restarted": restarted,
            "restart_dir": restart_dir,
            "items": {name: _items(dynamodb, name)
                      for name in ("lambda-stage", "flink-stage", "flink-restart")},
            "quarantined": {name: _quarantined(s3, name)
                            for name in ("lambda-stage", "flink-stage", "flink-restart")},
        }


def _items(dynamodb: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            key = (item["pk"]["S"], item["sk"]["S"])
            state = item["state"].get("S", item["state"].get("B"))
            compared: dict[str, Any] = {
                "expires_at": item.get("expires_at", {}).get("N"),
                "t": item["t"]["N"],
            }
            if key[0].startswith(DEDUP_PREFIX):
                compared["remembered"] = unpack(state)
            else:
                compared["state"] = json.loads(state_json(state))
                compared["hw"] = item["hw"]["S"]
            items[key] = compared
    return items


def _quarantined(s3: Any, bucket: str) -> list[tuple[str, str]]:
    lines = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                             Prefix="quarantine/"):
        for entry in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read().decode()
            lines += [json.loads(line) for line in body.splitlines() if line]
    return sorted((line["reason"], line["sequence_number"]) for line in lines)


def test_flink_job_writes_the_items_the_lambda_stage_writes(runs: dict[str, Any]) -> None:
    lambda_items, flink_items = runs["items"]["lambda-stage"], runs["items"]["flink-stage"]
    assert len(lambda_items) > 200  # entity (and tile) items of games and contents, dedup items
    assert sorted(flink_items) == sorted(lambda_items)
    differing = [key for key in lambda_items if flink_items[key] != lambda_items[key]]
    assert differing == []
    assert runs["straight"]["RecordsIn"] == len(runs["records"])


def test_flink_job_skips_reemitted_partials_and_quarantines_what_is_no_partial(
        runs: dict[str, Any]) -> None:
    straight = runs["straight"]
    reemitted = sum(1 for index in range(len(runs["records"])) if index % 7 == 3)
    assert straight["DuplicatePartials"] > 0
    assert straight["RecordsInvalid"] == 1
    assert runs["quarantined"]["flink-stage"] == runs["quarantined"]["lambda-stage"]
    assert [reason for reason, _ in runs["quarantined"]["flink-stage"]] == ["bad_partial"]
    assert straight["DuplicatePartials"] <= reemitted


def test_flink_job_restarted_from_a_checkpoint_writes_the_same_items(
        runs: dict[str, Any]) -> None:
    assert runs["restarted"]["restarts"] >= 1
    assert runs["items"]["flink-restart"] == runs["items"]["lambda-stage"]
    # Quarantine lines are at least once: a record re-delivered after the restart may be
    # quarantined again (docs/exactly-once.md); the records quarantined are the same.
    assert set(runs["quarantined"]["flink-restart"]) == set(runs["quarantined"]["lambda-stage"])


def test_restart_redelivers_records_the_failed_attempt_had_written(
        runs: dict[str, Any]) -> None:
    restart_dir: Path = runs["restart_dir"]
    failed = json.loads((restart_dir / "failed.json").read_text())
    assert failed["attempt"] == 0 and failed["ItemWrites"] > 0
    written_then_failed = {tuple(record) for record in failed["records"]}
    flushes = [json.loads(line)
               for line in (restart_dir / "trace.jsonl").read_text().splitlines()]
    after_restart = {tuple(record) for flush in flushes if flush["attempt"] >= 1
                     for record in flush["records"]}
    assert written_then_failed & after_restart  # merged again, and skipped where applied
