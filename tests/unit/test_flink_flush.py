"""What a Flink flush does, without a cluster: the records of a key through the audience stage's
own entry point, in each shard's order, failed positions retried, what still fails raised; the
keys; the job's settings; the application zip's layout."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bench.flink_audience_stage import partials_records
from fastbreak.definitions import CATALOG
from fastbreak.engine import AudienceMerger, MemorySink, OnlineStore, RetryPolicy
from fastbreak.engine.layout import state_json
from fastbreak_flink import package
from fastbreak_flink.flush import (
    Flusher,
    FlushFailed,
    PartialsRecord,
    entity_bucket,
    from_json_line,
    source_record,
    to_json_line,
)
from fastbreak_flink.settings import ZIP_ENTRY, ZIP_JAR, ZIP_PYTHON, JobSettings, as_properties
from localplatform.kinesis_events import StreamRecord, lambda_event
from localplatform.memory_dynamodb import MemoryDynamoDB, client_error


@pytest.fixture(scope="module")
def stream() -> list[StreamRecord]:
    return partials_records(400)


def _records(stream: list[StreamRecord]) -> list[PartialsRecord]:
    return [from_json_line(to_json_line(r.shard_id, r.sequence_number, int(r.arrival * 1000),
                                        r.data)) for r in stream]


def _merger(table: MemoryDynamoDB) -> AudienceMerger:
    store = OnlineStore(table, "online", RetryPolicy(sleep=lambda _: None), concurrency=1)
    return AudienceMerger(store, MemorySink(), CATALOG, clock_ms=lambda: 0)


def _items(table: MemoryDynamoDB) -> dict[tuple[str, str], Any]:
    """Each item's state and marks: what a runtime applied, not how often it wrote."""
    found = {}
    for key, item in table.items.items():
        state = item["state"].get("S", item["state"].get("B"))
        found[key] = (state if key[0].startswith("_dedup#") else json.loads(state_json(state)),
                      item.get("expires_at"), item["t"])
    return found


def _lambda_items(stream: list[StreamRecord]) -> dict[tuple[str, str], Any]:
    table = MemoryDynamoDB()
    merger = _merger(table)
    for shard in sorted({r.shard_id for r in stream}):
        records = [r for r in stream if r.shard_id == shard]
        for start in range(0, len(records), 100):
            result = merger.process(lambda_event(records[start:start + 100])["Records"])
            assert result.failed_sequence_numbers == []
    return _items(table)


def test_flushes_apply_what_the_lambda_stage_applies(stream: list[StreamRecord]) -> None:
    table = MemoryDynamoDB()
    flusher = Flusher(_merger(table))
    records = _records(stream)
    for start in range(0, len(records), 37):  # other boundaries than the Lambda batches
        flusher.flush(records[start:start + 37])
    assert _items(table) == _lambda_items(stream)


def test_a_flush_puts_each_shards_records_in_stream_order(stream: list[StreamRecord]) -> None:
    table = MemoryDynamoDB()
    report = Flusher(_merger(table)).flush(list(reversed(_records(stream))))
    assert report.attempts == 1 and report.partials == len(stream)
    assert _items(table) == _lambda_items(stream)


def test_a_flush_again_after_a_restart_writes_nothing_new(stream: list[StreamRecord]) -> None:
    table = MemoryDynamoDB()
    flusher = Flusher(_merger(table))
    flusher.flush(_records(stream))
    before = _items(table)
    again = flusher.flush(_records(stream)[: len(stream) // 2])  # re-delivered after a restore
    assert again.item_writes == 0
    assert _items(table) == before


class FailingUpdates(MemoryDynamoDB):
    """UpdateItem refused (a non-retryable error) for the first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def update_item(self, **request: Any) -> dict[str, Any]:
        if self.failures > 0:
            self.failures -= 1
            raise client_error("ValidationException", "UpdateItem")
        result: dict[str, Any] = super().update_item(**request)
        return result


def test_failed_positions_are_merged_again_in_the_same_flush(stream: list[StreamRecord]) -> None:
    table = FailingUpdates(failures=3)
    report = Flusher(_merger(table), pause=lambda _: True).flush(_records(stream))
    assert report.attempts == 2
    assert _items(table) == _lambda_items(stream)


def test_a_flush_that_keeps_failing_raises_naming_the_first_position(
        stream: list[StreamRecord]) -> None:
    table = FailingUpdates(failures=10**9)
    records = _records(stream)
    with pytest.raises(FlushFailed, match=r"after 3 attempts \(from sequence number \d+\)"):
        Flusher(_merger(table), attempts=3, pause=lambda _: True).flush(records)


def test_every_partial_of_an_entity_has_one_key(stream: list[StreamRecord]) -> None:
    keys: dict[str, set[int]] = {}
    for record, raw in zip(_records(stream), stream, strict=True):
        keys.setdefault(raw.partition_key, set()).add(entity_bucket(record, 8))
    assert all(len(found) == 1 for found in keys.values())
    assert len(set().union(*keys.values())) > 1  # and the entities spread over the buckets


def test_a_record_that_is_no_partial_goes_to_bucket_zero() -> None:
    record = from_json_line(to_json_line("shardId-000000000000", "42", 0, b"{not json"))
    assert entity_bucket(record, 8) == 0


def test_a_sequence_number_that_is_not_decimal_is_refused_naming_the_shard() -> None:
    with pytest.raises(ValueError, match="of shard shardId-000000000003 is not a decimal"):
        source_record(("shardId-000000000003", "12a", 0, ""), 0)


# ---- the job's settings -------------------------------------------------------------------------
def test_job_settings_parse_their_properties() -> None:
    settings = JobSettings.from_properties(as_properties(
        {"table_name": "t", "bucket_name": "b", "key_buckets": 16, "flush_interval_ms": 250}))
    assert (settings.key_buckets, settings.flush_interval_ms, settings.flush_max_records) == (
        16, 250, 2000)


def test_job_settings_refuse_an_unknown_key_and_a_bad_number() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['flush_every'\]"):
        JobSettings.from_properties({"table_name": "t", "bucket_name": "b", "flush_every": "1"})
    with pytest.raises(ValueError, match="key_buckets must be an integer, not 'many'"):
        JobSettings.from_properties({"table_name": "t", "bucket_name": "b",
                                     "key_buckets": "many"})
    with pytest.raises(ValueError, match=r"\['bucket_name'\] must be set"):
        JobSettings.from_properties({"table_name": "t"})


# ---- the application zip ------------------------------------------------------------------------
def test_the_zip_holds_the_entry_point_the_jar_the_job_and_the_engine(tmp_path: Path) -> None:
    jar = tmp_path / "connectors.jar"
    jar.write_bytes(b"PK\x05\x06" + bytes(18))
    deps = tmp_path / "deps"
    (deps / "boto3").mkdir(parents=True)
    (deps / "boto3" / "__init__.py").write_text("")
    built = package.build_zip(jar, tmp_path / "out" / "app.zip", deps)
    names = set(zipfile.ZipFile(built).namelist())
    assert {ZIP_ENTRY, ZIP_JAR, f"{ZIP_PYTHON}boto3/__init__.py",
            f"{ZIP_PYTHON}fastbreak_flink/job.py", f"{ZIP_PYTHON}fastbreak_flink/flush.py",
            f"{ZIP_PYTHON}fastbreak/engine/audience.py",
            f"{ZIP_PYTHON}fastbreak/definitions/catalog.py"} <= names
    assert not any(name.startswith((f"{ZIP_PYTHON}fastbreak/handlers",
                                    f"{ZIP_PYTHON}fastbreak/cli")) for name in names)
    assert f"{ZIP_PYTHON}fastbreak_flink/local.py" not in names


def test_the_zip_is_refused_without_the_connectors_jar(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no connectors jar"):
        package.build_zip(tmp_path / "missing.jar", tmp_path / "app.zip", tmp_path)


def test_the_zip_ships_the_boto3_the_tests_ran_with() -> None:
    pinned = (package.REPOSITORY / "requirements-flink.txt").read_text()
    assert package.boto3_requirement() in pinned.splitlines()
