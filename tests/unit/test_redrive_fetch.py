"""Fetching a failed batch's records when the stream has already trimmed its start: Kinesis
refuses an iterator at a sequence number past the trim horizon (InvalidArgumentException), so
the redrive reads from the trim horizon and keeps what is left of the range. Kinesis's answers
are stubbed here (botocore's Stubber): moto never trims a stream."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
from botocore.stub import Stubber

from fastbreak_ops.redrive import FailedBatch, fetch_range

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/events"


def batch(start: int, end: int, size: int) -> FailedBatch:
    return FailedBatch("m-1", "r-1", "shardId-000000000000", str(start), str(end), size, ARN,
                       "arn:aws:lambda:us-east-1:123456789012:function:processor:live",
                       "RecordAgeExceeded", "")


def record(sequence: int) -> dict[str, object]:
    return {"SequenceNumber": str(sequence), "PartitionKey": "user-1", "Data": b"{}",
            "ApproximateArrivalTimestamp": datetime(2026, 11, 27, tzinfo=UTC)}


def test_a_range_whose_start_was_trimmed_is_read_from_the_trim_horizon() -> None:
    kinesis = boto3.client("kinesis", region_name="us-east-1", aws_access_key_id="x",
                           aws_secret_access_key="x")
    with Stubber(kinesis) as stub:
        stub.add_client_error("get_shard_iterator", "InvalidArgumentException",
                              expected_params={"StreamName": "events",
                                               "ShardId": "shardId-000000000000",
                                               "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                                               "StartingSequenceNumber": "30"})
        stub.add_response("get_shard_iterator", {"ShardIterator": "horizon"},
                          {"StreamName": "events", "ShardId": "shardId-000000000000",
                           "ShardIteratorType": "TRIM_HORIZON"})
        stub.add_response("get_records", {
            "Records": [record(50), record(60), record(70), record(80)],
            "NextShardIterator": "next", "MillisBehindLatest": 0,
        }, {"ShardIterator": "horizon", "Limit": 10_000})
        found = fetch_range(kinesis, batch(30, 70, 5))
        stub.assert_no_pending_responses()
    assert [r["SequenceNumber"] for r in found] == ["50", "60", "70"]


def test_reading_stops_at_the_end_of_the_range_across_pages() -> None:
    kinesis = boto3.client("kinesis", region_name="us-east-1", aws_access_key_id="x",
                           aws_secret_access_key="x")
    with Stubber(kinesis) as stub:
        stub.add_response("get_shard_iterator", {"ShardIterator": "at"})
        stub.add_response("get_records", {"Records": [record(10), record(20)],
                                          "NextShardIterator": "page-2",
                                          "MillisBehindLatest": 1000})
        stub.add_response("get_records", {"Records": [], "NextShardIterator": "page-3",
                                          "MillisBehindLatest": 500})
        stub.add_response("get_records", {"Records": [record(30), record(40)],
                                          "NextShardIterator": "page-4",
                                          "MillisBehindLatest": 0})
        found = fetch_range(kinesis, batch(10, 30, 3))
        stub.assert_no_pending_responses()
    assert [r["SequenceNumber"] for r in found] == ["10", "20", "30"]
