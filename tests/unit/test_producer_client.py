"""The producer SDK: Kinesis limits, retries of failed records only, validation, keys, KPL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fastbreak.engine.kpl import deaggregate
from fastbreak_producer import Producer, ProducerConfig, SchemaError
from fastbreak_producer.batching import (
    MAX_RECORD_BYTES,
    OutgoingRecord,
    RecordTooLargeError,
    requests,
)


def view(event_id: str, user: str = "user-1") -> dict[str, Any]:
    return {"event_type": "content_view", "schema_version": 2, "event_id": event_id,
            "event_time": "2026-11-26T18:30:00.000Z", "user_id": user,
            "content_id": "content-1", "sport": "soccer", "surface": "home"}


class FakeKinesis:
    """PutRecords that fails the records whose event ids ``fail`` names, ``times`` times each."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.fail = dict(fail or {})
        self.calls: list[list[dict[str, Any]]] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Records)
        results = []
        for record in Records:
            event_id = json.loads(record["Data"])["event_id"]
            if self.fail.get(event_id, 0) > 0:
                self.fail[event_id] -= 1
                results.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "Rate exceeded for shard"})
            else:
                results.append({"SequenceNumber": "1", "ShardId": "shardId-000000000000"})
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedRecordCount": failed, "Records": results}

    def ids(self, call: int) -> list[str]:
        return [json.loads(r["Data"])["event_id"] for r in self.calls[call]]


def test_requests_hold_at_most_500_records() -> None:
    records = [OutgoingRecord("k", b"x") for _ in range(1200)]
    assert [len(request) for request in requests(records)] == [500, 500, 200]


def test_requests_hold_at_most_5_mib() -> None:
    big = OutgoingRecord("k", b"x" * (MAX_RECORD_BYTES - 1))
    assert [len(request) for request in requests([big] * 11)] == [5, 5, 1]


def test_a_record_over_1_mib_is_refused_with_its_size() -> None:
    with pytest.raises(RecordTooLargeError, match="over Kinesis's 1048576 bytes"):
        list(requests([OutgoingRecord("k", b"x" * MAX_RECORD_BYTES)]))


def test_only_the_failed_records_are_retried_in_order_with_jittered_backoff() -> None:
    kinesis = FakeKinesis({"e1": 1, "e3": 1})
    waits: list[float] = []
    with Producer(kinesis, "events", sleep=waits.append) as producer:
        for index in range(5):
            producer.send(view(f"e{index}"))
    assert kinesis.ids(0) == ["e0", "e1", "e2", "e3", "e4"]
    assert kinesis.ids(1) == ["e1", "e3"]
    assert producer.report.events_accepted == 5 and producer.report.retried_records == 2
    assert len(waits) == 1 and 0 <= waits[0] <= ProducerConfig().backoff_base_s * 2


def test_records_still_failing_after_the_last_attempt_are_reported() -> None:
    kinesis = FakeKinesis({"e0": 99})
    producer = Producer(kinesis, "events", ProducerConfig(max_attempts=3), sleep=lambda s: None)
    producer.send(view("e0"))
    producer.send(view("e1"))
    producer.flush()
    assert len(kinesis.calls) == 3
    assert producer.report.failed == [("e0", "ProvisionedThroughputExceededException")]
    assert producer.report.events_accepted == 1


def test_a_non_retryable_call_error_is_raised() -> None:
    class MissingStream:
        def put_records(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "ResourceNotFoundException"}}, "PutRecords")

    producer = Producer(MissingStream(), "nope")
    producer.send(view("e0"))
    with pytest.raises(ClientError):
        producer.flush()


def test_an_invalid_event_is_refused_before_sending_naming_the_field() -> None:
    kinesis = FakeKinesis()
    producer = Producer(kinesis, "events")
    event = view("e0")
    del event["content_id"]
    with pytest.raises(SchemaError, match="'content_id' is missing") as refused:
        producer.send(event)
    assert refused.value.reason == "missing_field"
    producer.flush()
    assert kinesis.calls == []


def test_events_are_partitioned_by_user_else_by_their_entity() -> None:
    kinesis = FakeKinesis()
    with Producer(kinesis, "events") as producer:
        producer.send(view("e0", user="user-42"))
        producer.send({"event_type": "score_update", "schema_version": 1, "event_id": "e1",
                       "event_time": "2026-11-26T18:30:00Z", "game_id": "game-7",
                       "home_score": 1, "away_score": 0, "period": 1, "clock_seconds": 60,
                       "status": "live"})
    assert [r["PartitionKey"] for r in kinesis.calls[0]] == ["user-42", "game-7"]


def test_kpl_aggregation_packs_one_partition_keys_events_into_one_record() -> None:
    sent: list[list[dict[str, Any]]] = []

    class Recorder:
        def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> Any:
            sent.append(Records)
            return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1"}] * len(Records)}

    with Producer(Recorder(), "events", ProducerConfig(aggregate=True)) as producer:
        for index in range(3):
            producer.send(view(f"a{index}", user="user-a"))
        producer.send(view("b0", user="user-b"))
    (records,) = sent
    assert [r["PartitionKey"] for r in records] == ["user-a", "user-b"]
    inner = [json.loads(payload)["event_id"] for payload in deaggregate(records[0]["Data"])]
    assert inner == ["a0", "a1", "a2"]
    assert producer.report.events_accepted == 4 and producer.report.records_sent == 2
