"""The audience stage (``fastbreak.engine.audience``) and the merge of partials it calls."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbreak.definitions import CATALOG
from fastbreak.engine import AudienceMerger, ItemMerge, audience, item_size
from fastbreak.engine.fold import ItemFold, fold_partial
from fastbreak.engine.layout import OUTBOX_PREFIX, audience_sk, tile_sk
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS, compile_plan
from fastbreak.engine.timestamps import format_ms
from localplatform.kinesis_events import StreamRecord, lambda_record, stream_of
from localplatform.memory_dynamodb import state_text
from tests.fixtures.two_stages import TwoStages

T0 = 1_795_717_800_000
ARRIVAL_S = T0 / 1000 + 240
READ_MS = T0 + 240_000
PLAN = compile_plan(CATALOG)


class _Event:
    """What the fold reads of an event."""

    def __init__(self, event_type: str, n: int, time_ms: int, payload: dict[str, Any]) -> None:
        self.event_type, self.event_id, self.time_ms, self.payload = (
            event_type, f"e{n:04d}", time_ms, payload)


def _events(seed: int, count: int) -> list[_Event]:
    rng = random.Random(seed)
    events = []
    for n in range(count):
        kind = rng.choice(["content_view", "video_play", "game_follow", "score_update",
                           "content_click"])
        payload = {"user_id": f"u{rng.randrange(40)}", "content_id": f"c{rng.randrange(3)}",
                   "game_id": "g1", "watch_seconds": rng.randrange(1, 400) / 4,
                   "team_id": f"t{rng.randrange(4)}", "sport": rng.choice(["nba", "nfl"]),
                   "position": rng.randrange(20), "home_score": rng.randrange(5),
                   "away_score": rng.randrange(5), "period": rng.randrange(1, 4),
                   "status": rng.choice(["scheduled", "live", "final"])}
        events.append(_Event(kind, n, T0 + rng.randrange(40 * 60_000), payload))
    return events


def _contributions(group: str, events: list[_Event]) -> list[tuple[_Event, Any]]:
    return [(event, route.fold) for event in events
            for route in PLAN.routes.get(event.event_type, ()) if route.group.group.name == group]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 199), max_size=6),
       group=st.sampled_from(["game_live", "content_trending", "user_engagement",
                              "user_affinity"]))
def test_merging_partials_in_any_grouping_and_order_equals_one_fold(
    seed: int, cuts: list[int], group: str,
) -> None:
    plan = PLAN.groups[group]
    events = _events(seed, 200)
    whole, _ = fold_partial(plan, _contributions(group, events))
    bounds = [0, *sorted(set(cuts)), len(events)]
    partials = [fold_partial(plan, _contributions(group, events[low:high]))[0]
                for low, high in itertools.pairwise(bounds)]
    random.Random(seed).shuffle(partials)
    merge = ItemMerge(plan, {})
    for index, partial in enumerate(partials):
        if index % 2:  # some merged into the stored form, some into live states
            merge.finish(FUTURE_TOLERANCE_SECONDS)
            merge = ItemMerge(plan, json.loads(json.dumps(merge.tiles)), merge.newest_ms)
        merge.merge(partial)
    merge.finish(FUTURE_TOLERANCE_SECONDS)
    folded = ItemFold({})
    folded.fold(_contributions(group, events))
    folded.finish(plan, False, FUTURE_TOLERANCE_SECONDS)
    assert merge.tiles == folded.tiles  # pruned alike, too
    assert {s: t for s, t in whole.items() if t} == {
        s: t for s, t in fold_partial(plan, _contributions(group, events))[0].items() if t}


# ---- the stage over an in-process DynamoDB and partials stream ---------------------------------
def plays(count: int, start: int = 0, game: str = "g1", minute: int = 0) -> list[dict[str, Any]]:
    return [
        {"event_type": "video_play", "schema_version": 1, "event_id": f"p{n}",
         "event_time": format_ms(T0 + minute * 60_000 + n % 100 * 100), "user_id": f"u{n % 7}",
         "content_id": "c1", "game_id": game, "watch_seconds": 1.5}
        for n in range(start, start + count)
    ]


def records(stream: list[StreamRecord]) -> list[dict[str, Any]]:
    return [lambda_record(record) for record in stream]


def game(stages: TwoStages, key: str = "g1") -> dict[str, Any]:
    return stages.values("game_live", key, READ_MS)


def audience_items(stages: TwoStages, pk: str = "game#g1") -> list[str]:
    return sorted(sk for key_pk, sk in stages.table.items if key_pk == pk)


def test_a_game_seen_from_many_shards_is_one_entity_item() -> None:
    stages = TwoStages(clock_ms=lambda: READ_MS)
    for shard in range(20):
        documents = plays(10, start=shard * 10, minute=shard % 3)
        stages.process(records(stream_of(documents, ARRIVAL_S, start=shard * 10,
                                          shard_id=f"shardId-{shard:012d}")))
    start = T0 // 1000
    assert audience_items(stages) == ["game_live#entity"]
    held = json.loads(state_text(stages.table.items[("game#g1", "game_live#entity")]))
    assert sorted(held["60"]) == [f"{start + minute * 60:011d}" for minute in range(3)]
    assert game(stages)["watch_seconds_5m"] == 300.0


# ---- where an entity's tiles live -------------------------------------------------------------
def viewers(count: int, start: int, minute: int) -> list[dict[str, Any]]:
    """Plays of ``count`` distinct viewers in one minute: a game whose minute tiles grow."""
    return [dict(play, user_id=f"v{n}") for n, play in
            zip(range(start, start + count), plays(count, start=start, minute=minute),
                strict=True)]


def hot_game(minutes: int = 4, per_minute: int = 60) -> list[list[StreamRecord]]:
    """Stage-1 batches of a game with ``per_minute`` new viewers a minute."""
    return [stream_of(viewers(per_minute, minute * per_minute, minute), ARRIVAL_S,
                      start=minute * per_minute) for minute in range(minutes)]


def tiles_by_item(stages: TwoStages, pk: str = "game#g1") -> dict[str, set[tuple[str, str]]]:
    return {sk: {(section, start) for section, tiles in
                 json.loads(state_text(item)).items() for start in tiles}
            for (item_pk, sk), item in stages.table.items.items() if item_pk == pk}


def test_tiles_that_outgrow_the_entity_item_get_tile_items_and_the_values_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stages = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    for batch in hot_game():
        stages.process(records(batch))
    by_item = tiles_by_item(stages)
    assert set(by_item) - {"game_live#entity"}, "no tile outgrew the entity item"
    every = [tile for tiles in by_item.values() for tile in tiles]
    assert len(every) == len(set(every))  # a tile lives in one item
    entity = stages.table.items[("game#g1", "game_live#entity")]
    first_out = min(int(sk.rsplit("#", 1)[1]) for sk in by_item if "#t60#" in sk)
    assert entity["tiles_out"]["S"] == f"60:{first_out}"
    # later minute tiles go to tile items without writing the entity item again
    assert all(start >= f"{first_out:011d}" for sk in by_item if "#t60#" in sk
               for _, start in by_item[sk])
    # the same events with every tile in the entity item serve the same values
    monkeypatch.setattr(audience, "ENTITY_ITEM_BYTES", 400 * 1024)
    whole = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    for batch in hot_game():
        whole.process(records(batch))
    assert audience_items(whole) == ["game_live#entity"]
    assert game(stages) == game(whole)
    assert game(stages)["watch_seconds_5m"] == 240 * 1.5


class Crash(BaseException):
    """The execution environment dies: nothing in the engine may catch it."""


def test_a_crash_between_the_entity_item_and_a_new_tile_item_is_completed_by_the_retry(
) -> None:
    batches = hot_game(minutes=6)
    entity_key = ("game#g1", "game_live#entity")
    probe = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    overflow = next(n for n, batch in enumerate(batches) if probe.process(records(batch))
                    and "tiles_out" in probe.table.items[entity_key])
    stages = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    for batch in batches[:overflow]:
        stages.process(records(batch))
    stages.stage1.process(records(batches[overflow]))  # its partials, not merged yet
    stages.stage1.process(records(batches[overflow + 1]))
    (shard,) = stages.kinesis.shard_ids
    partials = stages.kinesis.take(shard)

    def crash_on_a_tile_item(operation: str, request: dict[str, Any]) -> None:
        key = request.get("Key", {})
        if (operation == "UpdateItem" and key["pk"]["S"] == "game#g1"
                and key["sk"]["S"] != entity_key[1]):
            raise Crash

    stages.table.fault = crash_on_a_tile_item
    with pytest.raises(Crash):
        stages.stage2.process(records(partials))
    stages.table.fault = None
    assert "tiles_out" in stages.table.items[entity_key]  # recorded before the tile items
    assert set(tiles_by_item(stages)) == {"game_live#entity"}
    # the retry, with other boundaries: each partial applied once, where its tiles live
    for cut in (partials[:1], partials):
        assert stages.stage2.process(records(cut)).failed_sequence_numbers == []
    for batch in batches[overflow + 2:]:
        stages.process(records(batch))
    by_item = tiles_by_item(stages)
    every = [tile for tiles in by_item.values() for tile in tiles]
    assert len(every) == len(set(every)) and len(by_item) > 1
    assert game(stages)["watch_seconds_5m"] == 300 * 1.5


def test_tile_items_of_the_first_audience_layout_are_merged_into_not_copied() -> None:
    # The first release of the audience stage kept every tile in a tile item of its own.
    stages = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    stages.process(records(stream_of(plays(4), ARRIVAL_S)))
    entity = stages.table.items.pop(("game#g1", "game_live#entity"))
    tiles = json.loads(state_text(entity))
    for section, section_tiles in tiles.items():
        for start, data in section_tiles.items():
            sk = audience_sk("game_live", int(section), int(start))
            stages.table.items[("game#g1", sk)] = {
                **entity, "sk": {"S": sk}, "state": {"S": json.dumps({section: {start: data}})}}
    stages.process(records(stream_of(plays(4, start=4), ARRIVAL_S, start=4)))
    assert audience_items(stages) == [f"game_live#t60#{T0 // 1000:011d}"]
    assert game(stages)["watch_seconds_5m"] == 12.0


def test_a_concurrent_writer_of_the_entity_never_leaves_a_tile_in_two_items() -> None:
    # A redrive of older partials of the shard racing the mapping: both read the entity item,
    # both find the same new minute tile; one's conditional write of the entity item fails and
    # it merges on top of what the other placed.
    stages = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    batches = hot_game(minutes=5)
    for batch in batches[:3]:
        stages.process(records(batch))
    documents = viewers(60, 1000, 3)
    stages.stage1.process(records(stream_of(documents[:30], ARRIVAL_S, start=1000)))
    stages.stage1.process(records(stream_of(documents[30:], ARRIVAL_S, start=1030)))
    (shard,) = stages.kinesis.shard_ids
    older, newer = [[record] for record in stages.kinesis.take(shard)
                    if record.partition_key == "game#g1"]
    other = AudienceMerger(stages.store, stages.sink, CATALOG, clock_ms=lambda: READ_MS)
    raced = {"done": False}

    def redrive_first(operation: str, request: dict[str, Any]) -> None:
        if operation == "UpdateItem" and not raced["done"]:
            raced["done"] = True
            stages.table.fault = None
            assert other.process(records(older)).failed_sequence_numbers == []

    stages.table.fault = redrive_first
    result = stages.stage2.process(records(newer))
    assert raced["done"] and result.writes.conflicts >= 1
    assert result.failed_sequence_numbers == []
    every = [tile for tiles in tiles_by_item(stages).values() for tile in tiles]
    assert len(every) == len(set(every))
    assert game(stages)["watch_seconds_5m"] == 240 * 1.5


def test_a_redelivered_partials_batch_with_other_boundaries_changes_nothing() -> None:
    stages = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    for batch in range(6):
        stages.stage1.process(records(stream_of(plays(5, start=batch * 5, minute=batch % 2),
                                                ARRIVAL_S, start=batch * 5)))
    partials = stages.kinesis.take(stages.kinesis.shard_ids[0])
    assert len(partials) == 6 * 2  # per batch: the game and the content
    stage2 = stages.stage2
    assert stage2.process(records(partials[:7])).failed_sequence_numbers == []
    before = {key: dict(item) for key, item in stages.table.items.items()}
    again = stage2.process(records(partials[2:5]))
    assert again.writes.writes == 0 and stages.table.items == before
    rest = stage2.process(records(partials[3:]))
    assert rest.writes.writes > 0 and rest.failed_sequence_numbers == []
    # the same partials put twice (a re-emission) are dropped by identity, in or across batches
    copies = [StreamRecord(str(int(r.sequence_number) + 10**6), r.partition_key, r.data,
                           r.arrival, r.shard_id) for r in partials]
    assert stage2.process(records(copies)).duplicate_partials == len(partials)
    assert game(stages)["watch_seconds_5m"] == 45.0


def test_an_unreadable_partial_is_quarantined_and_the_rest_applied() -> None:
    stages = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    stages.stage1.process(records(stream_of(plays(4), ARRIVAL_S)))
    (shard,) = stages.kinesis.shard_ids
    partials = stages.kinesis.take(shard)
    odd = StreamRecord(str(int(partials[-1].sequence_number) + 1), "game#g1",
                       b'{"partial": 99}', ARRIVAL_S, shard)
    result = stages.stage2.process(records([*partials, odd]))
    assert result.failed_sequence_numbers == [] and result.invalid_by_reason == {
        "bad_partial": 1}
    lines = [json.loads(line) for key, body in stages.sink.objects.items()
             if key.startswith("quarantine/") for line in body.splitlines()]
    assert [line["reason"] for line in lines] == ["bad_partial"]
    assert game(stages)["watch_seconds_5m"] == 6.0


def test_items_of_the_previous_layout_are_read_with_the_new_ones() -> None:
    # A table written by the release before the audience stage: one tile partial per shard.
    stages = TwoStages(clock_ms=lambda: READ_MS)
    stages.process(records(stream_of(plays(4), ARRIVAL_S)))
    start = T0 // 1000
    (new_key,) = [key for key in stages.table.items if key[0] == "game#g1"]
    old = dict(stages.table.items[new_key])
    old_key = ("game#g1", tile_sk("game_live", 60, start, "shardId-000000000009"))
    stages.table.items[old_key] = {**old, "sk": {"S": old_key[1]}}
    assert game(stages)["watch_seconds_5m"] == 12.0  # both counted: 6.0 each


def test_a_partial_that_would_take_an_item_past_the_limit_is_refused_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stages = TwoStages(clock_ms=lambda: READ_MS, partial_shards=1)
    for batch in range(4):  # four partials of 40 distinct viewers each, one tile
        documents = [dict(play, user_id=f"v{batch}-{n}") for n, play in
                     enumerate(plays(40, start=batch * 40))]
        stages.stage1.process(records(stream_of(documents, ARRIVAL_S, start=batch * 40)))
    (shard,) = stages.kinesis.shard_ids
    partials = [r for r in stages.kinesis.take(shard) if r.partition_key == "game#g1"]
    # room for the key, the marks and two partials' viewers (sparse sketches of 80 registers)
    monkeypatch.setattr(item_size, "MAX_ITEM_BYTES", item_size.FIXED_BYTES + 1000)
    result = stages.stage2.process(records(partials))
    assert result.items_too_large == 1 and result.failed_sequence_numbers == []
    refused = [json.loads(line) for key, body in stages.sink.objects.items()
               if key.startswith("quarantine/") for line in body.splitlines()]
    assert {line["reason"] for line in refused} == {"item_too_large"}
    assert 0 < len(refused) < 4
    assert game(stages)["watch_seconds_5m"] == 60.0 * (4 - len(refused))


def test_the_outbox_keeps_nothing_pending_after_a_clean_run() -> None:
    stages = TwoStages(clock_ms=lambda: READ_MS)
    for batch in range(3):
        stages.process(records(stream_of(plays(5, start=batch * 5), ARRIVAL_S, start=batch * 5)))
    index_items = [key for key in stages.table.items if key[0] == f"{OUTBOX_PREFIX}shardId-"
                   "000000000000"]
    assert index_items == []
