"""Lambda's Kinesis event source mapping semantics, as the local platform emulates them.

The emulator is the unit under test: the function is a fake that records what it was given.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from localplatform.kinesis_events import EventSource, StreamRecord
from localplatform.mapping_emulator import BatchDelivery, Condition, MappingSettings

SOURCE = EventSource(
    stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/events",
    function_arn="arn:aws:lambda:us-east-1:123456789012:function:processor",
    invoke_identity_arn="arn:aws:iam::123456789012:role/processor",
    region="us-east-1",
)
NOW = 1_800_000_000.0


def records(count: int, *, first: int = 100, arrival: float = NOW - 1) -> list[StreamRecord]:
    return [
        StreamRecord(str(first + i), f"user-{i}", f"r{i}".encode(), arrival + i * 0.001,
                     "shardId-000000000000")
        for i in range(count)
    ]


class FakeFunction:
    """Records each batch's sequence numbers; ``respond`` decides the outcome."""

    def __init__(self, respond: Callable[[list[str]], Any] = lambda sequences: None) -> None:
        self.respond = respond
        self.batches: list[list[str]] = []
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> Any:
        sequences = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        self.batches.append(sequences)
        self.events.append(event)
        return self.respond(sequences)


def delivery(
    function: FakeFunction, sent: list[dict[str, Any]], **settings: Any
) -> BatchDelivery:
    defaults: dict[str, Any] = {"report_batch_item_failures": True, "retry_backoff_s": 0.0}
    return BatchDelivery(
        MappingSettings(**{**defaults, **settings}), SOURCE, function, sent.append,
        clock=lambda: NOW, sleep=lambda seconds: None,
    )


def fail_on(poison: set[str]) -> Callable[[list[str]], Any]:
    def respond(sequences: list[str]) -> Any:
        if poison & set(sequences):
            raise RuntimeError("poison")
        return None

    return respond


def test_event_has_the_shape_lambda_delivers() -> None:
    function = FakeFunction()
    report = delivery(function, []).deliver(records(2))
    record = function.events[0]["Records"][1]
    assert report.succeeded == 2 and report.invocations == 1
    assert record == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "user-1",
            "sequenceNumber": "101",
            "data": base64.b64encode(b"r1").decode(),
            "approximateArrivalTimestamp": pytest.approx(NOW - 1 + 0.001),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000000:101",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": SOURCE.invoke_identity_arn,
        "awsRegion": "us-east-1",
        "eventSourceARN": SOURCE.stream_arn,
    }


def test_partial_failure_checkpoints_at_the_lowest_failed_sequence_number() -> None:
    calls = iter([["104", "102"], []])  # listed out of order on purpose
    function = FakeFunction(
        lambda sequences: {"batchItemFailures": [{"itemIdentifier": s} for s in next(calls)]}
    )
    report = delivery(function, []).deliver(records(6))
    assert function.batches == [
        ["100", "101", "102", "103", "104", "105"],
        ["102", "103", "104", "105"],
    ]
    assert report.succeeded == 6 and report.partial_failures == 1


@pytest.mark.parametrize(
    "failure",
    [{"itemIdentifier": ""}, {"itemIdentifier": None}, {"id": "102"}, {"itemIdentifier": "999"}],
    ids=["empty", "null", "bad-key", "not-in-batch"],
)
def test_malformed_item_identifier_fails_the_whole_batch(failure: dict[str, Any]) -> None:
    calls = iter([{"batchItemFailures": [failure]}, None])
    function = FakeFunction(lambda sequences: next(calls))
    delivery(function, []).deliver(records(4))
    assert function.batches == [["100", "101", "102", "103"]] * 2


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []},
                                      {"batchItemFailures": None}])
def test_empty_or_missing_failures_mean_success(response: Any) -> None:
    function = FakeFunction(lambda sequences: response)
    report = delivery(function, []).deliver(records(3))
    assert report.succeeded == 3 and len(function.batches) == 1


def test_response_is_ignored_without_report_batch_item_failures() -> None:
    function = FakeFunction(lambda s: {"batchItemFailures": [{"itemIdentifier": s[0]}]})
    report = delivery(function, [], report_batch_item_failures=False).deliver(records(3))
    assert report.succeeded == 3 and len(function.batches) == 1


def test_bisect_isolates_a_poison_record_and_discards_only_it() -> None:
    function = FakeFunction(fail_on({"105"}))
    sent: list[dict[str, Any]] = []
    report = delivery(function, sent, bisect_on_error=True, max_retry_attempts=10).deliver(
        records(8)
    )
    assert report.succeeded == 7
    assert report.discarded == {Condition.RETRIES_EXHAUSTED: 1}
    assert [m["KinesisBatchInfo"]["startSequenceNumber"] for m in sent] == ["105"]
    # Records before the poison record are invoked before any record after it (shard order).
    delivered_ok = [s for batch in function.batches if "105" not in batch for s in batch]
    assert delivered_ok == ["100", "101", "102", "103", "104", "106", "107"]


def test_retries_exhausted_sends_lambdas_on_failure_record() -> None:
    function = FakeFunction(fail_on({"100"}))
    sent: list[dict[str, Any]] = []
    report = delivery(function, sent, max_retry_attempts=2).deliver(records(3))
    assert len(function.batches) == 3  # the first try and two retries
    assert report.discarded == {Condition.RETRIES_EXHAUSTED: 3}
    (message,) = sent
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["requestContext"]["functionArn"] == SOURCE.function_arn
    assert message["responseContext"] == {
        "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"
    }
    assert message["version"] == "1.0"
    assert message["KinesisBatchInfo"] == {
        "shardId": "shardId-000000000000",
        "startSequenceNumber": "100",
        "endSequenceNumber": "102",
        "approximateArrivalOfFirstRecord": "2027-01-15T07:59:59.000Z",
        "approximateArrivalOfLastRecord": "2027-01-15T07:59:59.002Z",
        "batchSize": 3,
        "streamArn": SOURCE.stream_arn,
    }


def test_retries_wait_with_exponential_backoff_up_to_the_cap() -> None:
    waits: list[float] = []
    function = FakeFunction(fail_on({"100"}))
    BatchDelivery(
        MappingSettings(max_retry_attempts=5, retry_backoff_s=1.0, retry_backoff_cap_s=5.0),
        SOURCE, function, None, clock=lambda: NOW, sleep=waits.append,
    ).deliver(records(1))
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_records_older_than_the_maximum_age_are_discarded_without_invoking() -> None:
    function = FakeFunction()
    sent: list[dict[str, Any]] = []
    old = records(2, first=100, arrival=NOW - 120)
    fresh = records(2, first=102, arrival=NOW - 1)
    report = delivery(function, sent, max_record_age_s=60).deliver(old + fresh)
    assert function.batches == [["102", "103"]]
    assert report.discarded == {Condition.RECORD_AGE_EXCEEDED: 2}
    assert sent[0]["requestContext"]["condition"] == "RecordAgeExceeded"
    assert sent[0]["requestContext"]["approximateInvokeCount"] == 0
    assert "functionError" not in sent[0]["responseContext"]
    assert (sent[0]["KinesisBatchInfo"]["startSequenceNumber"],
            sent[0]["KinesisBatchInfo"]["endSequenceNumber"]) == ("100", "101")


def test_records_that_age_out_while_retrying_are_discarded() -> None:
    clock = [NOW]

    def respond(sequences: list[str]) -> Any:
        clock[0] += 40  # each failed try takes the shard 40 s further
        raise RuntimeError("down")

    function = FakeFunction(respond)
    sent: list[dict[str, Any]] = []
    report = BatchDelivery(
        MappingSettings(max_record_age_s=60, retry_backoff_s=0.0), SOURCE, function,
        sent.append, clock=lambda: clock[0], sleep=lambda seconds: None,
    ).deliver(records(2))
    assert len(function.batches) == 2
    assert report.discarded == {Condition.RECORD_AGE_EXCEEDED: 2}
    assert sent[0]["requestContext"]["approximateInvokeCount"] == 2


def test_settings_come_from_the_templates_event_source_mapping() -> None:
    settings = MappingSettings.from_template(
        {
            "BatchSize": 1000, "BisectBatchOnFunctionError": True,
            "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:r:1:q"}},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "MaximumBatchingWindowInSeconds": 1, "MaximumRecordAgeInSeconds": 21600,
            "MaximumRetryAttempts": 10, "ParallelizationFactor": 2,
            "StartingPosition": "TRIM_HORIZON",
        }
    )
    assert settings == MappingSettings(
        batch_size=1000, batching_window_s=1.0, parallelization_factor=2, bisect_on_error=True,
        report_batch_item_failures=True, max_retry_attempts=10, max_record_age_s=21600.0,
        starting_position="TRIM_HORIZON", destination_arn="arn:aws:sqs:r:1:q",
    )
