"""The processor's rules over raw-table rows: identity, lateness, items, order, cut-over; and the
reference path's point in time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastbreak.definitions import CATALOG
from fastbreak.engine.layout import entity_pk, group_sk, tile_sk
from fastbreak.engine.plan import compile_plan
from fastbreak.engine.timestamps import format_ms
from fastbreak.offline.reference import entity_values
from fastbreak.offline.replay import RawEvent, RawEvents, first_copies, route

PLAN = compile_plan(CATALOG)
T0 = 1_795_717_800_000
S0, S1 = "shardId-000000000000", "shardId-000000000001"


def view(event_id: str, time_ms: int, *, position: int, shard: str = S0, user: str = "u1",
         content: str = "c1", arrival_ms: int | None = None) -> RawEvent:
    return RawEvent("content_view", event_id, time_ms,
                    {"user_id": user, "content_id": content, "sport": "nba", "surface": "home"},
                    shard, (position, 0), time_ms + 1_000 if arrival_ms is None else arrival_ms)


def test_of_several_copies_the_one_at_the_lowest_position_is_applied() -> None:
    first = view("e1", T0, position=7, user="u1")
    retry = view("e1", T0, position=9, user="u2")  # a copy may even disagree on its payload
    assert first_copies([retry, first]) == [first]


def test_an_event_is_its_id_and_time_within_its_shard() -> None:
    events = [view("e1", T0, position=1), view("e1", T0 + 1, position=2),
              view("e1", T0, position=3, shard=S1)]
    assert first_copies(events) == events


def test_first_copies_come_in_fold_order() -> None:
    later, earlier, other = (view("a", T0, position=5), view("b", T0 + 9, position=2),
                             view("c", T0, position=1, shard=S1))
    assert first_copies([other, later, earlier]) == [earlier, later, other]


def test_an_event_later_than_a_groups_lateness_feeds_only_the_groups_that_allow_it() -> None:
    # 40 minutes late: past content_trending's 30 minutes, within the user groups' 2 hours
    late = view("e1", T0, position=1, arrival_ms=T0 + 40 * 60_000)
    items = route(PLAN, [late])
    assert {item.ref.group for item in items.values()} == {"user_engagement", "user_affinity"}


def test_user_groups_keep_one_item_per_user_and_audience_groups_one_per_tile_and_shard() -> None:
    events = [view("e1", T0, position=1), view("e2", T0 + 61_000, position=2),
              view("e3", T0 + 5_000, position=3, shard=S1)]
    items = route(PLAN, events, groups=("user_engagement", "content_trending"))
    user_item = items[(entity_pk("user", "u1"), group_sk("user_engagement"))]
    assert [event.event_id for event, _ in user_item.contributions] == ["e1", "e2", "e3"]
    assert user_item.marks == {S0: (2, 0), S1: (3, 0)}
    start, hour = T0 // 1000, T0 // 1000 - T0 // 1000 % 3600
    assert {key for key in items if key[1].startswith("content_trending")} == {
        (entity_pk("content", "c1"), tile_sk("content_trending", 60, start, S0)),
        (entity_pk("content", "c1"), tile_sk("content_trending", 60, start + 60, S0)),
        (entity_pk("content", "c1"), tile_sk("content_trending", 60, start, S1)),
        (entity_pk("content", "c1"), tile_sk("content_trending", 3600, hour, S0)),
        (entity_pk("content", "c1"), tile_sk("content_trending", 3600, hour, S1)),
    }


def test_a_cut_over_keeps_each_shards_events_up_to_its_position() -> None:
    events = [view("e1", T0, position=1), view("e2", T0, position=5),
              view("e3", T0, position=2, shard=S1)]
    items = route(PLAN, events, groups=("user_engagement",), until={S0: (1, 0)})
    (item,) = items.values()
    assert [event.event_id for event, _ in item.contributions] == ["e1"]


def raw_row(**overrides: Any) -> dict[str, Any]:
    return {"event_type": "content_view", "schema_version": 1, "event_id": "e1",
            "event_time": format_ms(T0), "user_id": "u1", "content_id": "c1", "sport": "nba",
            "surface": "unknown", "position": None, "kinesis_shard_id": S0,
            "kinesis_sequence_number": "49590338271490256608559692538361571095921575989136588898",
            "kinesis_sub_sequence": 3, "kinesis_arrival_time": format_ms(T0 + 500),
            "rejection": None, **overrides}


def test_raw_rows_become_events_with_the_latest_schemas_fields_and_refused_rows_none() -> None:
    events = RawEvents(CATALOG)
    event = events.event(raw_row())
    assert event is not None
    assert event.payload == {"user_id": "u1", "content_id": "c1", "sport": "nba",
                             "surface": "unknown"}
    assert event.position == (49590338271490256608559692538361571095921575989136588898, 3)
    assert (event.time_ms, event.arrival_ms) == (T0, T0 + 500)
    assert events.event(raw_row(rejection="wrong_type")) is None
    aware = events.event(raw_row(event_time=datetime.fromtimestamp(T0 / 1000, UTC),
                                 kinesis_arrival_time=T0 + 500))
    assert aware is not None and (aware.time_ms, aware.arrival_ms) == (T0, T0 + 500)


def test_in_event_time_mode_no_event_after_the_spine_time_leaks_in() -> None:
    events = [view("e1", T0, position=1), view("e2", T0 + 10_000, position=2)]
    before, at = entity_values(PLAN, ["user_engagement"], "u1", events, [T0 + 9_999, T0 + 10_000])
    assert before["user_engagement.views_1h"] is not None
    assert before["user_engagement.views_1h"].value == 1
    assert at["user_engagement.views_1h"] is not None
    assert at["user_engagement.views_1h"].value == 2


def test_as_served_counts_what_had_arrived_including_events_dated_ahead() -> None:
    late = view("late", T0, position=2, arrival_ms=T0 + 600_000)
    ahead = view("ahead", T0 + 120_000, position=1, arrival_ms=T0 + 30_000)
    (row,) = entity_values(PLAN, ["user_engagement"], "u1", [ahead, late], [T0 + 60_000],
                           as_served=True)
    value = row["user_engagement.views_24h"]
    assert value is not None and value.value == 1 and value.event_time_ms == T0 + 120_000
    (event_time_row,) = entity_values(PLAN, ["user_engagement"], "u1", [ahead, late],
                                      [T0 + 60_000])
    counted = event_time_row["user_engagement.views_24h"]
    assert counted is not None and counted.value == 1 and counted.event_time_ms == T0


def test_rows_come_back_in_the_order_of_the_times_given() -> None:
    events = [view("e1", T0, position=1), view("e2", T0 + 10_000, position=2)]
    rows = entity_values(PLAN, ["user_engagement"], "u1", events,
                         [T0 + 20_000, T0 - 1, T0 + 5_000])
    counts = [row["user_engagement.views_1h"] for row in rows]
    assert [None if c is None else c.value for c in counts] == [2, None, 1]


def test_a_top_k_past_its_capacity_is_folded_in_position_order_whatever_arrives_late() -> None:
    from fastbreak.engine.fold import ItemFold, ItemState, merge_items
    from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS
    from tests.fixtures.offline import OFFLINE_CATALOG

    plan = compile_plan(OFFLINE_CATALOG)
    group = plan.groups["user_stats"]
    # 60 distinct items (the top-2's 32 counters overflow); every fifth event arrived 500 s
    # after its event time (within the group's lateness), after events dated later than it
    events = [
        RawEvent("view", f"e{n}", T0 + n * 1_000 - (500_000 if n % 5 == 0 else 0),
                 {"user_id": "u1", "item_id": f"i{n % 60}", "amount": 1.0, "qty": None,
                  "channel": "web"}, S0, (n, 0), T0 + n * 1_000)
        for n in range(400)
    ]
    times = [T0 - 500_000 + n * 7_000 for n in range(150)]
    rows = entity_values(plan, ["user_stats"], "u1", events, times)
    for at, row in zip(times, rows, strict=True):
        included = [e for e in events if e.time_ms <= at]
        fold = ItemFold({})
        fold.fold((e, route_of(plan, e)) for e in included)
        fold.finish(group, False, FUTURE_TOLERANCE_SECONDS)
        state = ItemState("user_stats", None, fold.tiles)
        expected = merge_items(group, [state], at)["top_items_lifetime"]
        found = row["user_stats.top_items_lifetime"]
        assert found is not None and found.value == expected.value, at


def route_of(plan: Any, event: RawEvent) -> Any:
    (found,) = [r for r in plan.routes[event.event_type] if r.group.group.name == "user_stats"]
    return found.fold
