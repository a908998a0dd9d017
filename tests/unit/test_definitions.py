"""Feature definitions: an invalid one fails, at synth and at cold start, naming what is wrong."""

from __future__ import annotations

from dataclasses import replace

import aws_cdk as cdk
import pytest

from fastbreak.definitions import (
    CATALOG,
    Aggregation,
    Catalog,
    DefinitionError,
    Feature,
    FeatureGroup,
    Field,
    FieldType,
    Window,
)
from fastbreak.engine import MemorySink, OnlineStore, StreamProcessor
from fastbreak.engine.plan import GROUP_ITEM_BUDGET_BYTES, compile_plan, max_group_item_bytes
from localplatform.memory_dynamodb import MemoryDynamoDB
from stacks import build_platform, load_settings

A = Aggregation
HOUR = Window.sliding("1h", "1m")


def with_group(group: FeatureGroup) -> Catalog:
    return replace(CATALOG, groups=(*CATALOG.groups, group))


def group(*features: Feature, name: str = "fan_stats", entity: str = "user",
          sources: tuple[str, ...] = ("content_view", "video_play"), lateness: int = 600
          ) -> FeatureGroup:
    return FeatureGroup(name, entity, sources, features, allowed_lateness_seconds=lateness)


VIEWS = Feature("views", A.COUNT, (HOUR,), events=("content_view",))

INVALID: list[tuple[Catalog, str]] = [
    (with_group(group(VIEWS, entity="player")),
     "feature group 'fan_stats': field 'entity' names unknown entity 'player'"),
    (with_group(group(VIEWS, sources=("content_view", "tweet"))),
     "feature group 'fan_stats': field 'sources' names unknown event 'tweet'"),
    (with_group(group(VIEWS, entity="game", sources=("push_open",))),
     "feature group 'fan_stats': field 'sources': event 'push_open' v1 has no key for entity "
     "'game'"),
    (with_group(group()), "feature group 'fan_stats': field 'features' is empty"),
    (with_group(group(VIEWS, name="FanStats")),
     "feature group 'FanStats': field 'name' value 'FanStats' must be snake_case"),
    (with_group(group(VIEWS, lateness=30 * 24 * 3600)),
     "feature group 'fan_stats': field 'allowed_lateness_seconds' must be within 0..604800"),
    (with_group(replace(CATALOG.groups[0], features=(VIEWS,))),
     "feature group 'user_engagement' is declared twice"),
    (with_group(group(Feature("watched", A.SUM, (HOUR,), "watch_seconds"))),
     "feature group 'fan_stats', feature 'watched': field 'field' names 'watch_seconds', "
     "missing from event 'content_view' v1"),
    (with_group(group(Feature("sports", A.SUM, (HOUR,), "sport", events=("content_view",)))),
     "feature 'sports': field 'field' names 'sport' of type string; sum needs a number"),
    (with_group(group(Feature("views", A.COUNT, (HOUR,), "content_id"))),
     "feature group 'fan_stats', feature 'views': field 'field' must be empty for count"),
    (with_group(group(Feature("last", A.LAST, (HOUR,)))),
     "feature group 'fan_stats', feature 'last': field 'field' is required for last"),
    (with_group(group(Feature("top", A.TOP_K, (HOUR,), "content_id", size=0))),
     "feature group 'fan_stats', feature 'top': field 'size' must be within 1..100, got 0"),
    (with_group(group(Feature("views", A.COUNT, (Window.sliding("1h", "7m"),)))),
     "feature 'views': window '1h': field 'tile_seconds' (420) must divide the size (3600)"),
    (with_group(group(Feature("views", A.COUNT, (Window.since_kickoff(),)))),
     "feature 'views': field 'windows': since_kickoff needs a game entity, got 'user'"),
    (with_group(group(Feature("views", A.COUNT, (HOUR,), events=("game_follow",)))),
     "feature 'views': field 'events' names ['game_follow'], not among the group's sources"),
    (replace(CATALOG, events=(*CATALOG.events, replace(CATALOG.events[0], version=4))),
     "event 'content_view': field 'version' must be consecutive, got [1, 2, 4]"),
    (replace(CATALOG, events=(*CATALOG.events, replace(
        CATALOG.events[-1], version=2,
        fields=(*CATALOG.events[-1].fields, Field("surface", FieldType.INT)),
    ))),
     "event 'experiment_exposure' v2: field 'surface' is int but event 'content_view' v2 "
     "declares it string"),
    (replace(CATALOG, partition_entity="device"),
     "catalog: field 'partition_entity' names unknown entity 'device'"),
]


@pytest.mark.parametrize(("catalog", "message"), INVALID, ids=[m[:40] for _, m in INVALID])
def test_an_invalid_definition_is_refused_naming_the_object_and_field(
    catalog: Catalog, message: str
) -> None:
    with pytest.raises(DefinitionError) as refused:
        catalog.validate()
    assert message in str(refused.value)


# A distinct count of a fan's pages over a day in one-minute tiles: 1,447 sketches of up to
# 5.5 KB in one user item, far past DynamoDB's 400 KB.
PAGES = group(
    Feature("distinct_pages", A.APPROX_DISTINCT, (Window.sliding("24h", "1m"),), "content_id"),
    name="fan_pages",
)


def test_a_group_item_that_could_outgrow_dynamodb_is_refused_naming_the_feature() -> None:
    catalog = with_group(PAGES).validate()  # valid as a definition on its own

    with pytest.raises(DefinitionError) as refused:
        compile_plan(catalog)

    message = str(refused.value)
    assert "feature group 'fan_pages'" in message and "feature 'distinct_pages'" in message
    assert "1447 tiles of 60 s" in message and "field 'windows'" in message


def test_larger_tiles_for_the_long_window_fix_it() -> None:
    hourly = group(
        Feature("distinct_pages", A.APPROX_DISTINCT, (Window.sliding("24h", "1h"),),
                "content_id"),
        name="fan_pages",
    )
    plan = compile_plan(with_group(hourly)).groups["fan_pages"]
    assert max_group_item_bytes(plan) <= GROUP_ITEM_BUDGET_BYTES


def test_the_shipped_user_groups_fit_an_item_at_their_worst() -> None:
    plan = compile_plan(CATALOG)
    for name in ("user_engagement", "user_affinity", "user_experiments"):
        assert not plan.groups[name].sharded
        assert max_group_item_bytes(plan.groups[name]) <= GROUP_ITEM_BUDGET_BYTES, name
    # Audience groups keep one tile per item: no item holds a day of sketches.
    assert plan.groups["game_live"].sharded and plan.groups["content_trending"].sharded


def test_the_processor_refuses_the_definition_at_cold_start() -> None:
    store = OnlineStore(MemoryDynamoDB(), "online")
    with pytest.raises(DefinitionError, match="fan_pages"):
        StreamProcessor(store, MemorySink(), with_group(PAGES))


def test_synth_refuses_the_definition_before_building_a_stack() -> None:
    app = cdk.App()
    settings = load_settings("dev", {"dev": {}})
    with pytest.raises(DefinitionError, match="feature group 'fan_pages'"):
        build_platform(app, settings, with_group(PAGES))
    assert app.node.children == []
