"""End to end on the embedded local platform, when things break: a poison record that crashes
the real processor is isolated by bisect and reaches the template's on-failure queue as
Lambda's failure record; a failing processor pages through the template's alarms and SNS topic,
and the all-clear follows the recovery."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from fastbreak_producer import Producer
from localplatform.platform import LocalPlatform, PlatformOptions

pytestmark = pytest.mark.e2e

# 60 s alarm periods last 2 s here; retries back off from 10 ms.
TIME_SCALE = 30.0


@pytest.fixture(scope="module")
def platform() -> Iterator[LocalPlatform]:
    options = PlatformOptions(alarm_time_scale=TIME_SCALE, retry_backoff_s=0.01,
                              retry_backoff_cap_s=0.05)
    with LocalPlatform(options) as running:
        yield running


def event(event_id: str, user: str = "user-f") -> dict[str, Any]:
    return {"event_type": "push_open", "schema_version": 1, "event_id": event_id,
            "event_time": datetime.now(UTC).isoformat(), "user_id": user,
            "campaign_id": "campaign-1"}


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def crash_on_poison(event: Mapping[str, Any]) -> None:
    if any("cG9pc29u" in record["kinesis"]["data"] for record in event["Records"]):
        raise RuntimeError("the handler crashes on this record")  # "poison" in base64


def test_a_poison_record_reaches_the_on_failure_queue_alone(platform: LocalPlatform) -> None:
    kinesis, sqs = platform.client("kinesis"), platform.client("sqs")
    platform.processor.fault = crash_on_poison
    try:
        producer = Producer(kinesis, platform.stream_name)
        for index in range(6):
            producer.send(event(f"before-{index}"))
        producer.flush()
        poison = kinesis.put_record(StreamName=platform.stream_name, PartitionKey="user-f",
                                    Data=b"poison")
        for index in range(6):
            producer.send(event(f"after-{index}"))
        producer.flush()
        assert platform.wait_until_processed(timeout=60)
    finally:
        platform.processor.fault = None
    messages = sqs.receive_message(QueueUrl=platform.on_failure_queue_url,
                                   MaxNumberOfMessages=10)["Messages"]
    (record,) = [json.loads(message["Body"]) for message in messages]
    batch = record["KinesisBatchInfo"]
    assert (batch["startSequenceNumber"], batch["endSequenceNumber"], batch["batchSize"]) == (
        poison["SequenceNumber"], poison["SequenceNumber"], 1)
    assert batch["shardId"] == poison["ShardId"]
    assert batch["streamArn"].endswith(f"/{platform.stream_name}")
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 11  # MaximumRetryAttempts 10
    # The mapping invokes the live alias: Lambda names the alias in the record, qualified.
    assert record["requestContext"]["functionArn"] == f"{platform.processor.spec.arn}:live"
    assert record["responseContext"]["functionError"] == "Unhandled"
    mapping = platform.events_mapping
    assert mapping.stats.records_discarded == {"RetryAttemptsExhausted": 1}
    assert mapping.stats.records_succeeded == 12


def test_a_failing_processor_pages_and_recovery_sends_the_all_clear(
    platform: LocalPlatform,
) -> None:
    assert platform.alarms is not None
    alarm = "Fastbreak-dev-ProcessorErrors"
    wait_for(lambda: platform.alarms and platform.alarms.states()[alarm] == "OK", 30,
             "the errors of the previous test to age out")
    platform.drain_pages()
    producer = Producer(platform.client("kinesis"), platform.stream_name)
    platform.processor.fault = crash_on_everything
    try:
        deadline = time.monotonic() + 30
        pages: list[dict[str, Any]] = []
        while not any(p["AlarmName"] == alarm and p["NewStateValue"] == "ALARM" for p in pages):
            assert time.monotonic() < deadline, f"no ALARM page; got {pages}"
            producer.send(event(f"down-{time.monotonic_ns()}"))
            producer.flush()
            pages += platform.drain_pages()
            time.sleep(0.3)
    finally:
        platform.processor.fault = None
    page = next(p for p in pages if p["AlarmName"] == alarm and p["NewStateValue"] == "ALARM")
    assert page["OldStateValue"] == "OK"
    assert page["Trigger"]["Namespace"] == "AWS/Lambda"
    assert page["Trigger"]["MetricName"] == "Errors"
    assert page["Trigger"]["Dimensions"] == [
        {"value": platform.processor.spec.name, "name": "FunctionName"}]
    assert "Runbook: docs/runbooks.md#processor-errors" in page["AlarmDescription"]
    all_clear = wait_for(
        lambda: [p for p in platform.drain_pages()
                 if p["AlarmName"] == alarm and p["NewStateValue"] == "OK"],
        30, "the OK page")
    assert all_clear[0]["OldStateValue"] == "ALARM"


def crash_on_everything(event: Mapping[str, Any]) -> None:
    raise ConnectionError("the online store does not answer")
