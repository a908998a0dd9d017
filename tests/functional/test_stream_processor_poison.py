"""Records no producer should send, through the real handler with boto3 against moto: each is
quarantined with its reason, its neighbours are applied, nothing raises, nothing is retried."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastbreak.engine.kpl import aggregate
from fastbreak.engine.timestamps import format_ms
from fastbreak.handlers import feature_api, stream_processor
from localplatform.api_gateway import Route, proxy_event
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, json_bytes, lambda_record
from localplatform.lambda_context import LambdaContext
from tests.functional.test_stream_processor import AS_OF, TABLE, aws, emf, objects, read

__all__ = ["aws"]  # the fixture, imported for pytest

EVENT_TIME_MS = AS_OF - 60_000
ARRIVAL_S = AS_OF / 1000
SURROGATE = "\ud800"


def view(n: int, user: str = "fan-1", **overrides: Any) -> dict[str, Any]:
    document = {
        "event_type": "content_view", "schema_version": 2, "event_id": f"{user}-v{n}",
        "event_time": format_ms(EVENT_TIME_MS + n), "user_id": user, "content_id": "c-1",
        "sport": "nba", "surface": "home",
    }
    document.update(overrides)
    return document


def exposure(**overrides: Any) -> dict[str, Any]:
    document = {
        "event_type": "experiment_exposure", "schema_version": 1, "event_id": "x-1",
        "event_time": format_ms(EVENT_TIME_MS), "user_id": "fan-1", "experiment_id": "exp",
        "variant": "A",
    }
    document.update(overrides)
    return document


def batch(payloads: list[bytes], digits: int = 56) -> tuple[dict[str, Any], list[str]]:
    base = SEQUENCE_BASE if digits == 56 else 10 ** (digits - 1) + 7
    records = [
        StreamRecord(str(base + n * 1000), "fan-1", payload, ARRIVAL_S)
        for n, payload in enumerate(payloads)
    ]
    return {"Records": [lambda_record(r) for r in records]}, [r.sequence_number for r in records]


def poison_documents() -> list[dict[str, Any]]:
    """A lone surrogate in each field the issue names, and where no schema looks."""
    return [
        view(10, user_id="fan" + SURROGATE), view(11, content_id=SURROGATE),
        view(12, event_id=SURROGATE), view(13, sport=SURROGATE), view(14, surface=SURROGATE),
        view(15, unused={"deep": [SURROGATE]}), exposure(variant=SURROGATE),
        {"event_type": "game_follow", "schema_version": 1, "event_id": "f-1",
         "event_time": format_ms(EVENT_TIME_MS), "user_id": "fan-1", "game_id": SURROGATE,
         "team_id": "t" + SURROGATE},
        {"event_type": "score_update", "schema_version": 1, "event_id": "s-1",
         "event_time": format_ms(EVENT_TIME_MS), "game_id": "g-1", "home_score": 1,
         "away_score": 0, "period": 1, "clock_seconds": 30, "status": "live" + SURROGATE},
    ]


def test_lone_surrogates_in_any_field_are_quarantined_and_their_neighbours_applied(
    aws: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    dynamodb, s3 = aws
    poison = poison_documents()
    payloads = [json_bytes(view(0))]
    payloads += [json.dumps(d).encode() for d in poison]  # escaped: "\ud800"
    payloads += [  # the bytes ED A0 80
        json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass") for d in poison
    ]
    payloads.append(aggregate("fan-1", [json_bytes(view(1)), json.dumps(poison[3]).encode(),
                                        json_bytes(view(2))]))
    payloads.append(json_bytes(view(3, user="fan-2")))
    event, _ = batch(payloads)

    response = stream_processor.handler(event, LambdaContext())
    output = capsys.readouterr().out  # stage 1's (``read`` runs the audience stage after it)

    assert response == {"batchItemFailures": []}
    assert read(dynamodb, "user_engagement", "fan-1")["views_1h"] == 3
    assert read(dynamodb, "user_engagement", "fan-2")["views_1h"] == 1
    reasons = [line["reason"] for line in objects(s3, "quarantine/")]
    assert reasons == ["unencodable_string"] * (2 * len(poison) + 1)
    assert emf(output)["RecordsInvalid"] == 2 * len(poison) + 1
    assert '"reason":"unencodable_string"' in output  # the metric's dimension
    assert all(line.isascii() or json.loads(line) for line in output.splitlines())


def test_an_arrival_time_that_is_not_a_time_is_quarantined_not_raised(
    aws: tuple[Any, Any]
) -> None:
    dynamodb, s3 = aws
    event, _ = batch([json_bytes(view(n)) for n in range(5)])
    for record, arrival in zip(event["Records"][1:], ["Infinity", "NaN", 1e300, -5.0],
                               strict=True):
        record["kinesis"]["approximateArrivalTimestamp"] = (
            float(arrival) if isinstance(arrival, str) else arrival
        )
    response = stream_processor.handler(event, LambdaContext())
    assert response == {"batchItemFailures": []}
    assert read(dynamodb, "user_engagement", "fan-1")["views_1h"] == 1
    unattributed = objects(s3, "quarantine/unattributed/")
    assert [line["reason"] for line in unattributed] == ["bad_kinesis_record"] * 4
    assert all("approximateArrivalTimestamp" in line["message"] for line in unattributed)


def test_an_empty_kpl_aggregate_is_counted_and_quarantined(
    aws: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    dynamodb, s3 = aws
    event, sequence_numbers = batch([aggregate("fan-1", []), json_bytes(view(0))])
    assert stream_processor.handler(event, LambdaContext()) == {"batchItemFailures": []}
    (line,) = objects(s3, "quarantine/")
    assert (line["reason"], line["sequence_number"]) == ("kpl_empty", sequence_numbers[0])
    metrics = emf(capsys.readouterr().out)
    assert (metrics["RecordsIn"], metrics["RecordsInvalid"]) == (2, 1)
    assert read(dynamodb, "user_engagement", "fan-1")["views_1h"] == 1


def test_sequence_numbers_of_129_digits_are_applied_and_reported(aws: tuple[Any, Any]) -> None:
    dynamodb, _ = aws
    event, sequence_numbers = batch([json_bytes(view(n)) for n in range(3)], digits=129)
    assert all(len(number) == 129 for number in sequence_numbers)
    assert stream_processor.handler(event, LambdaContext()) == {"batchItemFailures": []}
    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "user#fan-1"},
                                                   "sk": {"S": "user_engagement"}})["Item"]
    assert item["hw"]["S"] == f"shardId-000000000000={sequence_numbers[-1]}.0"
    # a re-delivery changes nothing; a later record is applied after them
    assert stream_processor.handler(event, LambdaContext()) == {"batchItemFailures": []}
    later, _ = batch([json_bytes(view(5))], digits=129)
    later["Records"][0]["kinesis"]["sequenceNumber"] = str(int(sequence_numbers[-1]) + 1)
    later["Records"][0]["eventID"] = f"shardId-000000000000:{int(sequence_numbers[-1]) + 1}"
    assert stream_processor.handler(later, LambdaContext()) == {"batchItemFailures": []}
    assert read(dynamodb, "user_engagement", "fan-1")["views_1h"] == 4


def test_a_sum_past_the_double_range_is_served_as_null_not_infinity(
    aws: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dynamodb, _ = aws
    plays = [
        {"event_type": "video_play", "schema_version": 1, "event_id": f"p{n}",
         "event_time": format_ms(EVENT_TIME_MS + n), "user_id": "fan-1", "content_id": "c-1",
         "game_id": "g-1", "watch_seconds": 1e308}
        for n in range(2)
    ]
    event, _ = batch([json_bytes(play) for play in plays])
    assert stream_processor.handler(event, LambdaContext()) == {"batchItemFailures": []}
    monkeypatch.setattr(feature_api, "_client", None)
    feature_api.configure(dynamodb, {"ONLINE_TABLE_NAME": TABLE}, clock_ms=lambda: AS_OF)
    route = Route("/v1/features/{entity_type}/{entity_id}", "GET")
    request = proxy_event(route, "/v1/features/user/fan-1", "groups=user_engagement")

    response = feature_api.handler(request, LambdaContext())

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    assert response["statusCode"] == 200
    body = json.loads(response["body"], parse_constant=refuse)
    features = body["features"]
    assert features["user_engagement.watch_seconds_1h"]["value"] is None
    assert features["user_engagement.avg_watch_seconds_24h"]["value"] == 1e308  # in range
