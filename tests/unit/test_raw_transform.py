"""The raw table's Firehose transformation: each record of a Firehose event becomes a row (the
processor's own verdict, the record's Kinesis position and arrival) with its hour as partition
keys; a refused record is kept as a row, and only an unreadable one fails, alone."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from fastbreak.definitions import CATALOG
from fastbreak.definitions.model import Catalog, Entity, EventSchema, Field, FieldType
from fastbreak.engine.admission import Admission
from fastbreak.engine.kpl import aggregate
from fastbreak.engine.records import UserRecord
from fastbreak.engine.rejections import Reason
from fastbreak.engine.timestamps import format_ms
from fastbreak.engine.validation import Event
from fastbreak.offline.raw import (
    PARTITION_KEYS,
    RawTableTransform,
    _size,
    partition_of,
    raw_columns,
)
from localplatform.firehose_events import (
    Answer,
    FirehoseRecord,
    read_answers,
    row_of,
    transformation_event,
    transformation_record,
    user_records,
)
from localplatform.kinesis_events import StreamRecord

ARRIVAL_MS = 1_795_717_800_000  # 2026-11-26T18:30:00Z
SHARD = "shardId-000000000003"
SEQUENCE = "49590338271490256608559692538361571095921575989136588898"
COLUMNS = {name for name, _ in raw_columns(CATALOG)}
# The form OpenX's JSON SerDe reads as a timestamp: yyyy-MM-dd'T'HH:mm:ss[.S]'Z'.
OPENX_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")

TRANSFORM = RawTableTransform(CATALOG)


def view(**overrides: object) -> dict[str, object]:
    return {"event_type": "content_view", "schema_version": 1, "event_id": "e-1",
            "event_time": "2026-11-26T17:59:59.250+00:00", "user_id": "user-1",
            "content_id": "article-1", "sport": "soccer", **overrides}


def stream_record(data: bytes, sequence: str = SEQUENCE) -> StreamRecord:
    return StreamRecord(sequence, "user-1", data, ARRIVAL_MS / 1000, SHARD)


def firehose_records(*payloads: bytes | dict[str, object]) -> list[FirehoseRecord]:
    records = []
    for offset, payload in enumerate(payloads):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        records += user_records(stream_record(data, str(int(SEQUENCE) + offset)))
    return records


def event_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"invocationId": "invocation-1", "region": "us-east-1",
            "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/raw",
            "sourceKinesisStreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/events",
            "records": records}


def run(records: list[FirehoseRecord],
        transform: RawTableTransform = TRANSFORM) -> list[Answer | str]:
    event = transformation_event(
        records, invocation_id="invocation-1", region="us-east-1",
        delivery_stream_arn="arn:aws:firehose:us-east-1:123456789012:deliverystream/raw",
        source_stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/events")
    response, _ = transform.transform(event)
    return read_answers(response, records)


def ok_row(answer: Answer | str) -> dict[str, Any]:
    assert isinstance(answer, Answer) and answer.result == "Ok", answer
    return row_of(answer)


def test_a_valid_event_is_a_row_as_the_processor_folds_it_partitioned_by_its_hour() -> None:
    [answer] = run(firehose_records(view()))
    row = ok_row(answer)
    assert (row["rejection"], row["raw_payload"]) == (None, None)
    assert row["schema_version"] == 1 and row["surface"] == "unknown", "upcast to v2"
    assert row["event_time"] == "2026-11-26T17:59:59.250Z"
    assert (row["kinesis_shard_id"], row["kinesis_sequence_number"], row["kinesis_sub_sequence"],
            row["kinesis_partition_key"]) == (SHARD, SEQUENCE, 0, "user-1")
    assert row["kinesis_arrival_time"] == format_ms(ARRIVAL_MS)
    assert isinstance(answer, Answer)
    assert answer.partition_keys == {"event_date": "2026-11-26", "event_hour": "17"}
    assert set(row) <= COLUMNS


def test_rows_are_what_the_openx_serde_converts_to_the_glue_columns() -> None:
    [answer] = run(firehose_records(view()))
    row = ok_row(answer)
    timestamps = [name for name, kind in raw_columns(CATALOG) if kind is FieldType.TIMESTAMP]
    assert all(OPENX_TIMESTAMP.fullmatch(row[name]) for name in timestamps)
    assert isinstance(answer, Answer) and answer.data is not None
    assert answer.data.endswith(b"\n") and answer.data.count(b"\n") == 1, "one JSON line"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", Reason.BAD_JSON),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (json.dumps({"event_type": "content_view"}).encode(), Reason.MISSING_ENVELOPE_FIELD),
    (json.dumps(view(event_type="page_view")).encode(), Reason.UNKNOWN_EVENT_TYPE),
    (json.dumps(view(schema_version=9)).encode(), Reason.UNKNOWN_SCHEMA_VERSION),
    (json.dumps(view(event_id="")).encode(), Reason.BAD_EVENT_ID),
    (json.dumps(view(event_time="2026-11-26 14:59")).encode(), Reason.BAD_EVENT_TIME),
    (json.dumps(view(event_time=format_ms(ARRIVAL_MS + 301_000))).encode(),
     Reason.EVENT_TIME_IN_FUTURE),
    (json.dumps(view(content_id=None)).encode(), Reason.MISSING_FIELD),
    (json.dumps(view(user_id=7)).encode(), Reason.WRONG_TYPE),
    (json.dumps(view(user_id="u" * 300)).encode(), Reason.BAD_ENTITY_KEY),
    (b"\xf3\x89\x9a\xc2 not a protobuf", Reason.KPL_CORRUPT),
])
def test_a_refused_record_is_kept_with_its_reason_and_bytes_in_its_arrival_hour(
    payload: bytes, reason: Reason,
) -> None:
    [answer] = run(firehose_records(payload))
    row = ok_row(answer)
    assert row["rejection"] == reason.value
    assert row["raw_payload"] == payload.decode("utf-8", "backslashreplace")
    assert row["kinesis_sequence_number"] == SEQUENCE
    assert "event_id" not in row and set(row) <= COLUMNS
    assert isinstance(answer, Answer)
    assert answer.partition_keys == partition_of(ARRIVAL_MS) == {
        "event_date": "2026-11-26", "event_hour": "18"}


def test_data_that_is_not_base64_is_kept_as_the_processor_refuses_it() -> None:
    [record] = firehose_records(view())
    raw = {**transformation_record(record), "data": "not*base64"}
    response, report = TRANSFORM.transform(event_of([raw]))
    [entry] = response["records"]
    row = json.loads(base64.b64decode(entry["data"]))
    assert (entry["result"], row["rejection"], row["raw_payload"]) == (
        "Ok", "bad_base64", "not*base64")
    assert report.rejected == {"bad_base64": 1}


def test_a_bug_in_validation_is_kept_as_unprocessable() -> None:
    class Broken(Admission):
        def __init__(self) -> None:
            super().__init__(CATALOG)
            self.validator.validate = self._explode  # type: ignore[method-assign]

        @staticmethod
        def _explode(record: UserRecord) -> Event:
            raise KeyError("surprise")

    [answer] = run(firehose_records(view()), RawTableTransform(CATALOG, admission=Broken()))
    assert ok_row(answer)["rejection"] == "unprocessable"


def test_kpl_sub_records_keep_their_parents_sequence_and_their_index() -> None:
    documents = [view(event_id=f"e-{index}") for index in range(3)]
    blob = aggregate("user-1", [json.dumps(document).encode() for document in documents])
    records = user_records(stream_record(blob))
    assert [record.sub_sequence for record in records] == [0, 1, 2]
    rows = [ok_row(answer) for answer in run(records)]
    assert [(row["event_id"], row["kinesis_sequence_number"], row["kinesis_sub_sequence"])
            for row in rows] == [("e-0", SEQUENCE, 0), ("e-1", SEQUENCE, 1), ("e-2", SEQUENCE, 2)]


@pytest.mark.parametrize("sub_sequence", ["", "2", 2])
def test_the_sub_sequence_number_is_read_in_each_form_firehose_sends(
    sub_sequence: object,
) -> None:
    [record] = firehose_records(view())
    raw = transformation_record(record)
    raw["kinesisRecordMetadata"]["subsequenceNumber"] = sub_sequence
    response, _ = TRANSFORM.transform(event_of([raw]))
    row = json.loads(base64.b64decode(response["records"][0]["data"]))
    assert row["kinesis_sub_sequence"] == (0 if sub_sequence == "" else 2)


def test_an_iso_arrival_time_in_the_metadata_is_read_as_the_documentation_shows_it() -> None:
    [record] = firehose_records(view())
    raw = transformation_record(record)
    raw["kinesisRecordMetadata"]["approximateArrivalTimestamp"] = "2026-11-26T18:30:00.000Z"
    response, _ = TRANSFORM.transform(event_of([raw]))
    row = json.loads(base64.b64decode(response["records"][0]["data"]))
    assert row["kinesis_arrival_time"] == format_ms(ARRIVAL_MS) and row["rejection"] is None


def test_a_record_without_kinesis_metadata_is_kept_without_a_position() -> None:
    [record] = firehose_records(view())
    raw = transformation_record(record)
    del raw["kinesisRecordMetadata"]
    response, report = TRANSFORM.transform(event_of([raw]))
    [entry] = response["records"]
    row = json.loads(base64.b64decode(entry["data"]))
    assert entry["result"] == "Ok" and row["rejection"] == "bad_kinesis_record"
    assert row["kinesis_shard_id"] is None and row["kinesis_sequence_number"] is None
    assert row["kinesis_arrival_time"] == format_ms(ARRIVAL_MS), "Firehose's own arrival time"
    assert json.loads(row["raw_payload"]) == view()
    assert entry["metadata"]["partitionKeys"] == partition_of(ARRIVAL_MS)
    assert report.rejected == {"bad_kinesis_record": 1}


@pytest.mark.parametrize("broken", [
    {"kinesisRecordMetadata": {"shardId": SHARD, "sequenceNumber": "12ab"}},
    {"kinesisRecordMetadata": {"shardId": "", "sequenceNumber": SEQUENCE}},
    {"kinesisRecordMetadata": {"shardId": SHARD, "sequenceNumber": SEQUENCE,
                               "subsequenceNumber": "first"}},
])
def test_unreadable_kinesis_metadata_makes_a_bad_kinesis_record_row(
    broken: dict[str, Any],
) -> None:
    [record] = firehose_records(view())
    raw = {**transformation_record(record), **broken}
    raw["kinesisRecordMetadata"]["approximateArrivalTimestamp"] = ARRIVAL_MS
    response, _ = TRANSFORM.transform(event_of([raw]))
    row = json.loads(base64.b64decode(response["records"][0]["data"]))
    assert row["rejection"] == "bad_kinesis_record" and row["kinesis_sequence_number"] is None


def test_a_record_with_no_arrival_time_at_all_fails_alone() -> None:
    records = firehose_records(view(event_id="a"), view(event_id="b"))
    raws = [transformation_record(record) for record in records]
    del raws[0]["kinesisRecordMetadata"], raws[0]["approximateArrivalTimestamp"]
    response, report = TRANSFORM.transform(event_of(raws))
    assert [entry["result"] for entry in response["records"]] == ["ProcessingFailed", "Ok"]
    assert response["records"][0] == {"recordId": records[0].record_id,
                                      "result": "ProcessingFailed"}
    assert (report.unreadable, report.rows) == (1, 1)


def test_a_poison_record_among_good_ones_fails_alone() -> None:
    class ExplodesOnE2(Admission):
        def admit(self, record: UserRecord) -> Event | Any:
            if b'"e-2"' in record.payload:
                raise MemoryError("boom")
            return super().admit(record)

    transform = RawTableTransform(CATALOG, admission=ExplodesOnE2(CATALOG))
    records = firehose_records(*(view(event_id=f"e-{index}") for index in range(5)))
    raws: list[Any] = [transformation_record(record) for record in records]
    raws.insert(1, "not a record")
    raws.insert(3, {"data": "e30="})  # no recordId
    response, report = transform.transform(event_of(raws))
    results = [entry["result"] for entry in response["records"]]
    assert results == ["Ok", "ProcessingFailed", "Ok", "ProcessingFailed", "ProcessingFailed",
                       "Ok", "Ok"]
    assert [entry["recordId"] for entry in response["records"] if entry["result"] == "Ok"] == [
        records[i].record_id for i in (0, 1, 3, 4)]
    assert (report.rows, report.unreadable) == (4, 3)
    assert len(report.errors) == 1 and "MemoryError" in report.errors[0]


def test_rows_past_the_response_limit_fail_and_the_response_stays_under_it() -> None:
    records = firehose_records(*(view(event_id=f"e-{index}") for index in range(40)))
    budget = 20_000
    event = event_of([transformation_record(record) for record in records])
    response, report = RawTableTransform(CATALOG, response_budget_bytes=budget).transform(event)
    results = [entry["result"] for entry in response["records"]]
    kept = results.count("Ok")
    assert 0 < kept < 40 and results == ["Ok"] * kept + ["ProcessingFailed"] * (40 - kept)
    assert len(json.dumps(response)) <= budget
    assert (report.rows, report.over_limit) == (kept, 40 - kept)
    assert [entry["recordId"] for entry in response["records"]] == [r.record_id for r in records]


def test_a_default_sized_batch_of_small_events_fits_the_response_limit() -> None:
    # Firehose buffers 1 MiB of record data before invoking the function (the construct's
    # setting); the rows, metadata and base64 must fit Lambda's 6 MB response.
    small = json.dumps(view(event_id="e", content_id="c", user_id="u", sport="s"),
                       separators=(",", ":")).encode()
    count = (1024 * 1024) // len(small)
    records = firehose_records(*([small] * 10))
    records = [record for record in records for _ in range(count // 10 + 1)]
    event = event_of([transformation_record(record) for record in records])
    response, report = TRANSFORM.transform(event)
    assert report.over_limit == 0 and report.rows == len(records)
    assert len(json.dumps(response)) < 6 * 1024 * 1024


def test_payload_timestamps_are_rewritten_to_the_form_openx_reads() -> None:
    catalog = Catalog(
        (Entity("user", "user_id"),),
        (EventSchema("reminder", 1, (Field("user_id", FieldType.STRING),
                                     Field("remind_at", FieldType.TIMESTAMP)),
                     {"user": "user_id"}),),
        (),
    )
    document = {"event_type": "reminder", "schema_version": 1, "event_id": "r-1",
                "event_time": "2026-11-26T14:00:00Z", "user_id": "u-1",
                "remind_at": "2026-11-26T20:30:00.5+05:30"}
    [answer] = run(firehose_records(document), RawTableTransform(catalog))
    assert ok_row(answer)["remind_at"] == "2026-11-26T15:00:00.500Z"


def test_partition_keys_are_the_tables_partition_columns() -> None:
    assert tuple(partition_of(ARRIVAL_MS)) == PARTITION_KEYS
    assert partition_of(-1) == {"event_date": "1969-12-31", "event_hour": "23"}


@pytest.mark.parametrize("answer", [
    {"recordId": "r-1", "result": "ProcessingFailed"},
    {"recordId": 'r"\\é', "result": "Ok", "data": "eyJhIjoxfQo=",
     "metadata": {"partitionKeys": {"event_date": "2026-11-26", "event_hour": "18"}}},
    {"recordId": "r-2", "result": "Ok", "data": "", "metadata": {"partitionKeys": {}}},
])
def test_an_answers_counted_size_is_its_size_in_the_response(answer: dict[str, Any]) -> None:
    assert _size(answer) == len(json.dumps(answer)) + len(", ")
