"""The FeatureClient: the same answers as the API, from one Query per (entity, group) with
only the needed attributes, retried when throttled, paginated when large."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from fastbreak.engine.online_store import RetryPolicy
from fastbreak.serving import FeatureClient, InvalidRequest
from fastbreak.serving.response import entity_json
from tests.functional.test_feature_api_harness import (
    MINUTE_MS,
    T0_MS,
    TABLE,
    ServingWorld,
    world,
)

__all__ = ["world"]


class RecordingDynamoDB:
    """Passes calls to moto; records each Query, can throttle the first ones or page small."""

    def __init__(self, inner: Any, throttle_first: int = 0, page_items: int | None = None):
        self.inner = inner
        self.throttle_first = throttle_first
        self.page_items = page_items
        self.queries: list[dict[str, Any]] = []

    def query(self, **request: Any) -> Any:
        self.queries.append(request)
        if len(self.queries) <= self.throttle_first:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}},
                              "Query")
        if self.page_items is not None:
            request = {**request, "Limit": self.page_items}
        return self.inner.query(**request)


@pytest.fixture(scope="module")
def fans(world: ServingWorld) -> list[str]:
    names = ["reader-1", "reader-2"]
    world.feed([
        {"event_type": "content_view", "time_ms": T0_MS - minutes * MINUTE_MS, "user_id": name,
         "content_id": f"c-{minutes}", "sport": "soccer"}
        for name in names for minutes in (1, 2, 3, 61, 62)
    ])
    world.feed([{"event_type": "game_follow", "time_ms": T0_MS - MINUTE_MS, "user_id": "reader-1",
                 "game_id": "g-1", "team_id": "arsenal"}])
    return names


def _client(dynamodb: Any, sleeps: list[float] | None = None) -> FeatureClient:
    retry = RetryPolicy(max_attempts=4, base_delay_s=0.01,
                        sleep=(sleeps if sleeps is not None else []).append)
    return FeatureClient(dynamodb, TABLE, retry=retry, clock_ms=lambda: T0_MS)


def test_the_client_answers_exactly_what_the_api_answers(
    world: ServingWorld, fans: list[str]
) -> None:
    client = _client(world.dynamodb)

    for fan in fans:
        _, body = world.get("user", fan)
        assert entity_json(client.get("user", fan)) == {
            key: body[key] for key in ("entity_type", "entity_id", "features")
        }


def test_a_batch_makes_one_query_per_distinct_entity_and_group_with_a_projection(
    world: ServingWorld, fans: list[str]
) -> None:
    recording = RecordingDynamoDB(world.dynamodb)
    client = _client(recording)

    result = client.batch_get(
        [("user", fans[0]), ("user", fans[1]), ("user", fans[0]), ("user", "nobody")],
        ["user_engagement.views_1h", "user_engagement.views_24h", "user_affinity"],
    )

    assert sorted((q["ExpressionAttributeValues"][":pk"]["S"],
                   q["ExpressionAttributeValues"][":prefix"]["S"]) for q in recording.queries) == [
        (f"user#{entity}", f"{group}#")
        for entity in sorted([fans[0], fans[1], "nobody"])
        for group in ("user_affinity", "user_engagement")
    ]
    assert {q["ProjectionExpression"] for q in recording.queries} == {"#sk, #state, #expires"}
    views = [answer.features["user_engagement.views_1h"] for answer in result.entities]
    assert [None if v is None else v.value for v in views] == [3, 3, 3, None]


def test_throttled_queries_are_retried_with_backoff(
    world: ServingWorld, fans: list[str]
) -> None:
    sleeps: list[float] = []
    recording = RecordingDynamoDB(world.dynamodb, throttle_first=2)

    answer = _client(recording, sleeps).get("user", fans[0], ["user_engagement.views_24h"])

    assert answer.features["user_engagement.views_24h"] is not None
    assert answer.features["user_engagement.views_24h"].value == 5
    assert len(recording.queries) == 3
    assert len(sleeps) == 2


def test_a_group_spread_over_many_pages_is_read_whole(
    world: ServingWorld, fans: list[str]
) -> None:
    paged = RecordingDynamoDB(world.dynamodb, page_items=1)

    answer = _client(paged).get("user", fans[0], ["user_engagement"])

    assert len(paged.queries) > 3
    assert answer == _client(world.dynamodb).get("user", fans[0], ["user_engagement"])


def test_the_client_refuses_what_the_api_refuses_naming_the_field(world: ServingWorld) -> None:
    client = _client(world.dynamodb)

    with pytest.raises(InvalidRequest) as unknown_group:
        client.get("user", "u-1", ["user_engagement", "nope"])
    with pytest.raises(InvalidRequest) as too_many:
        client.batch_get([("user", f"u-{i}") for i in range(101)])

    assert unknown_group.value.field == "groups[1]"
    assert too_many.value.field == "entities"
