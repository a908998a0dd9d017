"""The stream processor handler (and the audience stage's, on what it emits) through their
public entry points, on AWS-shaped Kinesis events kept as fixtures, with DynamoDB, S3 and
Kinesis from moto (in process) and the real cold starts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fastbreak.definitions import CATALOG
from fastbreak.handlers import audience_stage, stream_processor
from fastbreak.serving import FeatureClient
from localplatform.lambda_context import LambdaContext
from localplatform.stores import StreamTail, create_feature_stores, create_partials_stream

EVENTS = Path(__file__).parent.parent / "fixtures" / "events"
TABLE, BUCKET, PARTIALS = "fastbreak-online", "fastbreak-offline", "fastbreak-partials"
AS_OF = 1_795_717_900_123  # the fixtures' arrival time


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "ONLINE_TABLE_NAME": TABLE,
        "OFFLINE_BUCKET_NAME": BUCKET, "POWERTOOLS_TRACE_DISABLED": "1",
        "PARTIALS_STREAM_NAME": PARTIALS,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(stream_processor, "_processor", None)  # a cold start per test
    monkeypatch.setattr(audience_stage, "_merger", None)
    with mock_aws():
        dynamodb, s3 = boto3.client("dynamodb"), boto3.client("s3")
        create_feature_stores(dynamodb, s3, table=TABLE, bucket=BUCKET)
        create_partials_stream(boto3.client("kinesis"), PARTIALS)
        yield dynamodb, s3


def run_audience_stage() -> list[dict[str, Any]]:
    """The audience stage's handler on every partial emitted since the last call."""
    tail = _tails.setdefault(PARTIALS, StreamTail(boto3.client("kinesis"), PARTIALS))
    return [audience_stage.handler(event, LambdaContext()) for event in tail.events()]


_tails: dict[str, StreamTail] = {}


@pytest.fixture(autouse=True)
def _fresh_tail() -> None:
    _tails.clear()


def read(dynamodb: Any, group: str, key: str) -> dict[str, Any]:
    """One group's served values, read as the API reads them once the audience stage has merged
    what stage 1 emitted (None: no event in the window)."""
    assert all(response == {"batchItemFailures": []} for response in run_audience_stage())
    served = FeatureClient(dynamodb, TABLE, clock_ms=lambda: AS_OF).get(
        CATALOG.group(group).entity, key, [group]).features
    return {name.split(".", 1)[1]: None if value is None else value.value
            for name, value in served.items()}


def objects(s3: Any, prefix: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        lines.extend(json.loads(line) for line in body.splitlines())
    return lines


def emf(output: str) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith('{"_aws"'):
            blob = json.loads(line)
            if "reason" not in blob:
                for definition in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                    metrics[definition["Name"]] = blob[definition["Name"]][0]
    return metrics


def test_a_valid_batch_updates_every_group_and_logs_features(
    aws: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    dynamodb, s3 = aws
    response = stream_processor.handler(fixture("kinesis_valid_batch.json"), LambdaContext())
    assert response == {"batchItemFailures": []}
    metrics = emf(capsys.readouterr().out)  # stage 1's
    assert metrics["RecordsIn"] == 8 and metrics["RecordsValid"] == 8
    # one partial per game and content the batch touched
    assert metrics["PartialsEmitted"] == 4 and metrics["ItemWrites"] == 3
    fan = read(dynamodb, "user_engagement", "fan-42")
    assert (fan["views_1h"], fan["clicks_1h"], fan["watch_seconds_1h"]) == (2, 1, 95.5)
    assert fan["push_opens_7d"] == 1 and fan["distinct_content_24h"] == 3
    affinity = read(dynamodb, "user_affinity", "fan-42")
    assert affinity["recent_content_lifetime"] == ["preview-nyk-mia", "recap-lal-bos"]
    assert affinity["last_followed_team_lifetime"] == "lal"
    assert read(dynamodb, "user_experiments", "fan-42")["last_variant_lifetime"] == "B"
    audience = emf(capsys.readouterr().out)  # the audience stage's, one partials shard
    assert audience["PartialsIn"] == 4
    game = read(dynamodb, "game_live", "nba-2026-11-26-lal-bos")
    assert game["status_lifetime"] == "live" and game["viewers_since_kickoff"] == 1
    logged = objects(s3, "features/")
    assert {line["group"] for line in logged} == {
        "user_engagement", "user_affinity", "user_experiments", "game_live", "content_trending"
    }
    assert metrics["ItemWrites"] + audience["ItemWrites"] == len(logged)


def test_kpl_aggregated_records_are_de_aggregated_and_applied(aws: tuple[Any, Any]) -> None:
    dynamodb, _ = aws
    response = stream_processor.handler(fixture("kinesis_kpl_batch.json"), LambdaContext())
    assert response == {"batchItemFailures": []}
    assert read(dynamodb, "user_engagement", "fan-7")["watch_seconds_1h"] == 120.0
    assert read(dynamodb, "game_live", "nba-2026-11-26-lal-bos")["watch_seconds_5m"] == 132.5


def test_poison_records_are_quarantined_with_reasons_and_do_not_block_the_shard(
    aws: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    dynamodb, s3 = aws
    event = fixture("kinesis_poison_batch.json")
    response = stream_processor.handler(event, LambdaContext())
    assert response == {"batchItemFailures": []}
    quarantined = objects(s3, "quarantine/")
    assert [line["reason"] for line in quarantined] == [
        "bad_json", "unknown_event_type", "unknown_schema_version", "bad_event_time",
        "wrong_type", "missing_field", "event_time_in_future",
    ]
    sequence_numbers = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert [line["sequence_number"] for line in quarantined] == sequence_numbers[:-1]
    assert read(dynamodb, "user_engagement", "fan-1")["push_opens_7d"] == 1
    output = capsys.readouterr().out
    assert emf(output)["RecordsInvalid"] == 7
    assert '"reason":"wrong_type"' in output  # the per-reason series


def test_a_replayed_batch_changes_nothing(aws: tuple[Any, Any]) -> None:
    dynamodb, _ = aws
    event = fixture("kinesis_valid_batch.json")
    stream_processor.handler(event, LambdaContext())
    run_audience_stage()
    before = dynamodb.scan(TableName=TABLE)["Items"]
    assert stream_processor.handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert run_audience_stage() == []  # nothing emitted again
    assert sorted(map(str, dynamodb.scan(TableName=TABLE)["Items"])) == sorted(map(str, before))


def _refusing(client: Any, prefix: str) -> Any:
    """Make ``client`` refuse UpdateItem on items whose key starts with ``prefix``."""

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params["Key"]["pk"]["S"].startswith(prefix) or params["Key"]["sk"]["S"] == prefix:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "ValidationException"}}, "UpdateItem")

    client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", refuse)
    return lambda: client.meta.events.unregister(
        "before-parameter-build.dynamodb.UpdateItem", refuse)


def test_a_failing_item_reports_the_lowest_sequence_number_and_the_rest(
    aws: tuple[Any, Any]
) -> None:
    dynamodb, _ = aws
    event = fixture("kinesis_valid_batch.json")
    stop = _refusing(stream_processor._current().store.client, "user_experiments")
    try:
        response = stream_processor.handler(event, LambdaContext())
    finally:
        stop()
    sequence_numbers = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    # The first event feeding the experiments item is the exposure, the seventh record.
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == sequence_numbers[6:]
    retry = {"Records": event["Records"][6:]}
    assert stream_processor.handler(retry, LambdaContext()) == {"batchItemFailures": []}
    assert read(dynamodb, "user_experiments", "fan-42")["last_variant_lifetime"] == "B"
    assert read(dynamodb, "game_live", "nba-2026-11-26-lal-bos")["follows_lifetime"] == 1
    assert read(dynamodb, "user_engagement", "fan-42")["views_1h"] == 2


def test_a_failing_audience_item_reports_its_partial_and_the_rest(aws: tuple[Any, Any]) -> None:
    dynamodb, _ = aws
    assert stream_processor.handler(fixture("kinesis_valid_batch.json"), LambdaContext()) == {
        "batchItemFailures": []}
    tail = StreamTail(boto3.client("kinesis"), PARTIALS)
    (event,) = tail.events()
    stop = _refusing(audience_stage._current().store.client, "game#")
    try:
        response = audience_stage.handler(event, LambdaContext())
    finally:
        stop()
    keys = [r["kinesis"]["partitionKey"] for r in event["Records"]]
    sequence_numbers = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed == sequence_numbers[keys.index("game#nba-2026-11-26-lal-bos"):]
    retry = {"Records": event["Records"][len(sequence_numbers) - len(failed):]}
    assert audience_stage.handler(retry, LambdaContext()) == {"batchItemFailures": []}
    _tails[PARTIALS] = tail  # read() drains from here: nothing new
    assert read(dynamodb, "game_live", "nba-2026-11-26-lal-bos")["follows_lifetime"] == 1
    assert read(dynamodb, "content_trending", "recap-lal-bos")["views_1h"] == 1
