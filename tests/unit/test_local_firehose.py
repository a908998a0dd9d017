"""The emulated Firehose: its reading of the template (partition query, prefixes), the OpenX
conversion rules, and how it applies a transformation Lambda's answers, record by record."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from fastbreak.definitions import CATALOG
from fastbreak.engine.kpl import aggregate
from fastbreak.offline.raw import RawTableTransform, raw_columns
from localplatform.firehose import (
    LAMBDA_RESPONSE_LIMIT_BYTES,
    ConversionError,
    DeliverySpec,
    FirehoseDelivery,
    TransformSpec,
    UnsupportedDeliveryError,
    _transform_spec,
    arrow_schema,
    compile_partition_query,
    openx_value,
    render_prefix,
)
from localplatform.kinesis_events import StreamRecord
from localplatform.lambda_runtime import FunctionError
from localplatform.metrics import MetricStore

QUERY = "{event_date: .event_time[0:10], event_hour: .event_time[11:13]}"
QUERY_PREFIX = ("raw/event_date=!{partitionKeyFromQuery:event_date}/"
                "event_hour=!{partitionKeyFromQuery:event_hour}/")
LAMBDA_PREFIX = ("raw/event_date=!{partitionKeyFromLambda:event_date}/"
                 "event_hour=!{partitionKeyFromLambda:event_hour}/")
ERROR_PREFIX = "raw-errors/!{firehose:error-output-type}/!{timestamp:yyyy-MM-dd}/"
BUCKET = "offline"
ARRIVAL_S = 1_795_717_800.0  # 2026-11-26T18:30:00Z


def test_the_partition_query_slices_the_event_time() -> None:
    extract = compile_partition_query(QUERY)
    assert extract({"event_time": "2026-11-26T18:30:00.123Z"}) == {
        "event_date": "2026-11-26", "event_hour": "18"}


@pytest.mark.parametrize("document", [{}, {"event_time": 17}, {"event_time": "2026-11"}])
def test_a_record_without_the_partition_fields_has_no_partition(
    document: dict[str, object],
) -> None:
    assert compile_partition_query(QUERY)(document) is None


def test_a_query_the_emulator_cannot_evaluate_is_refused() -> None:
    with pytest.raises(UnsupportedDeliveryError):
        compile_partition_query("{day: .event_time | split(\"T\")[0]}")


def test_prefixes_render_partition_keys_error_types_and_timestamps() -> None:
    now = datetime(2026, 11, 26, 18, 5, tzinfo=UTC)
    keys = {"event_date": "2026-11-26", "event_hour": "17"}
    assert render_prefix(QUERY_PREFIX, {"Query": keys}, now) == (
        "raw/event_date=2026-11-26/event_hour=17/")
    assert render_prefix(LAMBDA_PREFIX, {"Lambda": keys}, now) == (
        "raw/event_date=2026-11-26/event_hour=17/")
    assert render_prefix(LAMBDA_PREFIX, {"Query": keys}, now) is None, "keys of the other source"
    assert render_prefix(LAMBDA_PREFIX, {"Lambda": {"event_date": "2026-11-26"}}, now) is None
    assert render_prefix(ERROR_PREFIX, {}, now, "processing-failed") == (
        "raw-errors/processing-failed/2026-11-26/")


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-26T18:30:00.123Z", datetime(2026, 11, 26, 18, 30, 0, 123000, tzinfo=UTC)),
    ("2017-02-07T15:13:01.39256Z", datetime(2017, 2, 7, 15, 13, 1, 392000, tzinfo=UTC)),
    ("2017-2-7 15:13:01.14", datetime(2017, 2, 7, 15, 13, 1, 140000, tzinfo=UTC)),
    (1518033528, datetime(2018, 2, 7, 19, 58, 48, tzinfo=UTC)),
    (1518033528123, datetime(2018, 2, 7, 19, 58, 48, 123000, tzinfo=UTC)),
    (1518033528.5, datetime(2018, 2, 7, 19, 58, 48, 500000, tzinfo=UTC)),
])
def test_timestamps_in_the_forms_the_openx_serde_reads_convert(
    value: object, expected: datetime,
) -> None:
    epoch_ms = openx_value(value, arrow_schema([("t", "timestamp")]).field("t").type)
    assert epoch_ms == round(expected.timestamp() * 1000)


@pytest.mark.parametrize(("value", "glue_type"), [
    ("2026-11-26T18:30:00+00:00", "timestamp"),  # an offset, not 'Z'
    ("2026-11-26", "timestamp"),
    (7, "string"),
    (2**63, "bigint"),
    (True, "bigint"),
    ("1.5", "double"),
])
def test_values_the_openx_serde_would_not_convert_are_refused(
    value: object, glue_type: str,
) -> None:
    with pytest.raises(ConversionError):
        openx_value(value, arrow_schema([("c", glue_type)]).field("c").type)


# ---- the Lambda processor -----------------------------------------------------------------
def spec(**transform: Any) -> DeliverySpec:
    settings = {"lambda_arn": "arn:aws:lambda:us-east-1:123456789012:function:transform",
                "buffer_bytes": 1024 * 1024, "buffer_seconds": 60.0, "retries": 3, **transform}
    return DeliverySpec(
        name="raw-delivery", stream_name="events",
        stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/events", bucket=BUCKET,
        prefix=LAMBDA_PREFIX, error_prefix=ERROR_PREFIX, buffer_bytes=64 * 1024 * 1024,
        buffer_seconds=300.0, transform=TransformSpec(**settings), partition_query=None,
        schema=arrow_schema((name, kind.glue_type) for name, kind in raw_columns(CATALOG)),
    )


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def view(event_id: str, **overrides: object) -> bytes:
    return json.dumps({"event_type": "content_view", "schema_version": 2,
                       "event_id": event_id, "event_time": "2026-11-26T17:59:00.000Z",
                       "user_id": "user-1", "content_id": "c-1", "sport": "soccer",
                       "surface": "home", **overrides}).encode()


def stream(*payloads: bytes) -> list[StreamRecord]:
    return [StreamRecord(str(10**55 + index), "user-1", payload, ARRIVAL_S,
                         "shardId-000000000000") for index, payload in enumerate(payloads)]


def the_transform(event: Mapping[str, Any]) -> Any:
    return RawTableTransform(CATALOG).transform(event)[0]


def run(delivery: FirehoseDelivery, records: list[StreamRecord]) -> None:
    delivery._accept(records)  # what a shard reader hands over
    delivery.flush(force=True)


def parquet_rows(s3: Any, prefix: str = "raw/") -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        folder = item["Key"].rsplit("/", 1)[0]
        found.setdefault(folder, []).extend(pq.read_table(io.BytesIO(body)).to_pylist())
    return found


def errors(s3: Any, error_type: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for item in s3.list_objects_v2(Bucket=BUCKET,
                                   Prefix=f"raw-errors/{error_type}/").get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        lines.extend(json.loads(line) for line in body.splitlines())
    return lines


def test_the_functions_rows_land_in_the_partitions_it_names_as_parquet(s3: Any) -> None:
    delivery = FirehoseDelivery(spec(), None, s3, MetricStore(), invoke=the_transform)
    run(delivery, stream(view("a"), b"{truncated", view("b")))
    found = parquet_rows(s3)
    assert sorted(found) == ["raw/event_date=2026-11-26/event_hour=17",
                             "raw/event_date=2026-11-26/event_hour=18"]
    valid = found["raw/event_date=2026-11-26/event_hour=17"]
    assert [row["event_id"] for row in valid] == ["a", "b"]
    assert valid[0]["kinesis_sequence_number"] == str(10**55)
    assert valid[0]["kinesis_arrival_time"] == datetime(2026, 11, 26, 18, 30, tzinfo=UTC)
    [refused] = found["raw/event_date=2026-11-26/event_hour=18"]
    assert (refused["rejection"], refused["raw_payload"]) == ("bad_json", "{truncated")
    assert (delivery.stats.records_in, delivery.stats.records_delivered) == (3, 3)


def test_kpl_aggregates_reach_the_function_as_single_user_records(s3: Any) -> None:
    seen: list[int] = []

    def recording(event: Mapping[str, Any]) -> Any:
        seen.extend(r["kinesisRecordMetadata"]["subsequenceNumber"] for r in event["records"])
        return the_transform(event)

    delivery = FirehoseDelivery(spec(), None, s3, MetricStore(), invoke=recording)
    run(delivery, stream(aggregate("user-1", [view("a"), view("b"), view("c")])))
    assert seen == [0, 1, 2]
    [rows] = parquet_rows(s3).values()
    assert [(row["event_id"], row["kinesis_sub_sequence"]) for row in rows] == [
        ("a", 0), ("b", 1), ("c", 2)]


def test_dropped_records_vanish_and_failed_ones_are_kept_with_their_data(s3: Any) -> None:
    def answers(event: Mapping[str, Any]) -> Any:
        ok, dropped, failed = the_transform(event)["records"]
        return {"records": [ok, {**dropped, "result": "Dropped"},
                            {"recordId": failed["recordId"], "result": "ProcessingFailed"}]}

    delivery = FirehoseDelivery(spec(), None, s3, MetricStore(), invoke=answers)
    run(delivery, stream(view("a"), view("b"), view("c")))
    [rows] = parquet_rows(s3).values()
    assert [row["event_id"] for row in rows] == ["a"]
    [failed] = errors(s3, "processing-failed")
    assert base64.b64decode(failed["rawData"]) == view("c")
    assert failed["errorCode"] == "Lambda.ProcessingFailed"
    assert (delivery.stats.records_dropped, delivery.stats.records_failed) == (1, 1)


def test_an_answer_missing_for_a_record_fails_that_record_only(s3: Any) -> None:
    def forgets_the_second(event: Mapping[str, Any]) -> Any:
        first, _, third = the_transform(event)["records"]
        return {"records": [first, third]}

    delivery = FirehoseDelivery(spec(), None, s3, MetricStore(), invoke=forgets_the_second)
    run(delivery, stream(view("a"), view("b"), view("c")))
    [rows] = parquet_rows(s3).values()
    assert [row["event_id"] for row in rows] == ["a", "c"]
    assert [e["errorCode"] for e in errors(s3, "processing-failed")] == [
        "Lambda.InvalidResponse"]


def test_a_failing_function_is_retried_then_its_batch_is_kept_under_the_error_prefix(
    s3: Any,
) -> None:
    calls = []

    def failing(event: Mapping[str, Any]) -> Any:
        calls.append(1)
        raise FunctionError("Unhandled", "down")

    delivery = FirehoseDelivery(spec(retries=2), None, s3, MetricStore(), invoke=failing)
    run(delivery, stream(view("a"), view("b")))
    assert len(calls) == 3, "the first try and NumberOfRetries retries"
    assert [base64.b64decode(e["rawData"]) for e in errors(s3, "processing-failed")] == [
        view("a"), view("b")]
    assert not parquet_rows(s3)


def test_a_function_that_recovers_within_its_retries_delivers_everything(s3: Any) -> None:
    calls = []

    def flaky(event: Mapping[str, Any]) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise FunctionError("Unhandled", "throttled")
        return the_transform(event)

    delivery = FirehoseDelivery(spec(), None, s3, MetricStore(), invoke=flaky)
    run(delivery, stream(view("a"), view("b")))
    assert sum(len(rows) for rows in parquet_rows(s3).values()) == 2
    assert not errors(s3, "processing-failed")


def test_a_response_over_lambdas_6_mb_fails_the_invocation(s3: Any) -> None:
    def oversized(event: Mapping[str, Any]) -> Any:
        return {"records": [{"recordId": r["recordId"], "result": "Ok",
                             "data": "A" * LAMBDA_RESPONSE_LIMIT_BYTES}
                            for r in event["records"]]}

    delivery = FirehoseDelivery(spec(retries=1), None, s3, MetricStore(), invoke=oversized)
    run(delivery, stream(view("a")))
    assert delivery.stats.failed_invocations == 2
    assert [e["errorCode"] for e in errors(s3, "processing-failed")] == ["Lambda.FunctionError"]


def test_a_row_that_does_not_convert_fails_alone_with_its_position(s3: Any) -> None:
    def wrong_type_for_one(event: Mapping[str, Any]) -> Any:
        response = the_transform(event)
        entry = response["records"][1]
        row = json.loads(base64.b64decode(entry["data"]))
        entry["data"] = base64.b64encode(json.dumps({**row, "position": "first"}).encode()
                                         ).decode()
        return response

    delivery = FirehoseDelivery(spec(), None, s3, MetricStore(), invoke=wrong_type_for_one)
    run(delivery, stream(view("a"), view("b"), view("c")))
    [rows] = parquet_rows(s3).values()
    assert [row["event_id"] for row in rows] == ["a", "c"]
    [failed] = errors(s3, "format-conversion-failed")
    assert (failed["sequenceNumber"], failed["subSequenceNumber"]) == (str(10**55 + 1), 0)


def test_the_function_waits_for_its_buffer_size_or_interval(s3: Any) -> None:
    calls: list[int] = []

    def counting(event: Mapping[str, Any]) -> Any:
        calls.append(len(event["records"]))
        return the_transform(event)

    delivery = FirehoseDelivery(spec(buffer_bytes=len(view("a")) * 3), None, s3, MetricStore(),
                                invoke=counting)
    delivery._accept(stream(view("a"), view("b")))
    assert calls == [], "under the buffer size and inside the interval"
    delivery._accept(stream(view("c"), view("d"), view("e"), view("f")))
    assert calls == [3, 3], "full buffers go at once, each at most the buffer size"
    delivery.flush(force=False)
    assert calls == [3, 3]
    delivery.flush(force=True)
    assert sum(calls) == 6


def test_a_lambda_processor_without_parameters_gets_firehoses_defaults() -> None:
    assert _transform_spec([]) is None
    parsed = _transform_spec([{"Type": "Lambda", "Parameters": [
        {"ParameterName": "LambdaArn", "ParameterValue": "arn:fn"}]}])
    assert parsed == TransformSpec("arn:fn", 1024 * 1024, 60.0, 3), "Firehose's defaults"
