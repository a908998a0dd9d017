"""End to end on the embedded local platform: the synthesized templates deployed into moto,
the real handlers in-process. Events go in through the producer SDK; features come out
through the local feature API, invalid records land in quarantine with their reason, and
Firehose writes Parquet partitions with the Glue table's columns."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from fastbreak_producer import Producer, ProducerConfig
from fastbreak_producer.cli import main as producer_cli
from localplatform.platform import LocalPlatform, PlatformOptions

pytestmark = pytest.mark.e2e

# Events are dated when the module's platform sends them, not when pytest collected the module:
# under xdist a module can start minutes later, past the 5-minute windows it reads.
SENT_AT = [datetime.now(UTC)]


def event_time() -> str:
    return SENT_AT[0].strftime("%Y-%m-%dT%H:%M:%S.000Z")


def view(index: int, user: str) -> dict[str, Any]:
    return {"event_type": "content_view", "schema_version": 2, "event_id": f"view-{index}",
            "event_time": event_time(), "user_id": user, "content_id": f"content-{index % 3}",
            "sport": "soccer", "surface": "home"}


def play(index: int, user: str, game: str) -> dict[str, Any]:
    return {"event_type": "video_play", "schema_version": 1, "event_id": f"play-{index}",
            "event_time": event_time(), "user_id": user, "content_id": "clip-1",
            "game_id": game, "watch_seconds": 30.0}


@pytest.fixture(scope="module")
def platform() -> Iterator[LocalPlatform]:
    with LocalPlatform(PlatformOptions(firehose_buffer_seconds=0.5)) as running:
        producer = Producer(running.client("kinesis"), running.stream_name)
        SENT_AT[0] = datetime.now(UTC)
        for index in range(12):
            producer.send(view(index, "user-e2e"))
        for index in range(5):
            producer.send(play(index, f"fan-{index}", "game-e2e"))
        producer.send_raw(b'{"event_type": "content_view", trunc', "user-bad")
        producer.send_raw(json.dumps({**view(99, "user-bad"), "content_id": None}).encode(),
                          "user-bad")
        producer.flush()
        assert producer.report.events_accepted == 19
        assert running.wait_until_processed(timeout=60)
        assert running.drain_deliveries(timeout=60)
        yield running


def get_json(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST", headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def objects(platform: LocalPlatform, prefix: str) -> list[bytes]:
    s3 = platform.client("s3")
    listed = s3.list_objects_v2(Bucket=platform.offline_bucket(), Prefix=prefix)
    return [s3.get_object(Bucket=platform.offline_bucket(), Key=item["Key"])["Body"].read()
            for item in listed.get("Contents", [])]


def test_user_features_are_served_by_the_local_api(platform: LocalPlatform) -> None:
    assert platform.api is not None
    status, body = get_json(f"{platform.api.url}/v1/features/user/user-e2e")
    assert status == 200
    assert body["features"]["user_engagement.views_1h"]["value"] == 12
    assert body["features"]["user_engagement.distinct_content_24h"]["value"] == 3


def test_game_features_aggregate_across_fans_through_batch_get(platform: LocalPlatform) -> None:
    assert platform.api is not None
    status, body = get_json(
        f"{platform.api.url}/live/v1/features/batch-get",
        {"entities": [{"entity_type": "game", "entity_id": "game-e2e"}]},
    )
    assert status == 200
    assert "game-e2e" in json.dumps(body)
    assert '"value": 150.0' in json.dumps(body)  # watch_seconds_5m: 5 fans x 30 s


def test_invalid_records_are_quarantined_with_their_reason(platform: LocalPlatform) -> None:
    lines = [json.loads(line) for body in objects(platform, "quarantine/")
             for line in body.decode().splitlines()]
    reasons = sorted(line["reason"] for line in lines)
    assert reasons == ["bad_json", "missing_field"]
    assert all(line["shard_id"].startswith("shardId-") for line in lines)


def test_processed_records_leave_a_feature_log(platform: LocalPlatform) -> None:
    assert objects(platform, "features/")


def test_the_processors_emf_metrics_reach_the_local_cloudwatch(platform: LocalPlatform) -> None:
    service = {"service": "stream-processor", "environment": "dev"}
    assert platform.metrics.total("Fastbreak", "RecordsIn", service) == 19
    assert platform.metrics.total("Fastbreak", "RecordsInvalid", service) == 2
    assert platform.metrics.total("Fastbreak", "RecordsInvalid",
                                  {**service, "reason": "bad_json"}) == 1


def test_firehose_writes_parquet_partitions_with_the_glue_columns(
    platform: LocalPlatform,
) -> None:
    (delivery,) = platform.deliveries
    s3 = platform.client("s3")
    keys = [item["Key"] for item in s3.list_objects_v2(
        Bucket=platform.offline_bucket(), Prefix="raw/")["Contents"]]
    sent = SENT_AT[0]
    partition = f"raw/event_date={sent:%Y-%m-%d}/event_hour={sent:%H}/"
    assert keys and all(key.startswith(partition) and key.endswith(".parquet") for key in keys)
    tables = [pq.read_table(io.BytesIO(body)) for body in objects(platform, "raw/")]
    # Every record is a row: the 17 events, and the two the processor quarantined.
    assert sum(table.num_rows for table in tables) == 19
    assert tables[0].schema.names == delivery.spec.schema.names
    rejections = sorted(r for table in tables for r in table.column("rejection").to_pylist()
                        if r is not None)
    assert rejections == ["bad_json", "missing_field"]
    assert not objects(platform, "raw-errors/")


def test_the_producer_cli_replays_a_json_lines_file(
    platform: LocalPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert platform.api is not None
    lines = [json.dumps(view(100 + index, "user-replay")) for index in range(3)]
    lines.insert(1, json.dumps({**view(200, "user-replay"), "sport": 7}))
    replay = tmp_path / "events.jsonl"
    replay.write_text("\n".join(lines) + "\n")
    code = producer_cli(["replay", str(replay), "--stream-name", platform.stream_name,
                         "--endpoint-url", platform.endpoint_url, "--region", "us-east-1"])
    assert code == 0
    assert "line 2: event 'view-200'" in capsys.readouterr().err
    assert platform.wait_until_processed(timeout=60)
    _, body = get_json(f"{platform.api.url}/v1/features/user/user-replay")
    assert body["features"]["user_engagement.views_1h"]["value"] == 3


def test_a_route_the_api_does_not_define_is_refused_as_api_gateway_does(
    platform: LocalPlatform,
) -> None:
    assert platform.api is not None
    for method, path in (("DELETE", "/v1/features/user/user-e2e"),
                         ("GET", "/v1/features/batch-get"), ("GET", "/v1/users")):
        status, _, body = platform.api.handle(method, path, [], None)
        assert (status, json.loads(body)) == (403, {"message": "Missing Authentication Token"})


def test_the_local_api_validates_bodies_with_the_templates_model(platform: LocalPlatform) -> None:
    assert platform.api is not None
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(f"{platform.api.url}/v1/features/batch-get", {"entities": []})
    assert refused.value.code == 400
    assert json.loads(refused.value.read()) == {"message": "Invalid request body"}


def test_a_percent_encoded_id_reads_the_same_features(platform: LocalPlatform) -> None:
    assert platform.api is not None
    _, plain = get_json(f"{platform.api.url}/v1/features/user/user-e2e")
    _, encoded = get_json(f"{platform.api.url}/v1/features/user/user%2De2e")
    assert encoded["entity_id"] == "user-e2e"

    def values(answer: dict[str, Any]) -> dict[str, Any]:
        return {name: None if value is None else value["value"]
                for name, value in answer["features"].items()}

    assert values(encoded) == values(plain)


def test_kpl_aggregated_events_are_each_counted(platform: LocalPlatform) -> None:
    assert platform.api is not None
    producer = Producer(platform.client("kinesis"), platform.stream_name,
                        ProducerConfig(aggregate=True))
    for index in range(4):
        producer.send(view(300 + index, "user-kpl"))
    producer.flush()
    assert producer.report.records_sent == 1
    assert platform.wait_until_processed(timeout=60)
    _, body = get_json(f"{platform.api.url}/v1/features/user/user-kpl")
    assert body["features"]["user_engagement.views_1h"]["value"] == 4
