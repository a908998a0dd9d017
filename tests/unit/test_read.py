"""Read-time merge: which tiles each window takes, TTL, and partials of several shards."""

from __future__ import annotations

import json
from dataclasses import replace

from fastbreak.definitions import (
    CATALOG,
    Aggregation,
    Catalog,
    Feature,
    FeatureGroup,
    Window,
)
from fastbreak.engine.layout import group_sk, tile_key
from fastbreak.engine.online_store import StoredItem
from fastbreak.engine.plan import LIFETIME, compile_plan
from fastbreak.engine.read import merge_group

PUSHES = FeatureGroup(
    "push_stats", "user", ("push_open",),
    (
        Feature("opens", Aggregation.COUNT,
                (Window.sliding("3m", "1m"), Window.tumbling("1h"), Window.lifetime())),
    ),
)
CATALOG_WITH_PUSHES: Catalog = replace(CATALOG, groups=(*CATALOG.groups, PUSHES)).validate()
PLAN = compile_plan(CATALOG_WITH_PUSHES).groups["push_stats"]
HOUR = 1_795_716_000  # an hour boundary, epoch s


def item(tiles: dict[tuple[int, int], int], shard: str = "shard-a",
         expires_at: int | None = None) -> StoredItem:
    """A per-shard partial holding ``{(tile seconds, tile start): opens}``."""
    state: dict[str, dict[str, object]] = {}
    for (tile_seconds, start), count in tiles.items():
        state.setdefault(str(tile_seconds), {})[tile_key(start)] = {
            "opens": [(start + 1) * 1000, count]
        }
    return StoredItem(
        pk="user#u1", sk=f"{group_sk('push_stats')}#{shard}", state=json.dumps(state),
        hw=f"{shard}=1.0", expires_at=expires_at,
        event_time_ms=max((start + 1) * 1000 for _, start in tiles),
    )


def tile(tile_seconds: int, start: int, count: int, shard: str = "shard-a",
         expires_at: int | None = None) -> StoredItem:
    return item({(tile_seconds, start): count}, shard, expires_at)


def opens(items: list[StoredItem], as_of_s: int, now_s: int | None = None) -> dict[str, int]:
    now_ms = None if now_s is None else now_s * 1000
    values = merge_group(PLAN, items, as_of_s * 1000, now_ms)
    return {name: value.value for name, value in values.items()}


def test_a_sliding_window_takes_the_tiles_ending_with_the_current_one() -> None:
    minutes = [tile(60, HOUR + 60 * n, 10**n) for n in range(5)]  # 1, 10, 100, 1000, 10000
    # as of minute 3 (+30 s): tiles 1, 2, 3; tile 4 is in the future, tile 0 slid out
    assert opens(minutes, HOUR + 3 * 60 + 30)["opens_3m"] == 10 + 100 + 1000


def test_a_tumbling_window_takes_only_the_tile_holding_the_time() -> None:
    hours = [tile(3600, HOUR - 3600, 5), tile(3600, HOUR, 7)]
    assert opens(hours, HOUR + 59 * 60)["opens_tumbling_1h"] == 7
    assert opens(hours, HOUR - 1)["opens_tumbling_1h"] == 5


def test_partials_of_every_shard_are_merged() -> None:
    items = [tile(LIFETIME, 0, 3, "shard-a"), tile(LIFETIME, 0, 4, "shard-b"),
             tile(60, HOUR, 1, "shard-a"), tile(60, HOUR, 2, "shard-b")]
    values = opens(items, HOUR + 30)
    assert (values["opens_lifetime"], values["opens_3m"]) == (7, 3)


def test_items_past_their_ttl_are_skipped_even_if_still_stored() -> None:
    items = [tile(60, HOUR, 1, expires_at=HOUR + 100), tile(60, HOUR, 2, "shard-b")]
    assert opens(items, HOUR + 30, now_s=HOUR + 100)["opens_3m"] == 2
    assert opens(items, HOUR + 30, now_s=HOUR + 99)["opens_3m"] == 3


def test_values_carry_their_newest_event_time_and_age() -> None:
    values = merge_group(PLAN, [tile(60, HOUR, 1)], (HOUR + 31) * 1000)
    assert values["opens_3m"].event_time_ms == (HOUR + 1) * 1000
    assert values["opens_3m"].age_ms == 30_000
    assert values["opens_tumbling_1h"].event_time_ms is None  # no hourly tile stored


def test_one_item_holds_every_tile_size_and_the_lifetime_state() -> None:
    both = item({(LIFETIME, 0): 9, (60, HOUR): 1, (60, HOUR + 60): 2, (3600, HOUR): 3})
    values = opens([both], HOUR + 90)
    assert (values["opens_lifetime"], values["opens_3m"], values["opens_tumbling_1h"]) == (
        9, 3, 3,
    )


def test_tiles_past_their_retention_are_skipped_inside_a_live_item() -> None:
    # The 1-minute tiles serve a 3-minute window: a tile is kept 3 minutes after it ends.
    old_and_new = item({(60, HOUR): 1, (60, HOUR + 240): 2})
    assert opens([old_and_new], HOUR + 300)["opens_3m"] == 2
    # The same item read as of just after the old tile: both are within the window.
    assert opens([old_and_new], HOUR + 90, now_s=HOUR + 90)["opens_3m"] == 1


def test_items_of_other_groups_are_ignored() -> None:
    stray = replace(tile(60, HOUR, 5), sk="push_stats_v2")
    assert opens([stray, tile(60, HOUR, 1)], HOUR + 30)["opens_3m"] == 1
