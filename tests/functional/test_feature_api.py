"""The feature API through its Lambda handler: response shape, validation, errors, metrics.

Data is written by the real stream processor into moto (server mode); see the harness.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fastbreak.definitions import CATALOG
from fastbreak.handlers import feature_api
from tests.functional.test_feature_api_harness import (
    MINUTE_MS,
    T0_MS,
    TABLE,
    ServingWorld,
    rest_event,
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
    event = rest_event("GET", "/v1/features/{entity_type}/{entity_id}", f"/v1/features/user/{fan}",
                       path_parameters={"entity_type": "user", "entity_id": fan})
    event["multiValueQueryStringParameters"] = {
        "groups": ["user_engagement.views_1h", "user_affinity.top_sports_7d"]
    }
    event["queryStringParameters"] = {"groups": "user_affinity.top_sports_7d"}

    _, body = world.call(event)

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
    status, body = world.get("user", 'quote"and\\slash')

    assert (status, body["field"]) == (400, "entity_id")


def test_an_unknown_route_is_a_json_404(world: ServingWorld) -> None:
    status, body = world.call(rest_event("GET", "/v2/things", "/v2/things"))

    assert (status, body["error"]) == (404, "not_found")


def _entities(count: int) -> list[dict[str, str]]:
    return [{"entity_type": "user", "entity_id": f"u-{i}"} for i in range(count)]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ("", "body", "empty"),
        ("{", "body", "not valid JSON"),
        ("[]", "body", "JSON object"),
        ('{"entities": [], "extra": 1}', "body", "unknown fields ['extra']"),
        ("x" * (64 * 1024 + 1), "body", "at most 65536"),
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
