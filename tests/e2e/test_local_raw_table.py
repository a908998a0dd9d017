"""The raw table end to end on the local platform: records put on the stream (valid, refused,
a KPL aggregate, a late one) go through the emulated Firehose, whose transformation is the real
handler run from the template, and come out as Parquet rows under raw/ with the Kinesis
position and arrival of each record, the processor's verdict, and the right partitions."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from fastbreak.engine.kpl import aggregate
from fastbreak.offline.raw import partition_of
from localplatform.offline_export import REPOSITORY, export_offline_store
from localplatform.platform import LocalPlatform, PlatformOptions

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC)


def event(event_id: str, user: str, at: datetime = NOW, **overrides: object) -> bytes:
    document = {"event_type": "content_view", "schema_version": 2, "event_id": event_id,
                "event_time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
                "user_id": user, "content_id": "article-1", "sport": "soccer",
                "surface": "home", **overrides}
    return json.dumps(document).encode()


# (label, partition key, data): what goes on the stream, one PutRecord each.
RECORDS = [
    ("valid", "user-raw", event("raw-1", "user-raw")),
    ("two hours old", "user-raw", event("raw-2", "user-raw", NOW - timedelta(hours=2))),
    ("truncated", "user-bad", b'{"event_type": "content_view", trunc'),
    ("wrong type", "user-bad", event("raw-3", "user-bad", user_id=7)),
    ("in the future", "user-bad", event("raw-4", "user-bad", NOW + timedelta(hours=1))),
    ("aggregate", "user-kpl", aggregate("user-kpl", [
        event(f"kpl-{index}", "user-kpl") for index in range(3)])),
]


@pytest.fixture(scope="module")
def platform() -> Iterator[LocalPlatform]:
    with LocalPlatform(PlatformOptions(firehose_buffer_seconds=0.5)) as running:
        yield running


@pytest.fixture(scope="module")
def put(platform: LocalPlatform) -> dict[str, dict[str, Any]]:
    """Each record's label -> PutRecord's answer (ShardId, SequenceNumber) and put time."""
    kinesis = platform.client("kinesis")
    answers = {}
    for label, partition_key, data in RECORDS:
        before = time.time()
        answer = kinesis.put_record(StreamName=platform.stream_name, Data=data,
                                    PartitionKey=partition_key)
        answers[label] = {**answer, "before": before, "after": time.time(),
                          "partition_key": partition_key}
    assert platform.wait_until_processed(timeout=60)
    assert platform.drain_deliveries(timeout=60)
    return answers


@pytest.fixture(scope="module")
def rows(platform: LocalPlatform, put: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row under raw/, with the partition folder it was found in."""
    s3, bucket = platform.client("s3"), platform.offline_bucket()
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="raw/"):
        for item in page.get("Contents", []):
            assert item["Key"].endswith(".parquet")
            folder = dict(part.split("=", 1) for part in item["Key"].split("/")[1:3])
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found += [{**row, "_partition": folder}
                      for row in pq.read_table(io.BytesIO(body)).to_pylist()]
    return found


def by_sequence(rows: list[dict[str, Any]], answer: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((row for row in rows
                   if row["kinesis_sequence_number"] == answer["SequenceNumber"]),
                  key=lambda row: row["kinesis_sub_sequence"])


def test_every_user_record_is_one_row_and_nothing_is_in_the_error_prefix(
    platform: LocalPlatform, rows: list[dict[str, Any]],
) -> None:
    assert len(rows) == len(RECORDS) - 1 + 3, "the aggregate holds three user records"
    listed = platform.client("s3").list_objects_v2(Bucket=platform.offline_bucket(),
                                                   Prefix="raw-errors/")
    assert not listed.get("Contents")


def test_a_valid_row_carries_its_kinesis_position_and_arrival(
    rows: list[dict[str, Any]], put: dict[str, dict[str, Any]],
) -> None:
    answer = put["valid"]
    [row] = by_sequence(rows, answer)
    assert (row["event_id"], row["rejection"], row["raw_payload"]) == ("raw-1", None, None)
    assert (row["kinesis_shard_id"], row["kinesis_sub_sequence"],
            row["kinesis_partition_key"]) == (answer["ShardId"], 0, "user-raw")
    arrival = row["kinesis_arrival_time"].timestamp()
    assert answer["before"] - 1 <= arrival <= answer["after"] + 1
    assert row["_partition"] == partition_of(int(row["event_time"].timestamp() * 1000))


def test_rows_are_partitioned_by_event_hour_and_refused_ones_by_arrival_hour(
    rows: list[dict[str, Any]], put: dict[str, dict[str, Any]],
) -> None:
    [old] = by_sequence(rows, put["two hours old"])
    assert old["rejection"] is None
    assert old["_partition"] == partition_of(int((NOW - timedelta(hours=2)).timestamp() * 1000))
    [future] = by_sequence(rows, put["in the future"])
    assert future["rejection"] == "event_time_in_future"
    assert future["_partition"] == partition_of(
        int(future["kinesis_arrival_time"].timestamp() * 1000))


def test_refused_records_keep_their_bytes_and_the_processors_reason(
    rows: list[dict[str, Any]], put: dict[str, dict[str, Any]],
) -> None:
    [truncated] = by_sequence(rows, put["truncated"])
    assert (truncated["rejection"], truncated["raw_payload"]) == (
        "bad_json", '{"event_type": "content_view", trunc')
    [wrong] = by_sequence(rows, put["wrong type"])
    assert wrong["rejection"] == "wrong_type" and json.loads(wrong["raw_payload"])["user_id"] == 7


def test_kpl_sub_records_share_their_sequence_number_with_their_index(
    rows: list[dict[str, Any]], put: dict[str, dict[str, Any]],
) -> None:
    sub_records = by_sequence(rows, put["aggregate"])
    assert [(row["event_id"], row["kinesis_sub_sequence"]) for row in sub_records] == [
        ("kpl-0", 0), ("kpl-1", 1), ("kpl-2", 2)]
    assert {row["kinesis_partition_key"] for row in sub_records} == {"user-kpl"}


def test_the_raw_tables_verdicts_are_the_processors_quarantine(
    platform: LocalPlatform, rows: list[dict[str, Any]],
) -> None:
    s3, bucket = platform.client("s3"), platform.offline_bucket()
    quarantined = set()
    for item in s3.list_objects_v2(Bucket=bucket, Prefix="quarantine/").get("Contents", []):
        for line in s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().splitlines():
            routed = json.loads(line)
            if routed["reason"] not in ("too_late", "item_too_large"):
                quarantined.add((routed["shard_id"], routed["sequence_number"],
                                 routed.get("sub_index", 0), routed["reason"]))
    refused = {(row["kinesis_shard_id"], row["kinesis_sequence_number"],
                row["kinesis_sub_sequence"], row["rejection"])
               for row in rows if row["rejection"] is not None}
    assert refused == quarantined and len(refused) == 3


def test_the_transformation_ran_as_the_templates_function(platform: LocalPlatform) -> None:
    (delivery,) = platform.deliveries
    assert delivery.spec.transform is not None
    assert delivery.stats.invocations >= 1 and delivery.stats.failed_invocations == 0
    service = {"service": "raw-events-transform", "environment": "dev"}
    assert platform.metrics.total("Fastbreak", "RawRecordsIn", service) == 8
    assert platform.metrics.total("Fastbreak", "RawRowsRejected", service) == 3


def documented_block() -> str:
    """The Python block of docs/local-platform.md that opens the demo's files."""
    text = (REPOSITORY / "docs" / "local-platform.md").read_text()
    section = text.split("## The offline store's files after a run", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_files_kept_on_disk_open_as_the_docs_show(
    platform: LocalPlatform, rows: list[dict[str, Any]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    destination = tmp_path / "demo-output" / "offline"
    (destination / "raw").mkdir(parents=True)
    (destination / "raw" / "from-the-last-run.parquet").write_bytes(b"stale")
    (destination / "notes.txt").write_text("mine")
    written = export_offline_store(platform.client("s3"), platform.offline_bucket(), destination)
    assert written["raw/"] >= 1 and written["quarantine/"] >= 1 and written["features/"] >= 1
    assert not (destination / "raw" / "from-the-last-run.parquet").exists()
    assert (destination / "notes.txt").read_text() == "mine", "only the exported prefixes"
    monkeypatch.chdir(tmp_path)
    exec(compile(documented_block(), "docs/local-platform.md", "exec"), {})
    shown = capsys.readouterr().out
    for expected in ("event_time_in_future", "bad_json", "wrong_type", "user_engagement",
                     "content_view"):
        assert expected in shown
