"""The feature API through its Lambda handler: response shape, validation, errors, metrics.

Data is written by the real stream processor into moto (server mode); see the harness.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fastbreak.definitions import CATALOG
from fastbreak.engine.fold import FeatureValue
from fastbreak.handlers import feature_api
from localplatform.api_gateway import Route, proxy_event
from localplatform.lambda_context import LambdaContext
from tests.functional.test_feature_api_harness import (
    BATCH_ROUTE,
    GET_ROUTE,
    HEADERS,
    MINUTE_MS,
    T0_MS,
    TABLE,
    ServingWorld,
    world,
)

__all__ = ["world"]  # the module-scoped fixture, re-exported for pytest

USER_FEATURES = [
    f"{group.name}.{name}" for group in CATALOG.groups if group.entity == "user"
    for name in group.served_names()
]


@pytest.fixture(scope="module")
def fan(world: ServingWorld) -> str:
    """A fan who viewed two pieces of content and followed one game, minutes before T0."""
    world.feed([
        {"event_type": "content_view", "time_ms": T0_MS - 10 * MINUTE_MS, "user_id": "fan-1",
         "content_id": "c-1", "sport": "basketball"},
        {"event_type": "content_view", "time_ms": T0_MS - 5 * MINUTE_MS, "user_id": "fan-1",
         "content_id": "c-2", "sport": "basketball"},
        {"event_type": "game_follow", "time_ms": T0_MS - 2 * MINUTE_MS, "user_id": "fan-1",
         "game_id": "g-1", "team_id": "celtics"},
    ])
    return "fan-1"


# ---- response shape ------------------------------------------------------------------------
def test_get_answers_every_user_feature_with_value_event_time_and_age(
    world: ServingWorld, fan: str
) -> None:
    status, body = world.get("user", fan)

    assert status == 200
    assert body["as_of"] == "2026-11-18T11:06:40.000Z"
    assert (body["entity_type"], body["entity_id"]) == ("user", fan)
    assert list(body["features"]) == USER_FEATURES
    assert body["features"]["user_engagement.views_1h"] == {
        "value": 2, "event_time": "2026-11-18T11:01:40.000Z", "age_ms": 5 * MINUTE_MS,
    }
    assert body["features"]["user_affinity.last_followed_team_lifetime"] == {
        "value": "celtics", "event_time": "2026-11-18T11:04:40.000Z", "age_ms": 2 * MINUTE_MS,
    }
    assert body["features"]["user_affinity.recent_content_lifetime"]["value"] == ["c-2", "c-1"]


def test_a_feature_without_events_in_its_window_is_an_explicit_null(
    world: ServingWorld, fan: str
) -> None:
    _, body = world.get("user", fan, groups="user_engagement.clicks_1h,user_experiments")

    assert body["features"] == {
        "user_engagement.clicks_1h": None,
        "user_experiments.recent_exposures_lifetime": None,
        "user_experiments.last_variant_lifetime": None,
        "user_experiments.exposures_24h": None,
    }


def test_an_unknown_entity_gets_every_requested_feature_as_null(world: ServingWorld) -> None:
    status, body = world.get("user", "never-seen", groups="user_engagement")

    assert status == 200
    assert body["features"] == {
        f"user_engagement.{name}": None for name in CATALOG.group("user_engagement").served_names()
    }


def test_batch_get_answers_in_request_order_with_each_entity_types_own_features(
    world: ServingWorld, fan: str
) -> None:
    status, body = world.batch_get({"entities": [
        {"entity_type": "user", "entity_id": fan},
        {"entity_type": "content", "entity_id": "c-2"},
        {"entity_type": "user", "entity_id": "never-seen"},
        {"entity_type": "user", "entity_id": fan},
    ], "features": ["user_engagement.views_1h", "content_trending.views_1h"]})

    assert status == 200
    assert [(e["entity_type"], e["entity_id"]) for e in body["entities"]] == [
        ("user", fan), ("content", "c-2"), ("user", "never-seen"), ("user", fan),
    ]
    assert body["entities"][0]["features"]["user_engagement.views_1h"]["value"] == 2
    assert body["entities"][1]["features"] == {
        "content_trending.views_1h": {
            "value": 1, "event_time": "2026-11-18T11:01:40.000Z", "age_ms": 5 * MINUTE_MS,
        },
    }
    assert body["entities"][2]["features"] == {"user_engagement.views_1h": None}
    assert body["entities"][3] == body["entities"][0]


def test_groups_can_be_repeated_query_parameters(world: ServingWorld, fan: str) -> None:
    _, body = world.get("user", fan, query="groups=user_engagement.views_1h"
                                           "&groups=user_affinity.top_sports_7d")

    assert body["features"]["user_affinity.top_sports_7d"]["value"] == [["basketball", 2]]
    assert list(body["features"]) == ["user_engagement.views_1h", "user_affinity.top_sports_7d"]


# ---- bad input: always a 400 that names the problem ----------------------------------------
@pytest.mark.parametrize(
    ("entity_type", "entity_id", "groups", "field", "says"),
    [
        ("player", "p-1", None, "entity_type", "unknown entity type 'player'"),
        ("user", "u" * 129, None, "entity_id", "1..128 characters"),
        ("user", "bell\x07", None, "entity_id", "control"),
        ("user", "u-1", "nope", "groups[0]", "unknown feature group 'nope'"),
        ("user", "u-1", "user_engagement.nope", "groups[0]", "has no feature 'nope'"),
        ("user", "u-1", "game_live", "groups[0]", "feature of 'game' entities"),
        ("user", "u-1", "", "groups[0]", "must be a group or group.feature name"),
    ],
)
def test_get_with_bad_input_is_a_400_naming_the_field(
    world: ServingWorld, entity_type: str, entity_id: str, groups: str | None, field: str,
    says: str,
) -> None:
    status, body = world.get(entity_type, entity_id, groups)

    assert status == 400
    assert body["error"] == "invalid_request"
    assert body["field"] == field
    assert says in body["message"]


def test_get_with_an_id_the_route_pattern_refuses_is_a_400_not_a_404(
    world: ServingWorld,
) -> None:
    # An event whose path carries characters a client would have percent-encoded.
    event = proxy_event(GET_ROUTE, "/v1/features/user/a", "", HEADERS)
    event["path"] = event["requestContext"]["path"] = '/v1/features/user/quote"and\\slash'
    event["pathParameters"]["entity_id"] = "bell\x07"

    status, body = world.call(event)

    assert (status, body["field"]) == (400, "entity_id")


def test_an_unknown_route_is_a_json_404(world: ServingWorld) -> None:
    status, body = world.call(proxy_event(Route("/v2/things", "GET"), "/v2/things"))

    assert (status, body["error"]) == (404, "not_found")


# ---- ids in the path: percent-decoded, as API Gateway hands them ---------------------------
def test_get_reads_the_percent_decoded_id_the_same_key_as_batch_get(world: ServingWorld) -> None:
    fan = "fan one/å\"q"  # a space, a slash, a non-ASCII letter and a quote, encoded in a path
    world.feed([{"event_type": "content_view", "time_ms": T0_MS - MINUTE_MS, "user_id": fan,
                 "content_id": "c-9", "sport": "tennis"}])

    status, single = world.get("user", fan, groups="user_engagement.views_1h")
    _, batch = world.batch_get({"entities": [{"entity_type": "user", "entity_id": fan}],
                                "features": ["user_engagement.views_1h"]})

    assert status == 200
    assert single["entity_id"] == fan
    assert single["features"]["user_engagement.views_1h"]["value"] == 1
    assert batch["entities"][0]["features"] == single["features"]


@pytest.mark.parametrize(("entity_id", "says"), [
    ("bell\x07", "control"),
    ("nul\x00", "control"),
    ("line\nbreak", "control"),
    ("é" * 129, "1..128"),  # 129 characters, 258 bytes, 774 characters once encoded
])
def test_get_applies_the_id_rules_to_the_decoded_id(
    world: ServingWorld, entity_id: str, says: str
) -> None:
    status, body = world.get("user", entity_id)  # percent-encoded in the path

    assert (status, body["field"]) == (400, "entity_id")
    assert says in body["message"]


# ---- query parameters ----------------------------------------------------------------------
@pytest.mark.parametrize(("query", "field", "named"), [
    ("as_of=2026-11-18T10:00:00Z", "as_of", ["as_of"]),
    ("groups=user_engagement&window=1h", "window", ["window"]),
    ("window=1h&as_of=0&groups=user_engagement", "as_of", ["as_of", "window"]),
])
def test_get_refuses_query_parameters_it_does_not_take(
    world: ServingWorld, query: str, field: str, named: list[str]
) -> None:
    status, body = world.get("user", "u-1", query=query)

    assert (status, body["error"], body["field"]) == (400, "invalid_request", field)
    assert f"unknown query parameters {named}" in body["message"]
    assert "takes only ['groups']" in body["message"]


def test_batch_get_refuses_query_parameters(world: ServingWorld) -> None:
    status, body = world.batch_get({"entities": [{"entity_type": "user", "entity_id": "u"}]},
                                   query="as_of=0")

    assert (status, body["field"]) == (400, "as_of")
    assert "takes none" in body["message"]


# ---- bodies --------------------------------------------------------------------------------
def test_a_body_that_is_not_utf8_is_a_400_not_a_500(world: ServingWorld) -> None:
    body = b'{"entities": [{"entity_type": "user", "entity_id": "caf\xe9"}]}'  # Latin-1 'é'
    event = proxy_event(BATCH_ROUTE, "/v1/features/batch-get", "", HEADERS, body)
    assert event["isBase64Encoded"] is True  # how API Gateway hands over what is not text

    status, answer = world.call(event)

    assert (status, answer["field"]) == (400, "body")
    assert "not UTF-8" in answer["message"]


def test_a_lone_surrogate_in_a_text_body_is_a_400_not_a_500(world: ServingWorld) -> None:
    event = proxy_event(BATCH_ROUTE, "/v1/features/batch-get", "", HEADERS, b"{}")
    event["body"] = '{"entities": [{"entity_type": "user", "entity_id": "\ud800"}]}'

    status, answer = world.call(event)

    assert (status, answer["field"]) == (400, "body")


def test_a_base64_encoded_body_is_decoded(world: ServingWorld, fan: str) -> None:
    document = {"entities": [{"entity_type": "user", "entity_id": fan}],
                "features": ["user_engagement.views_1h"]}
    event = proxy_event(BATCH_ROUTE, "/v1/features/batch-get", "", HEADERS, b"{}")
    event["body"] = base64.b64encode(json.dumps(document).encode()).decode()
    event["isBase64Encoded"] = True

    status, answer = world.call(event)

    assert status == 200
    assert answer["entities"][0]["features"]["user_engagement.views_1h"]["value"] == 2


@pytest.mark.parametrize("encoded", [False, True])
def test_a_body_over_64_kib_is_a_413(world: ServingWorld, encoded: bool) -> None:
    event = proxy_event(BATCH_ROUTE, "/v1/features/batch-get", "", HEADERS,
                        b" " * (64 * 1024 + 1))
    if encoded:
        event["body"] = base64.b64encode(b" " * (64 * 1024 + 1)).decode()
        event["isBase64Encoded"] = True

    status, answer = world.call(event)

    assert (status, answer["error"], answer["field"]) == (413, "request_too_large", "body")


def test_nan_and_infinity_literals_are_not_json(world: ServingWorld) -> None:
    status, answer = world.batch_get('{"entities": [], "features": NaN}')

    assert (status, answer["field"]) == (400, "body")
    assert "not valid JSON" in answer["message"]


def _entities(count: int) -> list[dict[str, str]]:
    return [{"entity_type": "user", "entity_id": f"u-{i}"} for i in range(count)]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ("", "body", "empty"),
        ("{", "body", "not valid JSON"),
        ("[]", "body", "JSON object"),
        ('{"entities": [], "extra": 1}', "body", "unknown fields ['extra']"),
        ({"features": ["user_engagement"]}, "entities", "non-empty list"),
        ({"entities": []}, "entities", "non-empty list"),
        ({"entities": _entities(101)}, "entities", "at most 100"),
        ({"entities": [{"entity_type": "user"}]}, "entities[0]", "entity_type and entity_id"),
        ({"entities": ["user#u-1"]}, "entities[0]", "entity_type and entity_id"),
        ({"entities": [{"entity_type": "user", "entity_id": 7}]}, "entities[0].entity_id",
         "string"),
        ({"entities": [{"entity_type": "user", "entity_id": ""}]}, "entities[0].entity_id",
         "1..128"),
        ('{"entities": [{"entity_type": "user", "entity_id": "\\ud800"}]}',
         "entities[0].entity_id", "unpaired"),
        ({"entities": [{"entity_type": "venue", "entity_id": "v"}]}, "entities[0].entity_type",
         "unknown entity type"),
        ({"entities": _entities(1), "features": "user_engagement"}, "features", "a list"),
        ({"entities": _entities(1), "features": ["user_engagement", 3]}, "features[1]",
         "group or group.feature"),
        ({"entities": _entities(1), "features": ["content_trending.views_1h"]}, "features[0]",
         "no requested entity"),
        ({"entities": [*_entities(1), {"entity_type": "game", "entity_id": "g"}],
          "features": ["user_engagement"]}, "features", "no feature of 'game' entities"),
    ],
)
def test_batch_get_with_bad_input_is_a_400_naming_the_field(
    world: ServingWorld, body: Any, field: str, says: str
) -> None:
    status, answer = world.batch_get(body)

    assert status == 400
    assert answer["field"] == field
    assert says in answer["message"]


# ---- failures of our own -------------------------------------------------------------------
class _FailingReads:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def query(self, **_: Any) -> Any:
        raise self.error

    def batch_get_item(self, **_: Any) -> Any:
        raise self.error


@pytest.fixture
def store_failing_with(world: ServingWorld) -> Any:
    def install(error: Exception) -> None:
        feature_api.configure(_FailingReads(error), {"ONLINE_TABLE_NAME": TABLE},
                              clock_ms=world.clock)

    yield install
    feature_api.configure(world.dynamodb, {"ONLINE_TABLE_NAME": TABLE}, clock_ms=world.clock)


def test_an_unexpected_error_is_a_json_500_without_a_stack_trace(
    world: ServingWorld, store_failing_with: Any
) -> None:
    store_failing_with(RuntimeError("secret internals"))

    status, body = world.get("user", "u-1")

    assert status == 500
    assert body == {
        "error": "internal_error",
        "message": "unexpected error; quote the request id to the platform team",
        "request_id": "00000000-0000-0000-0000-000000000000",
    }


def test_a_value_with_no_json_form_is_a_500_never_infinity(
    world: ServingWorld, fan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The merge serves null past the double range; were a non-finite float to reach an answer
    # anyway, the encoder must refuse it rather than write "Infinity", which no JSON parser reads.
    from fastbreak.serving import client as serving_client

    def infinite(*args: Any, **kwargs: Any) -> dict[str, FeatureValue]:
        plan = args[0]
        return {served.name: FeatureValue(float("inf"), T0_MS, 0) for served in plan.served}

    monkeypatch.setattr(serving_client, "merge_group", infinite)

    response = feature_api.handler(
        proxy_event(GET_ROUTE, f"/v1/features/user/{fan}", "", HEADERS),
        LambdaContext("fastbreak-feature-api"),
    )

    assert response["statusCode"] == 500
    assert "Infinity" not in response["body"]
    assert json.loads(response["body"])["error"] == "internal_error"


def test_a_store_that_keeps_throttling_is_a_503(
    world: ServingWorld, store_failing_with: Any
) -> None:
    store_failing_with(ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
        "BatchGetItem",  # a user read is one BatchGetItem
    ))

    status, body = world.get("user", "u-1")

    assert (status, body["error"]) == (503, "store_unavailable")


# ---- metrics -------------------------------------------------------------------------------
def test_a_read_publishes_latency_entities_missing_rate_and_feature_age(
    world: ServingWorld, fan: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    world.batch_get({"entities": [{"entity_type": "user", "entity_id": fan},
                                  {"entity_type": "user", "entity_id": "never-seen"}],
                     "features": ["user_engagement.views_1h", "user_engagement.clicks_1h"]})

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith('{"_aws"')]
    assert len(emf) == 1
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Fastbreak"
    assert emf[0]["EntitiesPerRequest"] == [2.0]
    assert emf[0]["MissingRate"] == [75.0]  # 3 of the 4 values are null
    assert emf[0]["FeatureAgeMs"] == [5.0 * MINUTE_MS]  # only the fan has a value
    assert emf[0]["ReadLatencyMs"][0] > 0
