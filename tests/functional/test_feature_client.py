"""The FeatureClient: the same answers as the API, from one BatchGetItem per 100 group items
and one Query per sharded (entity, group), with only the needed attributes, retried when
throttled or left unprocessed, paginated when large."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fastbreak.engine import audience
from fastbreak.engine.online_store import RetryPolicy, StoreUnavailable
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

USER_GROUPS = ("user_affinity", "user_engagement", "user_experiments")
SHARDS = [f"shardId-00000000000{n}" for n in range(4)]


def _throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, operation)


class RecordingDynamoDB:
    """Passes calls to moto and records them (the reader calls from several threads). Can
    throttle the first calls of each kind, page Queries small, or serve only the first
    ``serve_keys`` keys of the first ``unprocessed_first`` BatchGetItem calls, returning the rest
    as UnprocessedKeys, as DynamoDB does past 16 MB or under throttling."""

    def __init__(self, inner: Any, throttle_first: int = 0, page_items: int | None = None,
                 unprocessed_first: int = 0, serve_keys: int = 1) -> None:
        self.inner = inner
        self.throttle_first = throttle_first
        self.page_items = page_items
        self.unprocessed_first = unprocessed_first
        self.serve_keys = serve_keys
        self.queries: list[dict[str, Any]] = []
        self.batch_gets: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def query(self, **request: Any) -> Any:
        with self._lock:
            self.queries.append(request)
            throttle = len(self.queries) <= self.throttle_first
        if throttle:
            raise _throttled("Query")
        if self.page_items is not None:
            request = {**request, "Limit": self.page_items}
        return self.inner.query(**request)

    def batch_get_item(self, **request: Any) -> Any:
        with self._lock:
            self.batch_gets.append(request)
            calls = len(self.batch_gets)
        if calls <= self.throttle_first:
            raise _throttled("BatchGetItem")
        if calls > self.unprocessed_first:
            return self.inner.batch_get_item(**request)
        (table, asked), = request["RequestItems"].items()
        served, held = asked["Keys"][: self.serve_keys], asked["Keys"][self.serve_keys :]
        response: dict[str, Any] = {"Responses": {table: []}}
        if served:
            response = self.inner.batch_get_item(RequestItems={table: {**asked, "Keys": served}})
        response["UnprocessedKeys"] = {table: {**asked, "Keys": held}} if held else {}
        return response

    def asked_keys(self) -> list[tuple[str, str]]:
        """Every (pk, sk) that BatchGetItem calls asked for, in call order."""
        return [(key["pk"]["S"], key["sk"]["S"]) for request in self.batch_gets
                for asked in request["RequestItems"].values() for key in asked["Keys"]]


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


@pytest.fixture(scope="module")
def crowded_game(world: ServingWorld) -> str:
    """A game watched through every shard."""
    for index, shard in enumerate(SHARDS):
        world.feed([{"event_type": "video_play", "time_ms": T0_MS - (index + 1) * MINUTE_MS,
                     "user_id": f"watcher-{index}", "content_id": "stream", "game_id": "g-crowd",
                     "watch_seconds": 30.0}], shard_id=shard)
    return "g-crowd"


def _client(dynamodb: Any, sleeps: list[float] | None = None) -> FeatureClient:
    retry = RetryPolicy(max_attempts=4, base_delay_s=0.01,
                        sleep=(sleeps if sleeps is not None else []).append)
    return FeatureClient(dynamodb, TABLE, retry=retry, clock_ms=lambda: T0_MS)


def _values(answer: Any, name: str) -> Any:
    value = answer.features[name]
    return None if value is None else value.value


def test_the_client_answers_exactly_what_the_api_answers(
    world: ServingWorld, fans: list[str], crowded_game: str
) -> None:
    client = _client(world.dynamodb)

    for entity in [("user", fan) for fan in fans] + [("game", crowded_game)]:
        _, body = world.get(*entity)
        assert entity_json(client.get(*entity)) == {
            key: body[key] for key in ("entity_type", "entity_id", "features")
        }


def test_a_batch_gets_the_group_items_in_one_call_and_queries_only_sharded_groups(
    world: ServingWorld, fans: list[str], crowded_game: str
) -> None:
    recording = RecordingDynamoDB(world.dynamodb)
    client = _client(recording)

    result = client.batch_get(
        [("user", fans[0]), ("user", fans[1]), ("game", crowded_game), ("user", fans[0]),
         ("user", "nobody"), ("game", crowded_game)],
        ["user_engagement.views_1h", "user_engagement.views_24h", "user_affinity",
         "game_live.viewers_5m"],
    )

    assert len(recording.batch_gets) == 1
    assert sorted(recording.asked_keys()) == [
        (f"user#{entity}", group)
        for entity in sorted([fans[0], fans[1], "nobody"])
        for group in ("user_affinity", "user_engagement")
    ]
    (asked,) = recording.batch_gets[0]["RequestItems"].values()
    assert asked["ProjectionExpression"] == "#pk, #sk, #state, #expires"
    assert [(q["ExpressionAttributeValues"][":pk"]["S"],
             q["ExpressionAttributeValues"][":prefix"]["S"],
             q["ProjectionExpression"]) for q in recording.queries] == [
        (f"game#{crowded_game}", "game_live#", "#pk, #sk, #state, #expires")
    ]
    assert [answer.entity.entity_id for answer in result.entities] == [
        fans[0], fans[1], crowded_game, fans[0], "nobody", crowded_game
    ]
    users, games = result.entities[:2] + result.entities[3:5], result.entities[2::3]
    assert [_values(answer, "user_engagement.views_1h") for answer in users] == [3, 3, 3, None]
    assert [_values(answer, "game_live.viewers_5m") for answer in games] == [len(SHARDS)] * 2


def test_a_batch_of_more_than_a_hundred_group_items_is_split(
    world: ServingWorld, fans: list[str]
) -> None:
    recording = RecordingDynamoDB(world.dynamodb)
    users = [fans[0], *(f"stranger-{n}" for n in range(48)), fans[1]]

    result = _client(recording).batch_get([("user", user) for user in users], list(USER_GROUPS))

    sizes = sorted(len(asked["Keys"]) for request in recording.batch_gets
                   for asked in request["RequestItems"].values())
    assert sizes == [50, 100]
    assert sorted(recording.asked_keys()) == sorted(
        (f"user#{user}", group) for user in users for group in USER_GROUPS
    )
    assert recording.queries == []
    views = [_values(answer, "user_engagement.views_24h") for answer in result.entities]
    assert views == [5] + [None] * 48 + [5]


def test_throttled_batch_gets_and_queries_are_retried_with_backoff(
    world: ServingWorld, fans: list[str], crowded_game: str
) -> None:
    sleeps: list[float] = []
    recording = RecordingDynamoDB(world.dynamodb, throttle_first=2)

    result = _client(recording, sleeps).batch_get(
        [("user", fans[0]), ("game", crowded_game)],
        ["user_engagement.views_24h", "game_live.viewers_5m"],
    )

    assert _values(result.entities[0], "user_engagement.views_24h") == 5
    assert _values(result.entities[1], "game_live.viewers_5m") == len(SHARDS)
    assert (len(recording.batch_gets), len(recording.queries)) == (3, 3)
    assert len(sleeps) == 4


def test_a_store_that_keeps_throttling_is_unavailable_after_the_last_try(
    world: ServingWorld, fans: list[str]
) -> None:
    sleeps: list[float] = []
    recording = RecordingDynamoDB(world.dynamodb, throttle_first=100)

    with pytest.raises(StoreUnavailable):
        _client(recording, sleeps).get("user", fans[0])

    assert len(recording.batch_gets) == 4  # RetryPolicy(max_attempts=4)
    assert len(sleeps) == 3


def test_unprocessed_keys_are_asked_again_until_served(
    world: ServingWorld, fans: list[str]
) -> None:
    sleeps: list[float] = []
    recording = RecordingDynamoDB(world.dynamodb, unprocessed_first=3, serve_keys=1)

    answers = [_client(recording, sleeps).get("user", fan, list(USER_GROUPS)) for fan in fans]

    # Three keys, one served per call: the first fan takes 3 calls, the second 1 (no longer
    # held back); every held-back key was asked for again, after a pause.
    assert len(recording.batch_gets) == 4
    assert sorted(recording.asked_keys()) == sorted(
        [(f"user#{fans[0]}", group) for group in (*USER_GROUPS, *USER_GROUPS[1:], USER_GROUPS[2])]
        + [(f"user#{fans[1]}", group) for group in USER_GROUPS]
    )
    assert len(sleeps) == 2
    assert answers == [_client(world.dynamodb).get("user", fan, list(USER_GROUPS))
                       for fan in fans]


def test_keys_still_unprocessed_after_the_last_try_make_the_store_unavailable(
    world: ServingWorld, fans: list[str]
) -> None:
    recording = RecordingDynamoDB(world.dynamodb, unprocessed_first=100, serve_keys=0)

    with pytest.raises(StoreUnavailable):
        _client(recording).get("user", fans[0], ["user_engagement"])

    assert len(recording.batch_gets) == 4


def test_a_sharded_group_spread_over_many_pages_is_read_whole(
    world: ServingWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hot game: its tiles outgrow the entity item and get items of their own.
    monkeypatch.setattr(audience, "ENTITY_ITEM_BYTES", 0)
    for index, shard in enumerate(SHARDS):
        world.feed([{"event_type": "video_play", "time_ms": T0_MS - (index + 1) * MINUTE_MS,
                     "user_id": f"watcher-{index}", "content_id": "stream", "game_id": "g-hot",
                     "watch_seconds": 30.0}], shard_id=shard)
    paged = RecordingDynamoDB(world.dynamodb, page_items=1)

    answer = _client(paged).get("game", "g-hot", ["game_live"])

    assert len(paged.queries) >= len(SHARDS) + 1  # the entity item and a tile item a minute
    assert {q["ExpressionAttributeValues"][":pk"]["S"] for q in paged.queries} == {"game#g-hot"}
    assert _values(answer, "game_live.viewers_5m") == len(SHARDS)
    assert _values(answer, "game_live.watch_seconds_5m") == 30.0 * len(SHARDS)
    assert answer == _client(world.dynamodb).get("game", "g-hot", ["game_live"])


def test_the_client_refuses_what_the_api_refuses_naming_the_field(world: ServingWorld) -> None:
    client = _client(world.dynamodb)

    with pytest.raises(InvalidRequest) as unknown_group:
        client.get("user", "u-1", ["user_engagement", "nope"])
    with pytest.raises(InvalidRequest) as too_many:
        client.batch_get([("user", f"u-{i}") for i in range(101)])

    assert unknown_group.value.field == "groups[1]"
    assert too_many.value.field == "entities"
