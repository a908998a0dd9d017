"""The batch processor over an in-process DynamoDB: idempotency, failures, lateness, dedup."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from fastbreak.definitions import CATALOG, Aggregation, Feature, Window
from fastbreak.engine import (
    MemorySink,
    RetryPolicy,
    dedup,
    item_size,
)
from fastbreak.engine.dedup import LEAF_CAPACITY, SPLIT_MARKER, identity_hash, unpack
from fastbreak.engine.layout import DEDUP_PREFIX, OUTBOX_PREFIX
from fastbreak.engine.timestamps import format_ms
from fastbreak.serving import FeatureClient
from localplatform.kinesis_events import SHARD, StreamRecord, lambda_record, stream_of
from localplatform.memory_dynamodb import MemoryDynamoDB, client_error, state_text
from tests.fixtures.two_stages import TwoStages

T0 = 1_795_717_800_000  # 2026-11-26T18:30:00Z
ARRIVAL_S = T0 / 1000 + 60



def views(count: int, user: str = "u1", start: int = 0, offset_ms: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "event_type": "content_view", "schema_version": 2, "event_id": f"{user}-v{n}",
            "event_time": format_ms(T0 + offset_ms + n * 1000), "user_id": user,
            "content_id": f"c{n % 4}", "sport": "nba", "surface": "home",
        }
        for n in range(start, start + count)
    ]


Built = tuple[TwoStages, MemoryDynamoDB, MemorySink]


def build(table: MemoryDynamoDB | None = None) -> Built:
    """Stage 1 and the audience stage: ``process`` applies a batch to every group."""
    pipeline = TwoStages(table, clock_ms=lambda: T0 + 120_000)
    return pipeline, pipeline.table, pipeline.sink


def records(stream: list[StreamRecord]) -> list[dict[str, Any]]:
    return [lambda_record(record) for record in stream]


def features(processor: TwoStages, group: str = "user_engagement", key: str = "u1"
             ) -> dict[str, Any]:
    """One group's served values, read as the API reads them (None: no event in the window)."""
    reader = FeatureClient(processor.store.client, processor.store.table_name, concurrency=1,
                           clock_ms=lambda: T0 + 120_000)
    served = reader.get(CATALOG.group(group).entity, key, [group]).features
    return {name.split(".", 1)[1]: None if value is None else value.value
            for name, value in served.items()}


def test_one_write_per_touched_item_and_a_replay_writes_nothing() -> None:
    processor, table, _ = build()
    stream = stream_of(views(50), ARRIVAL_S)
    first = processor.process(records(stream))
    audience = processor.audience  # a batch per partials shard the contents hash to
    audience_writes = sum(result.writes.writes for result in audience)
    # user_engagement (1m/1h/1d tiles) and user_affinity: two group items; content_trending:
    # one entity item per content (its 1m and 1h tiles fit one write unit), 4 contents; the two
    # dedup memories (one per partials shard for the audience stage); the emission's content
    # chunk (left to its TTL; its index item was deleted once completed).
    assert first.writes.writes == 2 and audience_writes == 4
    assert len(table.items) == (first.writes.writes + audience_writes + first.dedup_writes
                                + sum(result.dedup_writes for result in audience) + 2)
    assert first.partials_emitted == 4 and first.outbox_writes == 3  # chunk, index, delete
    before = {key: dict(item) for key, item in table.items.items()}
    again = processor.process(records(stream))
    assert again.writes.writes == 0 and again.failed_sequence_numbers == []
    assert again.partials_emitted == 0 and again.duplicate_events == 50
    assert table.items == before
    assert features(processor)["views_1h"] == 50


def test_a_user_group_is_one_item_and_a_small_audience_entity_one_item() -> None:
    processor, table, _ = build()
    documents = views(3, offset_ms=0) + views(3, start=3, offset_ms=120_000)  # minutes 0 and 2
    processor.process(records(stream_of(documents[:4], ARRIVAL_S + 120)))
    processor.process(records(stream_of(documents[4:], ARRIVAL_S + 120, start=4,
                                        shard_id="shardId-000000000001")))
    user_items = {sk for pk, sk in table.items if pk == "user#u1"}
    assert user_items == {"user_engagement", "user_affinity"}
    engagement = json.loads(state_text(table.items[("user#u1", "user_engagement")]))
    assert sorted(engagement) == ["3600", "60", "86400"] and len(engagement["60"]) == 2
    # content c0 was viewed in both minutes, from two shards: one entity item whatever the
    # shards, with a 1-minute tile per minute and one for the hour
    content = sorted(sk for pk, sk in table.items if pk == "content#c0")
    assert content == ["content_trending#entity"]
    tiles = json.loads(state_text(table.items[("content#c0", "content_trending#entity")]))
    start = T0 // 1000
    assert tiles["60"].keys() == {f"{start:011d}", f"{start + 120:011d}"}
    assert tiles["3600"].keys() == {f"{start - start % 3600:011d}"}
    assert features(processor)["views_1h"] == 6
    assert features(processor, "content_trending", "c0")["views_1h"] == 2


def test_a_user_item_written_from_two_shards_keeps_a_mark_per_shard() -> None:
    # After a reshard the child shard carries the user on. Its sequence numbers are lower
    # than the parent's: compared with the parent's mark, its events would look applied.
    processor, table, _ = build()
    parent = stream_of(views(5), ARRIVAL_S, start=1000, shard_id="shardId-000000000000")
    child = stream_of(views(4, start=5), ARRIVAL_S, shard_id="shardId-000000000002")
    processor.process(records(parent))
    processor.process(records(child))
    assert features(processor)["views_1h"] == 9
    marks = table.items[("user#u1", "user_engagement")]["hw"]["S"]
    assert marks == (
        f"shardId-000000000000={parent[-1].sequence_number}.0,"
        f"shardId-000000000002={child[-1].sequence_number}.0"
    )


def test_retries_with_other_batch_boundaries_apply_each_event_once() -> None:
    processor, _, _ = build()
    stream = stream_of(views(100), ARRIVAL_S)
    processor.process(records(stream[:60]))
    processor.process(records(stream[30:80]))  # overlaps what was applied
    processor.process(records(stream[75:]))
    assert features(processor)["views_1h"] == 100
    reference, _, _ = build()
    reference.process(records(stream))
    assert features(processor) == features(reference)
    assert features(processor, "user_affinity") == features(reference, "user_affinity")


def test_producer_duplicates_with_new_sequence_numbers_count_once() -> None:
    processor, _, _ = build()
    documents = views(10)
    stream = stream_of(documents + documents[:3], ARRIVAL_S)
    result = processor.process(records(stream[:11]))  # one duplicate inside the batch
    later = processor.process(records(stream[11:]))  # two in a later batch
    assert (result.duplicate_events, later.duplicate_events) == (1, 2)
    assert features(processor)["views_1h"] == 10


def test_a_failed_item_reports_its_lowest_sequence_number_and_everything_after() -> None:
    table = MemoryDynamoDB()
    processor, _, _ = build(table)
    stream = stream_of(views(5, "u1") + views(5, "u2") + views(5, "u1", start=5), ARRIVAL_S)

    def fail_u2(operation: str, request: dict[str, Any]) -> None:
        if operation == "UpdateItem" and request["Key"]["pk"]["S"] == "user#u2":
            raise client_error("ValidationException", operation)

    table.fault = fail_u2
    result = processor.process(records(stream))
    sequence_numbers = [record.sequence_number for record in stream]
    assert result.failed_sequence_numbers == sequence_numbers[5:]
    table.fault = None
    retry = processor.process(records(stream[5:]))  # Lambda resumes at the lowest failure
    assert retry.failed_sequence_numbers == []
    assert features(processor, key="u1")["views_1h"] == 10
    assert features(processor, key="u2")["views_1h"] == 5


def test_throttling_is_retried_with_backoff_until_it_passes() -> None:
    table = MemoryDynamoDB()
    processor, _, _ = build(table)
    processor.stage1.load_cutovers()  # the registry a first batch creates: not this test's
    throttles = {"BatchGetItem": 2, "UpdateItem": 5}

    def throttle(operation: str, request: dict[str, Any]) -> None:
        if throttles.get(operation, 0) > 0:
            throttles[operation] -= 1
            raise client_error("ProvisionedThroughputExceededException", operation)

    table.fault = throttle
    result = processor.process(records(stream_of(views(3), ARRIVAL_S)))
    assert result.failed_sequence_numbers == []
    assert result.writes.retries == 5
    assert throttles == {"BatchGetItem": 0, "UpdateItem": 0}
    assert features(processor)["views_1h"] == 3


def test_a_concurrent_writer_is_detected_and_its_state_kept() -> None:
    processor, table, _ = build()
    stream = stream_of(views(4), ARRIVAL_S)
    processor.process(records(stream[:2]))
    moved = 0

    def other_writer(operation: str, request: dict[str, Any]) -> None:
        nonlocal moved
        if operation == "UpdateItem" and moved == 0:
            moved += 1  # another writer applies events 2..3 first, under the hw we expect
            table.fault = None
            rival, _, _ = build(table)
            rival.process(records(stream[2:]))
            table.fault = other_writer

    table.fault = other_writer
    result = processor.process(records(stream))
    assert result.writes.conflicts >= 1
    assert result.failed_sequence_numbers == []
    assert features(processor)["views_1h"] == 4


def test_events_later_than_the_allowed_lateness_are_routed_not_applied() -> None:
    processor, _, sink = build()
    on_time = views(2)
    # content_trending allows 30 min, user_engagement 2 h: 1 h late is late for one group only
    late = views(1, start=10, offset_ms=-3_600_000)
    result = processor.process(records(stream_of(on_time + late, ARRIVAL_S)))
    assert result.late_events == 1
    assert features(processor)["views_24h"] == 3
    trending = features(processor, "content_trending", "c2")  # only the late event viewed c2
    assert trending["views_24h"] is None
    quarantined = [json.loads(line) for body in sink.objects.values()
                   for line in body.splitlines() if b"too_late" in line]
    assert [entry["groups"] for entry in quarantined] == [["content_trending"]]


def test_invalid_records_are_quarantined_with_their_reason_and_never_reported() -> None:
    processor, _, sink = build()
    stream = stream_of(views(2), ARRIVAL_S)
    stream.insert(1, StreamRecord(str(int(stream[0].sequence_number) + 10**6), "u1", b"{", 1.0))
    result = processor.process(records(stream))
    assert result.failed_sequence_numbers == []
    assert result.invalid_by_reason == {"bad_json": 1}
    (quarantine,) = [body for key, body in sink.objects.items() if key.startswith("quarantine/")]
    assert json.loads(quarantine)["reason"] == "bad_json"


def test_a_failed_quarantine_write_reports_the_invalid_record_for_retry() -> None:
    processor, _, sink = build()
    stream = stream_of(views(3), ARRIVAL_S)
    stream[1] = StreamRecord(stream[1].sequence_number, "u1", b"{", ARRIVAL_S)

    keep = sink.put

    def refuse_quarantine(key: str, body: bytes) -> None:
        if key.startswith("quarantine/"):
            raise OSError("S3 refused the quarantine object")
        keep(key, body)

    sink.put = refuse_quarantine  # type: ignore[method-assign]
    result = processor.process(records(stream))
    assert result.failed_sequence_numbers == [r.sequence_number for r in stream[1:]]


def test_since_kickoff_counts_viewers_from_the_minute_the_game_went_live() -> None:
    processor, _, _ = build()
    plays = [
        {
            "event_type": "video_play", "schema_version": 1, "event_id": f"p{n}",
            "event_time": format_ms(T0 + n * 30_000), "user_id": f"u{n}", "content_id": "c",
            "game_id": "g1", "watch_seconds": 10.0,
        }
        for n in range(6)
    ]
    kickoff = {
        "event_type": "score_update", "schema_version": 1, "event_id": "s1",
        "event_time": format_ms(T0 + 61_000), "game_id": "g1", "home_score": 0, "away_score": 0,
        "period": 1, "clock_seconds": 0, "status": "live",
    }
    processor.process(records(stream_of([*plays, kickoff], ARRIVAL_S + 120)))
    game = features(processor, "game_live", "g1")
    assert game["viewers_since_kickoff"] == 4  # plays at 60, 90, 120, 150 s
    assert game["status_lifetime"] == "live"
    assert game["watch_seconds_5m"] == 60.0


@pytest.mark.parametrize("status", ["scheduled", "final"])
def test_no_kickoff_means_an_empty_session(status: str) -> None:
    processor, _, _ = build()
    update = {
        "event_type": "score_update", "schema_version": 1, "event_id": "s1",
        "event_time": format_ms(T0), "game_id": "g1", "home_score": 0, "away_score": 0,
        "period": 0, "clock_seconds": 0, "status": status,
    }
    processor.process(records(stream_of([update], ARRIVAL_S)))
    assert features(processor, "game_live", "g1")["viewers_since_kickoff"] is None


def test_feature_log_lines_are_exactly_what_json_dumps_writes() -> None:
    # The processor writes its lines by hand for speed: they must stay byte-for-byte the
    # json.dumps text, whatever characters an entity key carries.
    processor, table, sink = build()
    odd = 'u"\\\n\u00e9\u2028\U0001f3c0'
    processor.process(records(stream_of(views(3, user=odd), ARRIVAL_S)))
    lines = [
        line for key, body in sink.objects.items() if key.startswith("features/")
        for line in body.decode().split("\n") if line  # not splitlines(): U+2028 is data
    ]
    assert lines
    for line in lines:
        document = json.loads(line)
        assert line == json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        tiles = document["tiles"]
        assert document["visible_ms"] == T0 + 120_000  # the processor's clock after the write
        item = table.items[(document["pk"], document["sk"])]
        assert json.loads(state_text(item)) == tiles  # a new item: every tile is new
        assert item["hw"]["S"] == f"{document['shard_id']}={document['hw']}"
    assert {json.loads(line)["entity_key"] for line in lines} >= {odd}


@pytest.mark.parametrize(
    "document",
    [
        {"a": [1, 2.5, -0.0, 1e300 * 10, -1e300 * 10, 1 / 3]},
        {"é\u2028": ["x\"\\\n", None, True, False, {"k": []}]},
        {"n": [10**30, [[1, "e", 2]], "dGVzdA=="]},
    ],
)
def test_the_cached_state_encoder_writes_what_json_dumps_writes(document: Any) -> None:
    from fastbreak.engine.processor import _encode

    assert _encode(document) == json.dumps(document, separators=(",", ":"), ensure_ascii=False)


# ---- items near their limits, TTL, clocks, the feature log's order ------------------------
def _quarantined(sink: MemorySink, reason: str) -> list[dict[str, Any]]:
    return [line for key, body in sink.objects.items() if key.startswith("quarantine/")
            for line in map(json.loads, body.decode().splitlines()) if line["reason"] == reason]


def test_an_event_that_would_take_an_item_past_the_limit_is_refused_and_the_rest_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Values far longer than the sizing estimate: here, the limit is lowered instead.
    monkeypatch.setattr(item_size, "MAX_ITEM_BYTES", 1500)
    long_sports = [dict(view, sport="s" * 200 + str(n)) for n, view in enumerate(views(8))]
    stream = stream_of(long_sports, ARRIVAL_S)
    processor, table, sink = build()
    result = processor.process(records(stream))

    assert result.failed_sequence_numbers == [] and result.items_too_large == 1
    key = ("user#u1", "user_affinity")
    state = state_text(table.items[key])
    assert len(state) <= item_size.state_limit(key, {}, SHARD)
    assert features(processor)["views_1h"] == 8  # the other groups took every event
    routed = _quarantined(sink, "item_too_large")
    assert 0 < len(routed) < 8 and all(line["groups"] == ["user_affinity"] for line in routed)
    assert "user#u1 / user_affinity" in routed[0]["message"]
    # One event per batch: the same events applied, the same ones refused.
    alone, alone_table, alone_sink = build()
    for record in stream:
        assert alone.process(records([record])).failed_sequence_numbers == []
    assert state_text(alone_table.items[key]) == state
    assert [line["sequence_number"] for line in _quarantined(alone_sink, "item_too_large")] == [
        line["sequence_number"] for line in routed
    ]


def test_an_item_that_gains_lifetime_state_loses_its_old_ttl() -> None:
    processor, table, _ = build()
    processor.process(records(stream_of(views(2), ARRIVAL_S)))
    assert "expires_at" in table.items[("user#u1", "user_engagement")]
    engagement = CATALOG.groups[0]
    forever = replace(engagement, features=(
        *engagement.features, Feature("views_total", Aggregation.COUNT, (Window.lifetime(),),
                                      events=("content_view",)),
    ))
    catalog = replace(CATALOG, groups=(forever, *CATALOG.groups[1:]))
    later = TwoStages(table, catalog=catalog, clock_ms=lambda: T0 + 120_000)
    later.process(records(stream_of(views(2, start=2), ARRIVAL_S, start=2)))
    assert "expires_at" not in table.items[("user#u1", "user_engagement")]


def test_an_event_dated_ahead_of_the_clock_prunes_no_tile_a_window_still_reads() -> None:
    processor, _, _ = build()
    hour = [dict(view, event_time=format_ms(T0 - 3_600_000 + n * 60_000))
            for n, view in enumerate(views(60))]
    processor.process(records(stream_of(hour, ARRIVAL_S)))
    before = features(processor)["views_1h"]
    # 290 s after its arrival (ARRIVAL_S is T0 + 60 s): within the 5-minute tolerance
    ahead = views(1, start=60, offset_ms=290_000)
    result = processor.process(records(stream_of(ahead, ARRIVAL_S, start=60)))
    assert result.records_valid == 1 and before == 57
    assert features(processor)["views_1h"] == before  # the new one is after the read time


def test_an_item_deleted_by_ttl_between_read_and_write_is_written_anew() -> None:
    table = MemoryDynamoDB()
    processor, _, _ = build(table)
    processor.process(records(stream_of(views(2), ARRIVAL_S)))
    key = ("user#u1", "user_affinity")

    def expire_once(operation: str, request: dict[str, Any]) -> None:
        if operation == "UpdateItem" and (
            request["Key"]["pk"]["S"], request["Key"]["sk"]["S"]
        ) == key and key in table.items:
            del table.items[key]  # TTL's sweep, between the batch's read and its write

    table.fault = expire_once
    result = processor.process(records(stream_of(views(3, start=2), ARRIVAL_S, start=2)))
    assert result.failed_sequence_numbers == [] and result.writes.conflicts == 1
    assert key in table.items


def test_feature_log_lines_of_an_item_written_from_two_shards_replay_in_write_order() -> None:
    processor, table, sink = build()
    parent = stream_of(views(5), ARRIVAL_S, start=1000, shard_id="shardId-000000000000")
    child = stream_of(views(4, start=5), ARRIVAL_S, shard_id="shardId-000000000002")
    processor.process(records(parent))
    processor.process(records(child))
    newest: dict[tuple[str, str, str], tuple[int, Any]] = {}
    for key, body in sink.objects.items():
        if key.startswith("features/"):
            for line in map(json.loads, body.decode().splitlines()):
                if line["sk"] == "user_engagement":
                    for section, tiles in line["tiles"].items():
                        for start, state in tiles.items():
                            found = newest.get((line["sk"], section, start))
                            if found is None or found[0] < line["version"]:
                                newest[(line["sk"], section, start)] = (line["version"], state)
    stored = json.loads(state_text(table.items[("user#u1", "user_engagement")]))
    assert {(s, t): v[1] for (_, s, t), v in newest.items()} == {
        (section, start): state for section, tiles in stored.items()
        for start, state in tiles.items()
    }


# ---- identity and the dedup memory ------------------------------------------------------------
def _remembered(table: MemoryDynamoDB) -> set[int]:
    """The identities stage 1 remembers (the audience stage's memory is apart)."""
    held: set[int] = set()
    for (pk, _), item in table.items.items():
        if pk.startswith(DEDUP_PREFIX) and not pk.startswith(f"{DEDUP_PREFIX}partials/"):
            held |= unpack(item["state"]["B"])
    return held


@pytest.mark.parametrize("split", [False, True], ids=["one-batch", "two-batches"])
def test_an_event_id_reused_with_another_event_time_is_another_event(split: bool) -> None:
    first, second = views(1)[0], dict(views(1)[0], event_time=format_ms(T0 + 30_000))
    stream = stream_of([first, second], ARRIVAL_S)
    processor, table, _ = build()
    results = [processor.process(records(part)) for part in
               ([stream[:1], stream[1:]] if split else [stream])]
    assert sum(result.duplicate_events for result in results) == 0
    assert features(processor)["views_1h"] == 2
    assert _remembered(table) == {identity_hash(first["event_id"], T0),
                                  identity_hash(first["event_id"], T0 + 30_000)}


@pytest.mark.parametrize("split", [False, True], ids=["one-batch", "two-batches"])
def test_copies_of_an_event_too_late_for_every_group_are_each_routed_not_remembered(
    split: bool,
) -> None:
    late = views(1, offset_ms=-3 * 3_600_000)[0]  # 3 h: later than every group allows
    stream = stream_of([late, late], ARRIVAL_S)
    processor, table, sink = build()
    results = [processor.process(records(part)) for part in
               ([stream[:1], stream[1:]] if split else [stream])]
    assert [r.duplicate_events for r in results] == [0] * len(results)
    assert sum(r.late_events for r in results) == 2
    assert len(_quarantined(sink, "too_late")) == 2 and _remembered(table) == set()


def _refuse_items_over_400_kb(operation: str, request: dict[str, Any]) -> None:
    """DynamoDB's own rule: an item over 400 KB (names and values) is refused."""
    if operation != "UpdateItem":
        return
    values = request["ExpressionAttributeValues"]
    state = values[":state"].get("B") or values[":state"]["S"].encode()
    size = len(state) + sum(len(v["S"]) for v in request["Key"].values()) + 200
    if size > 400 * 1024:
        raise client_error("ValidationException", "UpdateItem")


def test_a_frozen_clock_splits_the_dedup_memory_and_every_item_stays_under_400_kb() -> None:
    # 70,000 events with one event time: one dedup item of their hashes would be 560 KB.
    documents = [dict(view, event_time=format_ms(T0)) for view in (
        views(1, user=f"u{n % 500}", start=n)[0] for n in range(70_000)
    )]
    stream = stream_of(documents, ARRIVAL_S)
    table = MemoryDynamoDB()
    table.fault = _refuse_items_over_400_kb
    processor, _, _ = build(table)
    dedup_writes = []
    for start in range(0, len(stream), 10_000):
        result = processor.process(records(stream[start : start + 10_000]))
        assert result.failed_sequence_numbers == []
        dedup_writes.append(result.dedup_writes)
    memory = {sk: item for (pk, sk), item in table.items.items()
              if pk == f"{DEDUP_PREFIX}{SHARD}"}
    assert len(memory) == 17 and memory[f"{T0 // 1000:011d}"]["state"]["B"] == SPLIT_MARKER
    assert max(len(item["state"]["B"]) for item in memory.values()) <= LEAF_CAPACITY * 8
    # one write a batch while the bucket is one item; the split: 16 children and the marker
    assert dedup_writes == [1, 1, 1, 17, 16, 16, 16]
    copies = stream_of(documents[::70], ARRIVAL_S, start=70_000)
    again = processor.process(records(copies))
    assert again.duplicate_events == 1000 and again.writes.writes == 0
    assert features(processor, key="u0")["views_1h"] == 140


def test_a_crash_between_the_split_children_and_the_marker_loses_no_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dedup, "LEAF_CAPACITY", 4)
    documents = [dict(view, event_time=format_ms(T0)) for view in views(8)]
    stream = stream_of(documents, ARRIVAL_S)
    table = MemoryDynamoDB()
    processor, _, _ = build(table)
    processor.process(records(stream[:3]))
    root = ("_dedup#shardId-000000000000", f"{T0 // 1000:011d}")

    def die_on_the_marker(operation: str, request: dict[str, Any]) -> None:
        key = (request["Key"]["pk"]["S"], request["Key"]["sk"]["S"]) if "Key" in request else None
        if key == root and request["ExpressionAttributeValues"][":state"].get("B") == SPLIT_MARKER:
            raise client_error("InternalServerError", operation)  # retried, then given up

    table.fault = die_on_the_marker
    processor.store.retry = RetryPolicy(max_attempts=1, sleep=lambda _: None)
    failed = processor.process(records(stream[3:]))
    assert failed.failed_sequence_numbers == [r.sequence_number for r in stream[3:]]
    children = [sk for pk, sk in table.items if pk == root[0] and sk != root[1]]
    assert children and len(unpack(table.items[root]["state"]["B"])) == 3  # the root is whole
    assert processor.process(records(stream_of(documents[:3], ARRIVAL_S, start=100))
                             ).duplicate_events == 3
    table.fault = None
    assert processor.process(records(stream[3:])).failed_sequence_numbers == []
    assert table.items[root]["state"]["B"] == SPLIT_MARKER
    copies = processor.process(records(stream_of(documents, ARRIVAL_S, start=200)))
    assert copies.duplicate_events == 8 and copies.writes.writes == 0
    assert features(processor)["views_1h"] == 8
    assert _remembered(table) == {identity_hash(d["event_id"], T0) for d in documents}


def _states(table: MemoryDynamoDB) -> dict[tuple[str, str], Any]:
    return {key: json.loads(state_text(item)) for key, item in table.items.items()
            if not key[0].startswith((DEDUP_PREFIX, OUTBOX_PREFIX))}


def test_an_item_keeps_the_same_tiles_in_one_batch_or_two() -> None:
    # 100 minutes apart: the first event's one-minute tile has expired once the second is in.
    documents = [*views(1, offset_ms=-100 * 60_000), *views(1, start=1)]
    stream = stream_of(documents, ARRIVAL_S)
    whole, whole_table, _ = build()
    whole.process(records(stream))
    parts, parts_table, _ = build()
    parts.process(records(stream[:1]))
    parts.process(records(stream[1:]))
    assert _states(whole_table) == _states(parts_table)
    engagement = _states(whole_table)[("user#u1", "user_engagement")]
    assert list(engagement["60"]) == [f"{(T0 // 1000):011d}"]  # the old one was pruned


def test_a_copy_later_than_some_groups_is_a_duplicate_and_not_also_late() -> None:
    # The first copy arrives 29:50 after its event time (content_trending allows 30 min), the
    # copy two minutes later.
    first = views(1, offset_ms=-28 * 60_000 - 50_000)[0]
    processor, _, sink = build()
    processor.process(records(stream_of([first], ARRIVAL_S)))
    copy = processor.process(records(stream_of([first], ARRIVAL_S + 120, start=1)))
    assert (copy.duplicate_events, copy.late_events) == (1, 0)
    assert _quarantined(sink, "too_late") == []
