"""Sliding windows merged from tiles as of the request time, at and across their edges.

A window of size W over tiles of size t, as of T, merges the W / t tiles ending with the one
that holds T (``fastbreak.engine.read``): a tile enters and leaves a window whole. Items past
their TTL are ignored although moto, like DynamoDB for a while, still returns them; so are
tiles past their retention that an item still holds (nothing pruned them yet).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastbreak.engine import audience
from fastbreak.engine.layout import audience_sk, tile_key
from fastbreak.engine.timestamps import format_ms as _iso
from localplatform.memory_dynamodb import state_text
from tests.functional.test_feature_api_harness import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    T0_MS,
    TABLE,
    ServingWorld,
    world,
)

__all__ = ["world"]

DAY = T0_MS // DAY_MS * DAY_MS  # 2026-11-18T00:00:00Z: tiles of every size start here
SECOND_MS = 1000
OTHER_SHARD = "shardId-000000000003"



def _view(user: str, time_ms: int) -> dict[str, Any]:
    return {"event_type": "content_view", "time_ms": time_ms, "user_id": user,
            "content_id": "c-1", "sport": "hockey"}


def _feature(world: ServingWorld, entity: tuple[str, str], name: str, at_ms: int) -> Any:
    status, body = world.get(entity[0], entity[1], groups=name, at_ms=at_ms)
    assert status == 200
    return body["features"][name]


@pytest.fixture(scope="module")
def minute_tiles(world: ServingWorld) -> str:
    """Views in tile 10:00 (its first and last millisecond), in tile 10:01 and in tile 11:00."""
    world.feed([_view("edges", DAY + t) for t in (
        10 * HOUR_MS, 10 * HOUR_MS + MINUTE_MS - 1, 10 * HOUR_MS + MINUTE_MS, 11 * HOUR_MS,
    )])
    return "edges"


@pytest.mark.parametrize(
    ("as_of", "count", "newest"),
    [
        (10 * HOUR_MS + MINUTE_MS - 1, 2, 10 * HOUR_MS + MINUTE_MS - 1),  # tile 10:00 only
        (11 * HOUR_MS - 1, 3, 10 * HOUR_MS + MINUTE_MS),  # tiles 10:00..10:59
        (11 * HOUR_MS, 2, 11 * HOUR_MS),  # 10:01..11:00: tile 10:00 has just left
        (11 * HOUR_MS + 30 * SECOND_MS, 2, 11 * HOUR_MS),
        (11 * HOUR_MS + MINUTE_MS, 1, 11 * HOUR_MS),  # 10:02..11:01
        (12 * HOUR_MS - 1, 1, 11 * HOUR_MS),  # 10:59..11:59: tile 11:00 is the oldest
    ],
)
def test_a_one_hour_window_merges_the_sixty_minute_tiles_ending_at_the_request(
    world: ServingWorld, minute_tiles: str, as_of: int, count: int, newest: int
) -> None:
    value = _feature(world, ("user", minute_tiles), "user_engagement.views_1h", DAY + as_of)

    assert value == {"value": count, "event_time": _iso(DAY + newest),
                     "age_ms": as_of - newest}


def test_a_window_with_every_tile_gone_is_null_while_a_longer_one_still_counts(
    world: ServingWorld, minute_tiles: str
) -> None:
    at = DAY + 12 * HOUR_MS  # 11:01..12:00

    assert _feature(world, ("user", minute_tiles), "user_engagement.views_1h", at) is None
    assert _feature(world, ("user", minute_tiles), "user_engagement.views_24h", at)["value"] == 4


def test_a_day_window_sums_hour_tiles_across_midnight(world: ServingWorld) -> None:
    # One batch per event: each reaches Kinesis a second after it happened (never late).
    for offset, seconds in ((-HOUR_MS + 30 * MINUTE_MS, 5.5), (0, 2.0), (23 * HOUR_MS, 1.5)):
        world.feed([{"event_type": "video_play", "time_ms": DAY + offset, "user_id": "night",
                     "content_id": "c-9", "game_id": "g-9", "watch_seconds": seconds}])
    watched = ("user", "night")

    def total(at: int) -> Any:
        return _feature(world, watched, "user_engagement.watch_seconds_24h", DAY + at)["value"]

    assert total(22 * HOUR_MS) == 7.5  # tiles 23:00 (yesterday) .. 22:00
    assert total(23 * HOUR_MS - 1) == 7.5
    assert total(23 * HOUR_MS) == 3.5  # tiles 00:00 .. 23:00: yesterday's tile has left
    assert total(24 * HOUR_MS - 1) == 3.5
    assert total(24 * HOUR_MS) == 1.5


def test_a_week_window_counts_the_seven_day_tiles_ending_today(world: ServingWorld) -> None:
    for day in (-7, -6, 0):
        world.feed([{"event_type": "push_open", "time_ms": DAY + day * DAY_MS + HOUR_MS,
                     "user_id": "weekly", "campaign_id": "kickoff-alerts"}])

    value = _feature(world, ("user", "weekly"), "user_engagement.push_opens_7d", DAY + HOUR_MS)

    assert value == {"value": 2, "event_time": _iso(DAY + HOUR_MS), "age_ms": 0}


def test_partials_of_several_shards_merge_into_one_value(world: ServingWorld) -> None:
    at = DAY + 9 * HOUR_MS
    world.feed([_view("sharded", at - 3 * MINUTE_MS)], shard_id="shardId-000000000001")
    world.feed([_view("sharded", at - 3 * MINUTE_MS), _view("sharded", at - 2 * MINUTE_MS)],
               shard_id="shardId-000000000002")

    value = _feature(world, ("user", "sharded"), "user_engagement.views_1h", at)

    assert value == {"value": 3, "event_time": _iso(at - 2 * MINUTE_MS), "age_ms": 2 * MINUTE_MS}


def _stored_state(world: ServingWorld, pk: str, sk: str) -> dict[str, Any]:
    item = world.dynamodb.get_item(
        TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    )["Item"]
    state: dict[str, Any] = json.loads(state_text(item))
    return state


def test_a_session_tile_past_its_retention_is_ignored_though_its_item_is_still_stored(
    world: ServingWorld, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audience, "ENTITY_ITEM_BYTES", 0)  # every tile in a tile item
    kickoff = DAY + 6 * HOUR_MS
    world.feed([{"event_type": "score_update", "time_ms": kickoff, "game_id": "g-long",
                 "home_score": 0, "away_score": 0, "period": 1, "clock_seconds": 0,
                 "status": "live"}])
    world.feed([{"event_type": "video_play", "time_ms": kickoff + MINUTE_MS, "user_id": "early",
                 "content_id": "stream", "game_id": "g-long", "watch_seconds": 60.0}])
    # From another shard: the new tile has an item of its own; the first tile's is still stored.
    world.feed([{"event_type": "video_play", "time_ms": kickoff + 13 * HOUR_MS,
                 "user_id": "late", "content_id": "stream", "game_id": "g-long",
                 "watch_seconds": 60.0}], shard_id=OTHER_SHARD)
    at = kickoff + 13 * HOUR_MS + MINUTE_MS
    game = ("game", "g-long")

    viewers = _feature(world, game, "game_live.viewers_since_kickoff", at)

    # Session tiles live 12 h after they end: the one "early" watched in expired an hour ago.
    assert viewers["value"] == 1
    assert _feature(world, game, "game_live.viewers_since_kickoff", kickoff + HOUR_MS)["value"] == 1
    early_start = (kickoff + MINUTE_MS) // 1000
    early_item = audience_sk("game_live", 60, early_start)
    assert tile_key(early_start) in _stored_state(world, "game#g-long", early_item)["60"]


def test_an_item_whose_ttl_has_passed_is_ignored_inside_its_window(world: ServingWorld) -> None:
    at = DAY + 8 * HOUR_MS
    world.feed([_view("expiring", at - 10 * MINUTE_MS), _view("expiring", at - 5 * MINUTE_MS)])
    key = {"pk": {"S": "user#expiring"}, "sk": {"S": "user_engagement"}}
    before = _feature(world, ("user", "expiring"), "user_engagement.views_1h", at)
    world.dynamodb.update_item(  # as a shorter retention would have set it
        TableName=TABLE, Key=key, UpdateExpression="SET expires_at = :gone",
        ExpressionAttributeValues={":gone": {"N": str(at // 1000)}},
    )

    after = _feature(world, ("user", "expiring"), "user_engagement.views_1h", at)

    assert before["value"] == 2
    assert after is None  # though DynamoDB (and moto) still returns the item
    assert "Item" in world.dynamodb.get_item(TableName=TABLE, Key=key)


def test_an_audience_item_past_its_ttl_is_ignored_while_the_other_tiles_count(
    world: ServingWorld, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audience, "ENTITY_ITEM_BYTES", 0)  # every tile in a tile item
    at = DAY + 7 * HOUR_MS
    world.feed([_view("u-a", at - 10 * MINUTE_MS) | {"content_id": "c-ttl"}])
    world.feed([_view("u-b", at - 5 * MINUTE_MS) | {"content_id": "c-ttl"}],
               shard_id=OTHER_SHARD)
    content = ("content", "c-ttl")
    before = _feature(world, content, "content_trending.views_1h", at)
    world.dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": "content#c-ttl"},
             "sk": {"S": audience_sk("content_trending", 60,
                                     (at - 5 * MINUTE_MS) // 60_000 * 60)}},
        UpdateExpression="SET expires_at = :gone",
        ExpressionAttributeValues={":gone": {"N": str(at // 1000)}},
    )

    after = _feature(world, content, "content_trending.views_1h", at)

    assert before["value"] == 2
    assert after == {"value": 1, "event_time": _iso(at - 10 * MINUTE_MS),
                     "age_ms": 10 * MINUTE_MS}
