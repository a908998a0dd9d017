"""The redrive on the embedded local platform: batches that exhausted their retries reach the
template's on-failure queues as Lambda's failure records (the mapping emulator's), and
``python -m fastbreak_ops.redrive`` replays them through the real processor (or the real
audience stage, for its own queue): each event applied exactly once, messages deleted only after
success, losses (records past retention, items overtaken by later batches) reported and kept."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fastbreak_ops import redrive
from fastbreak_producer import Producer
from localplatform.aws_env import ACCOUNT, REGION
from localplatform.platform import LocalPlatform, PlatformOptions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform() -> Iterator[LocalPlatform]:
    options = PlatformOptions(retry_backoff_s=0.01, retry_backoff_cap_s=0.05)
    with LocalPlatform(options) as running:
        yield running


def view(event_id: str, user: str) -> dict[str, Any]:
    return {"event_type": "content_view", "schema_version": 2, "event_id": event_id,
            "event_time": datetime.now(UTC).isoformat(), "user_id": user,
            "content_id": f"content-{user}", "sport": "soccer", "surface": "home"}


def send(platform: LocalPlatform, events: list[dict[str, Any]]) -> None:
    producer = Producer(platform.client("kinesis"), platform.stream_name)
    for event in events:
        producer.send(event)
    producer.flush()
    assert platform.wait_until_processed(timeout=60)


def failing_for(user: str) -> Any:
    """A processor defect that fails every batch holding an event of ``user``."""
    marker = json.dumps(user)[1:-1]

    def fault(event: Mapping[str, Any]) -> None:
        import base64

        if any(marker in base64.b64decode(record["kinesis"]["data"]).decode()
               for record in event["Records"]):
            raise RuntimeError(f"this release fails on {user}")

    return fault


def views(platform: LocalPlatform, user: str, entity: str = "user",
          feature: str = "user_engagement.views_1h") -> int:
    assert platform.api is not None
    with urllib.request.urlopen(f"{platform.api.url}/v1/features/{entity}/{user}",
                                timeout=10) as r:
        body = json.loads(r.read())
    value = (body.get("features") or {}).get(feature) or {}
    return int(value.get("value") or 0)  # an entity with no features yet has none


def queued(platform: LocalPlatform, queue_url: str | None = None) -> list[dict[str, Any]]:
    """The queue's messages (the processor's by default), left visible."""
    sqs = platform.client("sqs")
    messages = sqs.receive_message(QueueUrl=queue_url or platform.on_failure_queue_url,
                                   MaxNumberOfMessages=10, VisibilityTimeout=0).get(
                                       "Messages", [])
    return messages


def run_redrive(platform: LocalPlatform, *args: str, queue_url: str | None = None) -> int:
    return redrive.main(["--queue-url", queue_url or platform.on_failure_queue_url,
                         "--endpoint-url", platform.endpoint_url, "--region", REGION,
                         "--retry-pause", "0", *args])


def fail_then_fix(platform: LocalPlatform, user: str, events: list[dict[str, Any]]) -> None:
    platform.processor.fault = failing_for(user)
    try:
        send(platform, events)
    finally:
        platform.processor.fault = None


def test_redrive_applies_failed_batches_exactly_once_and_empties_the_queue(
    platform: LocalPlatform, tmp_path: Path,
) -> None:
    user = "redrive-a"
    fail_then_fix(platform, user, [view(f"a-{index}", user) for index in range(5)]
                  + [view("bystander-1", "redrive-bystander")])
    failures = queued(platform)
    assert failures, "expected the failed batches in the on-failure queue"
    assert sum(json.loads(m["Body"])["KinesisBatchInfo"]["batchSize"] for m in failures) == 5
    assert views(platform, user) == 0
    assert views(platform, "redrive-bystander") == 1

    # A dry run changes nothing.
    assert run_redrive(platform, "--dry-run") == 0
    assert views(platform, user) == 0
    assert len(queued(platform)) == len(failures)

    # A standard queue keeps no order, and delivers at least once: the failure records come
    # back latest first, the first one twice. Every event must still count once.
    sqs = platform.client("sqs")
    for message in queued(platform):
        sqs.delete_message(QueueUrl=platform.on_failure_queue_url,
                           ReceiptHandle=message["ReceiptHandle"])
    ordered = sorted(failures, key=lambda m: int(json.loads(m["Body"])["KinesisBatchInfo"][
        "startSequenceNumber"]))
    for message in [*reversed(ordered), ordered[0]]:
        sqs.send_message(QueueUrl=platform.on_failure_queue_url, MessageBody=message["Body"])
    report = tmp_path / "redrive.json"
    assert run_redrive(platform, "--report", str(report)) == 0
    outcomes = json.loads(report.read_text())
    assert {outcome["status"] for outcome in outcomes} == {"redriven"}
    assert len(outcomes) == len(failures) + 1
    assert views(platform, user) == 5
    assert views(platform, "redrive-bystander") == 1
    assert queued(platform) == []
    assert run_redrive(platform) == 0  # an empty queue


def test_items_a_later_batch_overtook_are_reported_and_their_message_kept(
    platform: LocalPlatform, tmp_path: Path,
) -> None:
    user = "redrive-b"
    fail_then_fix(platform, user, [view("b-failed", user)])
    # The user is active again: a later batch of the same shard writes the user's items.
    send(platform, [view("b-later", user)])
    assert views(platform, user) == 1
    report = tmp_path / "overtaken.json"
    assert run_redrive(platform, "--report", str(report)) == 1
    (outcome,) = json.loads(report.read_text())
    assert outcome["status"] == "unrecoverable"
    assert ["user#redrive-b", "user_engagement"] in outcome["overtaken_items"]
    assert views(platform, user) == 1  # the failed event could not be applied
    assert len(queued(platform)) == 1  # kept, for on-call to note

    assert run_redrive(platform, "--delete-unrecoverable") == 0
    assert queued(platform) == []


def test_records_past_the_streams_retention_are_reported_not_replayed(
    platform: LocalPlatform, tmp_path: Path,
) -> None:
    user = "redrive-c"
    fail_then_fix(platform, user, [view("c-0", user)])
    (message,) = queued(platform)
    batch = json.loads(message["Body"])["KinesisBatchInfo"]
    # What Kinesis does once the retention period has passed: the shard drops the records.
    from moto.kinesis.models import kinesis_backends

    shard = kinesis_backends[ACCOUNT][REGION].streams[platform.stream_name].shards[
        batch["shardId"]]
    sequence = int(batch["startSequenceNumber"])
    expired = shard.records.pop(sequence)
    try:
        report = tmp_path / "expired.json"
        assert run_redrive(platform, "--report", str(report)) == 1
        (outcome,) = json.loads(report.read_text())
        assert (outcome["status"], outcome["records_found"],
                outcome["records_past_retention"]) == ("unrecoverable", 0, 1)
        assert views(platform, user) == 0
        assert len(queued(platform)) == 1
        assert run_redrive(platform, "--delete-unrecoverable") == 0
    finally:  # the shard's readers of the later tests find the records they have read
        shard.records[sequence] = expired


def test_a_message_that_is_not_a_failure_record_is_kept_and_reported(
    platform: LocalPlatform, tmp_path: Path,
) -> None:
    sqs = platform.client("sqs")
    sqs.send_message(QueueUrl=platform.on_failure_queue_url, MessageBody='{"hello": 1}')
    report = tmp_path / "invalid.json"
    assert run_redrive(platform, "--report", str(report)) == 1
    (outcome,) = json.loads(report.read_text())
    assert outcome["status"] == "invalid message"
    assert "not a Kinesis on-failure record" in outcome["detail"]
    (message,) = queued(platform)
    sqs.delete_message(QueueUrl=platform.on_failure_queue_url,
                       ReceiptHandle=message["ReceiptHandle"])


def test_the_audience_stages_failed_batches_are_redriven_through_its_own_code(
    platform: LocalPlatform, tmp_path: Path,
) -> None:
    content = "content-redrive-d"
    events = [dict(view(f"d-{index}", f"fan-d{index}"), content_id=content)
              for index in range(4)]
    platform.audience_stage.fault = failing_for(content)  # the merge of its partials fails
    try:
        send(platform, events)
    finally:
        platform.audience_stage.fault = None
    queue = platform.audience_on_failure_queue_url
    failures = queued(platform, queue)
    assert failures and queued(platform) == []  # stage 1 applied everything it had to
    assert views(platform, "fan-d0") == 1
    trending = ("content", "content_trending.views_1h")
    assert views(platform, content, *trending) == 0
    info = json.loads(failures[0]["Body"])["KinesisBatchInfo"]
    assert info["streamArn"].endswith(f"/{platform.partials_stream_name}")

    report = tmp_path / "audience.json"
    assert run_redrive(platform, "--report", str(report), queue_url=queue) == 0
    assert {outcome["status"] for outcome in json.loads(report.read_text())} == {"redriven"}
    assert views(platform, content, *trending) == 4
    assert queued(platform, queue) == []
    # A second copy of the same failure record (SQS delivers at least once) changes nothing.
    platform.client("sqs").send_message(QueueUrl=queue, MessageBody=failures[0]["Body"])
    assert run_redrive(platform, queue_url=queue) == 0
    assert views(platform, content, *trending) == 4
